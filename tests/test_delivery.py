"""Delivery: the outbox worker and the limiter against the fake Bot API, with real SQLite.

Assertions look at what crossed the wire (the fake's recorded calls) and at the outbox rows.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from bot.account import Accounts
from bot.delivery import QUEUE_GAUGE_SECONDS, DeliveryLimiter, OutboxWorker
from bot.metrics import Metrics
from bot.storage import OutgoingMessage, Storage, outbox
from bot.supervise import Backoff, WorkerHealth
from tests import db as tdb
from tests.fakes.clock import FakeClock
from tests.fakes.telegram import FAKE_TOKEN, FakeTelegram
from tests.harness import make_settings

KEYBOARD = {"inline_keyboard": [[{"text": "Snooze 1 h", "callback_data": "snooze:1h:overdue"}]]}


class Interfering(httpx.AsyncBaseTransport):
    """Wraps the fake's transport; `before` / `after` hooks may raise transport errors on sendMessage."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        # each hook: (request) -> None, raising to simulate a failure; consumed one per sendMessage
        self.before: list[Callable[[httpx.Request], Any]] = []
        self.after: list[Callable[[httpx.Request], Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        is_send = request.url.path.endswith("/sendMessage")
        if is_send and self.before:
            result = self.before.pop(0)(request)
            if asyncio.iscoroutine(result):
                await result
        response = await self.inner.handle_async_request(request)
        if is_send and self.after:
            self.after.pop(0)(request)
        return response


def refuse(request: httpx.Request) -> None:
    """Connection refused: nothing reached Telegram."""
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def read_timeout(request: httpx.Request) -> None:
    """The request was written and answered, but the answer never came back in time."""
    raise httpx.ReadTimeout("timed out", request=request)


class Rig:
    """Storage on a real file, a real ExtBot with the DeliveryLimiter, the worker, the fake Telegram."""

    def __init__(self, tmp_path: Path, fake: FakeTelegram, clock: FakeClock, limiter: DeliveryLimiter) -> None:
        self.path = tmp_path / "bot.sqlite3"
        self.fake = fake
        self.clock = clock
        self.limiter = limiter
        self.transport = Interfering(fake.transport())
        self.storage: Storage
        self.bot: ExtBot
        self.worker: OutboxWorker
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.storage = await Storage.open(self.path)
        self.bot = ExtBot(
            FAKE_TOKEN,
            base_url="http://telegram.fake/bot",
            request=HTTPXRequest(connection_pool_size=64, httpx_kwargs={"transport": self.transport}),
            rate_limiter=self.limiter,
        )
        await self.bot.initialize()
        self.accounts = Accounts(make_settings(self.path.parent), self.storage, self.clock, lambda: None)
        self.metrics = Metrics()
        self.worker = OutboxWorker(self.storage, self.bot, self.clock, self.metrics, self.accounts, idle_wait=0.02)

    async def close(self) -> None:
        await self.stop()
        await self.bot.shutdown()
        await self.storage.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self.worker.run())

    async def stop(self, timeout: float = 5.0) -> None:
        if self._task is not None:
            await self.worker.stop(timeout)
            await asyncio.wait_for(self._task, 5)
            self._task = None

    async def user(self, telegram_user_id: int) -> None:
        await tdb.seen(self.storage, telegram_user_id, self.clock.timestamp())

    async def queue(self, *messages: tuple[int, str] | OutgoingMessage) -> list[int]:
        """Queue messages in one transaction (as the state change that causes them would); their row ids."""
        outgoing = [
            m if isinstance(m, OutgoingMessage) else OutgoingMessage(m[0], m[0], "digest", m[1]) for m in messages
        ]
        for uid in {m.telegram_user_id for m in outgoing}:
            if await tdb.user(self.storage, uid) is None:
                await self.user(uid)
        before = {r["id"] for r in await tdb.outbox_rows(self.storage)}
        async with self.storage.transaction() as db:
            await outbox.enqueue(db, outgoing, self.clock.timestamp())
        self.worker.wake()
        return [r["id"] for r in await tdb.outbox_rows(self.storage) if r["id"] not in before]

    async def rows(self) -> dict[int, dict[str, Any]]:
        return {r["id"]: r for r in await tdb.outbox_rows(self.storage)}

    async def drain(self) -> None:
        self.worker.wake()
        await asyncio.sleep(0.05)
        await self.worker.drain(timeout=10)


@asynccontextmanager
async def rig(
    tmp_path: Path, fake: FakeTelegram | None = None, limiter: DeliveryLimiter | None = None
) -> AsyncIterator[Rig]:
    r = Rig(tmp_path, fake or FakeTelegram(), FakeClock(), limiter or DeliveryLimiter())
    await r.open()
    try:
        yield r
    finally:
        await r.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


# ---- the happy path ----------------------------------------------------------------------------


async def test_a_queued_message_is_sent_once_with_its_text_and_keyboard_and_ends_sent(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        message = OutgoingMessage(7, 7, "alert", "<b>Overdue: 5</b>", reply_markup=json.dumps(KEYBOARD))
        (row_id,) = await r.queue(message)
        r.start()
        await r.drain()

        sent = r.fake.sent()
        assert len(sent) == 1
        assert sent[0]["chat_id"] == 7
        assert sent[0]["text"] == "<b>Overdue: 5</b>"
        assert sent[0]["reply_markup"] == KEYBOARD
        row = (await r.rows())[row_id]
        assert (row["status"], row["attempts"], row["error"]) == ("sent", 1, None)
        assert row["finished_at"] == r.clock.timestamp()


# ---- retried only when it certainly did not arrive ------------------------------------------------


async def test_a_429_holds_every_send_for_retry_after_and_the_message_arrives_exactly_once(tmp_path: Path) -> None:
    fake = FakeTelegram()
    fake.script("sendMessage", (429, "Too Many Requests: retry after 1", 1))
    async with rig(tmp_path, fake) as r:
        first, second = await r.queue((1, "to one"), (2, "to two"))
        r.start()
        await r.drain()

        calls = [c for c in fake.calls if c.method == "sendMessage"]
        assert calls[0].params["chat_id"] == 1  # the refused one
        assert sorted(c.params["chat_id"] for c in calls[1:]) == [1, 2]
        refused_at = calls[0].at
        # Every send after the 429, to any chat, waited retry_after (1 s).
        assert all(c.at - refused_at >= 0.95 for c in calls[1:])
        assert r.limiter.retry_after_received == 1
        rows = await r.rows()
        assert (rows[first]["status"], rows[first]["attempts"]) == ("sent", 1)
        assert rows[second]["status"] == "sent"
        assert fake.attempts(1) == ["to one", "to one"]  # refused once, accepted once
        assert fake.texts(2) == ["to two"]


async def _requeued_then_sent_once(r: Rig, row_id: int, chat_id: int) -> None:
    r.start()
    await r.drain()
    row = (await r.rows())[row_id]
    assert row["status"] == "queued"
    assert row["not_before"] > r.clock.timestamp()
    assert row["attempts"] == 1
    attempts_on_wire = len(r.fake.attempts(chat_id))

    r.clock.advance(minutes=1)
    await r.drain()
    row = (await r.rows())[row_id]
    assert (row["status"], row["attempts"]) == ("sent", 2)
    assert len(r.fake.attempts(chat_id)) == attempts_on_wire + 1


async def test_a_502_requeues_the_row_for_later_and_it_is_then_sent_once(tmp_path: Path) -> None:
    fake = FakeTelegram()
    fake.script("sendMessage", (502, "Bad Gateway"))
    async with rig(tmp_path, fake) as r:
        (row_id,) = await r.queue((3, "digest"))
        await _requeued_then_sent_once(r, row_id, 3)
        assert fake.attempts(3) == ["digest", "digest"]


async def test_a_502_with_an_html_body_from_a_proxy_is_also_retried(tmp_path: Path) -> None:
    fake = FakeTelegram()
    fake.script(
        "sendMessage",
        lambda params: httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>", headers={"content-type": "text/html"}),
    )
    async with rig(tmp_path, fake) as r:
        (row_id,) = await r.queue((3, "digest"))
        await _requeued_then_sent_once(r, row_id, 3)
        assert fake.attempts(3) == ["digest", "digest"]


async def test_a_refused_connection_requeues_the_row_and_it_is_then_sent_once(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.transport.before.append(refuse)
        (row_id,) = await r.queue((4, "digest"))
        await _requeued_then_sent_once(r, row_id, 4)
        assert r.fake.texts(4) == ["digest"]  # the refused attempt never reached the fake


async def test_a_read_timeout_after_the_request_was_written_fails_the_row_and_it_is_not_resent(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        r.transport.after.append(read_timeout)
        (row_id,) = await r.queue((5, "digest"))
        r.start()
        await r.drain()
        row = (await r.rows())[row_id]
        assert row["status"] == "failed"
        assert "outcome unknown" in row["error"]

        r.clock.advance(hours=1)
        await r.drain()
        assert r.fake.texts(5) == ["digest"]  # it did arrive, once; never resent
        assert (await r.rows())[row_id]["status"] == "failed"


async def test_a_message_telegram_rejects_with_400_fails_as_rejected_and_is_not_resent(tmp_path: Path) -> None:
    fake = FakeTelegram()
    fake.script("sendMessage", (400, "Bad Request: can't parse entities"))
    async with rig(tmp_path, fake) as r:
        (row_id,) = await r.queue((6, "<b>broken"))
        r.start()
        await r.drain()
        r.clock.advance(hours=1)
        await r.drain()
        row = (await r.rows())[row_id]
        assert (row["status"], row["error"]) == ("failed", "BadRequest: rejected")
        assert fake.attempts(6) == ["<b>broken"]


# ---- blocked users ---------------------------------------------------------------------------------


async def test_a_user_who_blocked_the_bot_is_marked_inactive_and_their_other_rows_are_dropped(tmp_path: Path) -> None:
    fake = FakeTelegram()
    fake.blocked_chats.add(8)
    async with rig(tmp_path, fake) as r:
        ids = await r.queue((8, "alert one"), (8, "alert two"), (8, "digest"), (9, "other user"))
        r.start()
        await r.drain()

        rows = await r.rows()
        assert (rows[ids[0]]["status"], rows[ids[0]]["error"]) == ("failed", "forbidden")
        assert [rows[i]["status"] for i in ids[1:3]] == ["dropped", "dropped"]
        assert rows[ids[3]]["status"] == "sent"
        assert (await tdb.user(r.storage, 8)).blocked
        assert fake.attempts(8) == ["alert one"] and fake.texts(8) == []

        # The user unblocks the bot and writes again: active, and new messages go out; dropped ones never.
        fake.blocked_chats.clear()
        assert await r.accounts.seen(8, 8, "en") is True
        assert not (await tdb.user(r.storage, 8)).blocked
        (new,) = await r.queue((8, "fresh digest"))
        await r.drain()
        assert fake.attempts(8) == ["alert one", "fresh digest"] and fake.texts(8) == ["fresh digest"]
        rows = await r.rows()
        assert rows[new]["status"] == "sent"
        assert [rows[i]["status"] for i in ids[1:3]] == ["dropped", "dropped"]


# ---- crash and restart -----------------------------------------------------------------------------


async def test_after_a_crash_rows_left_sending_are_failed_and_never_sent_and_queued_rows_go_out(
    tmp_path: Path,
) -> None:
    fake = FakeTelegram()
    clock = FakeClock()
    hang = asyncio.Event()

    async def hold_chat_10(request: httpx.Request) -> None:
        if b"chat_id=10" in request.content:
            await hang.wait()  # the request is in flight when the process dies

    crashed = Rig(tmp_path, fake, clock, DeliveryLimiter())
    crashed.clock = clock
    await crashed.open()
    crashed.transport.before.append(hold_chat_10)
    in_flight, waiting = await crashed.queue((10, "in flight"), (10, "waiting"))
    crashed.start()
    await wait_until(lambda: crashed.worker._in_flight == {in_flight})
    await asyncio.sleep(0.1)
    assert (await crashed.rows())[in_flight]["status"] == "sending"
    await crashed.stop(timeout=0.01)  # the crash: the send is cancelled mid-flight
    await crashed.close()

    restarted = Rig(tmp_path, fake, clock, DeliveryLimiter())
    await restarted.open()
    try:
        assert await restarted.worker.recover() == 1
        restarted.start()
        await restarted.drain()
        rows = await restarted.rows()
        assert rows[in_flight]["status"] == "failed"
        assert rows[in_flight]["error"] == "outcome unknown after restart"
        assert rows[waiting]["status"] == "sent"
        assert fake.texts(10) == ["waiting"]
    finally:
        await restarted.close()


async def test_queued_rows_are_sent_after_a_restart_on_the_same_database(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        ids = await r.queue((11, "a"), (12, "b"))
    async with rig(tmp_path) as r:
        assert await r.worker.recover() == 0
        r.start()
        await r.drain()
        rows = await r.rows()
        assert [rows[i]["status"] for i in ids] == ["sent", "sent"]
        assert r.fake.texts() == ["a", "b"]


# ---- database errors -------------------------------------------------------------------------------


def failing(calls: list[int], times: int, real: Callable[..., Any]) -> Callable[..., Any]:
    """A stand-in for a Storage method: SQLITE_BUSY for the first `times` calls, then the real one."""

    async def method(*args: Any, **kwargs: Any) -> Any:
        """Fail the first calls, then pass them on."""
        calls.append(1)
        if len(calls) <= times:
            raise sqlite3.OperationalError("database is locked")
        return await real(*args, **kwargs)

    return method


def quick_worker(r: Rig, metrics: Metrics) -> OutboxWorker:
    """The rig's worker with a backoff of milliseconds, so a test sees several rounds of it."""
    health = WorkerHealth("outbox", metrics.worker_errors, backoff=Backoff(first=0.01, cap=0.04))
    return OutboxWorker(r.storage, r.bot, r.clock, metrics, r.accounts, idle_wait=0.02, health=health)


async def test_the_worker_outlives_database_errors_in_its_loop_and_then_sends_the_message_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with rig(tmp_path) as r:
        metrics = Metrics()
        r.worker = quick_worker(r, metrics)
        (row_id,) = await r.queue((20, "digest"))
        calls: list[int] = []
        monkeypatch.setattr(outbox, "due", failing(calls, 4, outbox.due))
        r.start()
        await wait_until(lambda: bool(r.fake.sent(20)))
        await asyncio.sleep(0.2)  # more rounds: nothing is sent again

        assert len(calls) > 5  # it went on after the four failures
        assert r.fake.attempts(20) == ["digest"]
        row = (await r.rows())[row_id]
        assert (row["status"], row["attempts"]) == ("sent", 1)
        assert metrics.registry.get_sample_value("bot_worker_errors_total", {"worker": "outbox"}) == 4
        assert r.worker.health.failing_since is None  # recovered
        await r.stop()  # returns quietly: nothing to re-raise


async def test_a_database_error_before_the_send_keeps_the_row_queued_and_it_is_sent_once_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with rig(tmp_path, limiter=DeliveryLimiter(per_chat_interval=0.0)) as r:
        metrics = Metrics()
        r.worker = quick_worker(r, metrics)
        (row_id,) = await r.queue((21, "digest"))
        calls: list[int] = []
        monkeypatch.setattr(outbox, "mark_sending", failing(calls, 2, outbox.mark_sending))
        r.start()
        await wait_until(lambda: bool(r.fake.sent(21)))
        await asyncio.sleep(0.2)

        assert len(calls) == 3  # failed twice before the call went out, then marked and sent
        assert r.fake.attempts(21) == ["digest"]
        row = (await r.rows())[row_id]
        assert (row["status"], row["attempts"], row["error"]) == ("sent", 1, None)
        assert metrics.registry.get_sample_value("bot_worker_errors_total", {"worker": "outbox"}) == 2


# ---- stale alerts ----------------------------------------------------------------------------------


async def test_queued_alerts_older_than_60_minutes_are_dropped_but_digests_and_fresh_alerts_are_sent(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        (stale,) = await r.queue(OutgoingMessage(13, 13, "alert", "stale alert"))
        (digest,) = await r.queue(OutgoingMessage(13, 13, "digest", "old digest"))
        r.clock.advance(minutes=2)
        (recent,) = await r.queue(OutgoingMessage(14, 14, "alert", "recent alert"))
        r.clock.advance(minutes=59)  # stale is 61 min old, recent 59
        r.start()
        await r.drain()
        rows = await r.rows()
        assert (rows[stale]["status"], rows[stale]["error"]) == ("dropped", "stale")
        assert rows[digest]["status"] == "sent"
        assert rows[recent]["status"] == "sent"
        assert r.fake.texts() == ["old digest", "recent alert"]


# ---- limits and priority ---------------------------------------------------------------------------


async def test_an_interactive_answer_waits_behind_at_most_one_bulk_message(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await r.queue(*[(100 + i, f"digest {i}") for i in range(40)])
        r.start()
        await wait_until(lambda: len(r.fake.sent()) >= 5)

        for answer in range(3):
            queued_ahead = len(r.fake.sent())
            # Each answer goes to its own chat, so it is ready at once: one to a chat that answered
            # 0.1 s ago waits for that chat's second, and bulk to other chats rightly goes meanwhile.
            await r.bot.send_message(chat_id=97 + answer, text=f"answer {answer}")
            texts = r.fake.texts()
            position = texts.index(f"answer {answer}")
            assert position - queued_ahead <= 1, texts[queued_ahead : position + 1]
            await asyncio.sleep(0.1)  # let a few bulk messages go between the answers

        assert len([t for t in r.fake.texts() if t.startswith("digest")]) < 40  # bulk was still busy
        await r.drain()
        assert sorted(r.fake.texts()) == sorted([f"answer {a}" for a in range(3)] + [f"digest {i}" for i in range(40)])


async def test_a_bulk_message_to_an_idle_chat_does_not_wait_while_interactive_ones_keep_their_chats_second(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        r.start()
        answers = [asyncio.create_task(r.bot.send_message(chat_id=1, text=f"answer {n}")) for n in range(8)]
        await wait_until(lambda: len(r.fake.sent(1)) == 1)  # the other 7 now wait for chat 1's next second
        queued_at = time.monotonic()
        (row_id,) = await r.queue((2, "digest"))
        await wait_until(lambda: bool(r.fake.sent(2)), timeout=3.0)
        bulk_at = next(c.at for c in r.fake.calls if c.method == "sendMessage" and c.params["chat_id"] == 2)
        assert bulk_at - queued_at < 0.2  # not behind the 7 answers that are only pacing their own chat
        await asyncio.gather(*answers)

        at = [c.at for c in r.fake.calls if c.method == "sendMessage" and c.params["chat_id"] == 1]
        assert sorted(r.fake.texts(1)) == [f"answer {n}" for n in range(8)]
        assert min(b - a for a, b in zip(at, at[1:], strict=False)) >= 0.97  # chat 1 still gets one a second
        assert r.fake.texts(2) == ["digest"]
        assert (await r.rows())[row_id]["status"] == "sent"


async def test_sends_respect_25_per_second_overall_and_1_per_second_per_chat(tmp_path: Path) -> None:
    fake = FakeTelegram(enforce_limits=True)
    async with rig(tmp_path, fake) as r:
        await r.queue(*[(200 + chat, f"message {n} to {chat}") for n in range(3) for chat in range(20)])
        started = time.monotonic()
        r.start()
        await r.drain()
        elapsed = time.monotonic() - started

        calls = [c for c in fake.calls if c.method == "sendMessage"]
        assert len(calls) == 60
        assert fake.too_many_requests == 0
        times = sorted(c.at for c in calls)
        # Any 26 consecutive sends span at least a second (25/s), allowing a little arrival jitter.
        assert min(b - a for a, b in zip(times, times[25:], strict=False)) >= 0.97
        for chat in range(200, 220):
            at = [c.at for c in calls if c.params["chat_id"] == chat]
            assert len(at) == 3
            assert min(b - a for a, b in zip(at, at[1:], strict=False)) >= 0.97
        assert elapsed < 4.0  # ~2.4 s at 25/s: the limits do not slow it down further


async def test_the_limiter_keeps_only_the_chats_whose_second_is_still_running(tmp_path: Path) -> None:
    offset = [0.0]
    # A long per-chat interval, so that no chat's slot ends while the test runs; then time jumps past it.
    limiter = DeliveryLimiter(overall_per_second=1000.0, per_chat_interval=60.0, monotonic=lambda: time.monotonic() + offset[0])
    async with rig(tmp_path, limiter=limiter) as r:
        await r.queue(*[(300 + n, f"digest {n}") for n in range(200)])
        r.start()
        await r.drain()
        assert len(r.fake.sent()) == 200 and limiter.tracked_chats == 200
        offset[0] += 61.0
        await r.bot.send_message(chat_id=97, text="answer")
        assert r.fake.texts(97) == ["answer"]
        assert limiter.tracked_chats == 1  # 30,000 chats messaged once a day are not kept all day


async def test_the_queue_gauge_counts_the_outbox_at_most_once_a_second_while_rounds_go_many_times(tmp_path: Path) -> None:
    statements: list[str] = []
    async with rig(tmp_path) as r:
        await r.storage.db.set_trace_callback(statements.append)
        later = r.clock.timestamp() + 3600
        await r.queue(
            *[(400 + n, f"digest {n}") for n in range(30)],
            *[OutgoingMessage(500 + n, 500 + n, "digest", "later", not_before=later) for n in range(5)],
        )
        started = time.monotonic()
        r.start()
        await r.drain()
        await wait_until(lambda: "bot_outbox_queued 5.0" in r.metrics.render().decode(), timeout=3)
        elapsed = time.monotonic() - started
        await r.storage.db.set_trace_callback(None)
    rounds = [s for s in statements if s.startswith("SELECT id FROM outbox WHERE status = 'queued' AND kind")]
    counts = [s for s in statements if s.startswith("SELECT COUNT(*) FROM outbox WHERE status = 'queued'")]
    assert len(r.fake.sent()) == 30
    assert len(rounds) >= 10 and 1 <= len(counts) <= elapsed / QUEUE_GAUGE_SECONDS + 1, (len(rounds), len(counts), elapsed)


async def test_messages_to_the_same_chat_keep_their_order(tmp_path: Path) -> None:
    limiter = DeliveryLimiter(per_chat_interval=0.05)  # order, not pacing, is under test here
    async with rig(tmp_path, limiter=limiter) as r:
        await r.queue(*[(chat, f"{chat}:{n}") for n in range(6) for chat in (300, 301, 302)])
        r.start()
        await r.drain()
        for chat in (300, 301, 302):
            assert r.fake.texts(chat) == [f"{chat}:{n}" for n in range(6)]


async def test_a_retried_message_still_arrives_before_the_later_ones_to_the_same_chat(tmp_path: Path) -> None:
    fake = FakeTelegram()
    fake.script("sendMessage", (502, "Bad Gateway"))
    limiter = DeliveryLimiter(per_chat_interval=0.05)
    async with rig(tmp_path, fake, limiter) as r:
        await r.queue(*[(303, f"303:{n}") for n in range(3)])
        r.start()
        await r.drain()
        r.clock.advance(minutes=1)
        await r.drain()
        assert fake.attempts(303) == ["303:0", "303:0", "303:1", "303:2"]  # the first attempt got the 502
