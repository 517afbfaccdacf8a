"""Outgoing messages: the bot's own rate limits with interactive first, and the bulk outbox worker."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
from telegram import InlineKeyboardMarkup
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import BaseRateLimiter, ExtBot

from bot.account import drop_messages
from bot.storage import OutboxRow, Storage, digests, outbox
from bot.storage import projects as project_store
from bot.supervise import WorkerHealth

if TYPE_CHECKING:
    from bot.account import Accounts
    from bot.projects import Projects

log = logging.getLogger(__name__)

LIMITED_ENDPOINTS = frozenset({"sendMessage", "editMessageText", "sendPhoto", "sendDocument"})
ALERT_MAX_AGE_SECONDS = 3600.0
GROUP_PER_MINUTE = 20  # Telegram allows about 20 messages a minute per group (SPEC 13)
QUEUE_GAUGE_SECONDS = 1.0  # how often the worker counts the queued rows for /metrics


class Withdrawn(Exception):
    """The outbox row stopped being queued while it waited for a send slot."""


class Postponed(Exception):
    """The worker is stopping: a row that has not started sending stays queued."""


@dataclass(frozen=True)
class Bulk:
    """rate_limit_args of a bulk send: wait behind interactive work; call `on_slot` right before the HTTP call."""

    on_slot: Callable[[], Awaitable[None]] | None = field(default=None, compare=False)


def retry_after_seconds(err: RetryAfter) -> float:
    """RetryAfter.retry_after in seconds, whether PTB gives an int or a timedelta."""
    value = err.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def certainly_not_delivered(err: BaseException) -> bool:
    """True when Telegram certainly did not get the message: refused connection, DNS, 429, 5xx."""
    if isinstance(err, RetryAfter):
        return True
    if isinstance(err, (BadRequest, Forbidden)):
        return False
    cause = err.__cause__
    if isinstance(cause, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return True
    if isinstance(err, TimedOut):
        return False  # the request may have been written: outcome unknown
    if isinstance(err, NetworkError) and (cause is None or isinstance(cause, TelegramError)):
        # Telegram (or a proxy in front of it) answered with an error status: 5xx, 429 without
        # retry_after. PTB chains a TelegramError when that answer's body is not JSON, e.g. the
        # HTML page of a 502 from a load balancer.
        return True
    return False


class DeliveryLimiter(BaseRateLimiter[Bulk]):
    """25 messages/s overall, 1/s per chat and 20/min per group, shared by interactive and bulk; interactive goes first.

    PTB's AIORateLimiter has no per-private-chat limit and no priorities, so this small one
    plugs into the same hook (`ApplicationBuilder.rate_limiter`).
    """

    def __init__(
        self,
        overall_per_second: float = 25.0,
        per_chat_interval: float = 1.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        max_retries: int = 3,
        group_per_minute: int = GROUP_PER_MINUTE,
    ) -> None:
        self._group_per_minute = group_per_minute
        self._group_sends: dict[Any, deque[float]] = {}  # group chat_id -> its sends in the last minute
        self._spacing = 1.0 / overall_per_second
        self._per_chat = per_chat_interval
        self._monotonic = monotonic
        self._max_retries = max_retries
        self._next_slot = 0.0
        # chat_id -> when its next message may go, oldest update first: a chat whose second is
        # over is dropped from the front, so the map holds the chats of about the last second,
        # not every chat ever messaged.
        self._chat_next: OrderedDict[Any, float] = OrderedDict()
        self._paused_until = 0.0
        self._interactive_waiting: dict[Any, int] = {}  # chat_id -> interactive sends waiting for it
        self._cond = asyncio.Condition()
        self.retry_after_received = 0

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    def pause(self, seconds: float) -> None:
        """Hold every limited send for `seconds` (Telegram's retry_after)."""
        self._paused_until = max(self._paused_until, self._monotonic() + seconds)

    async def acquire(self, chat_id: Any, bulk: bool) -> None:
        """Wait for a slot for one message to chat_id; bulk yields only to interactive work that is ready."""
        async with self._cond:
            if not bulk:
                self._interactive_waiting[chat_id] = self._interactive_waiting.get(chat_id, 0) + 1
            try:
                while True:
                    now = self._monotonic()
                    wait = max(
                        self._next_slot - now,
                        self._chat_next.get(chat_id, 0.0) - now,
                        self._paused_until - now,
                        self._group_wait(chat_id, now),
                    )
                    if wait <= 0 and bulk and self._interactive_ready(now):
                        # An interactive send could take this slot: let it (it notifies when it has).
                        wait = self._spacing
                    elif wait <= 0:
                        # Keep to the 40 ms grid: a waiter woken a little late (event-loop
                        # latency) must not push every later slot back, or the rate drifts
                        # below 25/s. After a pause longer than one slot, start a fresh grid.
                        if now - self._next_slot > self._spacing:
                            self._next_slot = now
                        self._next_slot += self._spacing
                        self._hold_chat(chat_id, now + self._per_chat)
                        if _is_group(chat_id):
                            self._group_sends.setdefault(chat_id, deque()).append(now)
                        return
                    try:
                        await asyncio.wait_for(self._cond.wait(), timeout=wait)
                    except TimeoutError:
                        pass
            finally:
                if not bulk:
                    self._interactive_waiting[chat_id] -= 1
                    if not self._interactive_waiting[chat_id]:
                        del self._interactive_waiting[chat_id]
                self._cond.notify_all()

    def _group_wait(self, chat_id: Any, now: float) -> float:
        """Seconds until a group may get another message: 20 in any minute."""
        sends = self._group_sends.get(chat_id)
        if not sends:
            return 0.0
        while sends and now - sends[0] >= 60.0:
            sends.popleft()
        if not sends:
            del self._group_sends[chat_id]
            return 0.0
        return sends[0] + 60.0 - now if len(sends) >= self._group_per_minute else 0.0

    def _interactive_ready(self, now: float) -> bool:
        """Whether an interactive send waits whose chat's second is over (a pause holds everyone alike).

        One that only waits for its own chat's slot must not hold bulk messages to other chats.
        """
        return any(self._chat_next.get(c, 0.0) <= now for c in self._interactive_waiting)

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: Bulk | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Pace limited endpoints; follow a 429's retry_after exactly, then try again."""
        chat_id = data.get("chat_id")
        if endpoint not in LIMITED_ENDPOINTS or chat_id is None:
            return await callback(*args, **kwargs)
        bulk = isinstance(rate_limit_args, Bulk)
        attempt = 0
        while True:
            await self.acquire(chat_id, bulk)
            if isinstance(rate_limit_args, Bulk) and rate_limit_args.on_slot is not None and attempt == 0:
                await rate_limit_args.on_slot()
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as err:
                self.retry_after_received += 1
                seconds = retry_after_seconds(err)
                self.pause(seconds)
                log.warning("Telegram asked to wait %.1f s (429); holding every send", seconds)
                attempt += 1
                if attempt > self._max_retries:
                    raise
            finally:
                self._chat_answered(chat_id)

    def _chat_answered(self, chat_id: Any) -> None:
        # The per-chat second is also counted from the answer: counted from the start of the call
        # only, a request delayed in transit lands less than 1 s before the next one (429).
        self._hold_chat(chat_id, max(self._chat_next.get(chat_id, 0.0), self._monotonic() + self._per_chat))

    def _hold_chat(self, chat_id: Any, until: float) -> None:
        """The chat's next message waits until `until`; chats whose wait is over are forgotten."""
        self._chat_next[chat_id] = until
        self._chat_next.move_to_end(chat_id)
        now = self._monotonic()
        while self._chat_next:
            oldest, free_at = next(iter(self._chat_next.items()))
            if free_at > now:
                break  # updated in time order, each to its time plus the same interval: the rest are later
            del self._chat_next[oldest]

    @property
    def tracked_chats(self) -> int:
        """Chats whose one-second slot is still running (the limiter keeps no others)."""
        return len(self._chat_next)


def _is_group(chat_id: Any) -> bool:
    """Group and supergroup chat ids are negative (private chats are the user's positive id)."""
    return isinstance(chat_id, int) and chat_id < 0


class OutboxWorker:
    """Sends queued bulk messages: queued -> sending (committed just before the call) -> sent/failed.

    Supervised: an error in its loop (disk full, SQLITE_BUSY past the busy timeout, an I/O error) is
    logged, counted in bot_worker_errors{worker="outbox"} and retried with backoff; it never ends the
    worker, and `health` tells /healthz when the failures persist.
    """

    def __init__(
        self,
        storage: Storage,
        bot: ExtBot,
        clock: Any,
        metrics: Any,
        accounts: Accounts,
        *,
        projects: Projects | None = None,
        concurrency: int = 40,
        idle_wait: float = 1.0,
        health: WorkerHealth | None = None,
    ) -> None:
        self._storage = storage
        self._bot = bot
        self._clock = clock
        self._metrics = metrics
        self._accounts = accounts
        self._projects = projects
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._idle_wait = idle_wait
        self._health = health or WorkerHealth("outbox", metrics.worker_errors)
        self._wake = asyncio.Event()
        self._in_flight: set[int] = set()
        self._sending: set[int] = set()  # rows this process has marked 'sending'
        self._busy_chats: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._started = False
        self._loop_exited = asyncio.Event()
        self._sends_failing = False
        self._hold_until = 0.0  # time.monotonic() before which no new rows are taken (a send failed)
        self._counted_at = float("-inf")  # time.monotonic() of the last count for the queue gauge

    @property
    def health(self) -> WorkerHealth:
        """The worker's health record (errors, backoff, failing since)."""
        return self._health

    def wake(self) -> None:
        """New rows were queued: look now rather than after the idle wait."""
        self._wake.set()

    async def recover(self) -> int:
        """At start: rows left in `sending` are outcome unknown and are not resent."""
        async with self._storage.transaction() as db:
            rows = await outbox.fail_sending(db, self._clock.timestamp())
            for row_id, _, kind in rows:
                if kind == "digest":
                    await digests.set_outcome(db, row_id, "failed")
                elif kind == "project_digest":
                    await project_store.set_log_outcome(db, row_id, "failed")
        for row_id, telegram_user_id, kind in rows:
            log.warning(
                "outbox message %d (%s) to telegram_user_id=%s was in flight at a crash: outcome unknown, not resent",
                row_id, kind, telegram_user_id,
            )
        return len(rows)

    async def finish(self, row_id: int, status: str, error: str | None) -> None:
        """A row's final outcome; a digest's log row follows its message (only a sent one is a baseline)."""
        async with self._storage.transaction() as db:
            kind = await outbox.finish(db, row_id, status, self._clock.timestamp(), error)
            if kind == "digest":
                await digests.set_outcome(db, row_id, status)
            elif kind == "project_digest":
                await project_store.set_log_outcome(db, row_id, status)

    async def run(self) -> None:
        """Loop until stop(): pick due rows, send them concurrently, one at a time per chat."""
        self._started = True
        try:
            await self._loop()
        finally:
            self._loop_exited.set()

    async def _loop(self) -> None:
        while not self._stopping:
            held = self._hold_until - time.monotonic()
            if held > 0:
                await self._rest(held)
                continue
            try:
                started = await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the top of the worker: disk full, SQLITE_BUSY, an I/O error
                await self._rest(self._health.failed(err))
                continue
            if not self._sends_failing:
                self._health.succeeded()
            if started == 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self._idle_wait)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)

    async def _round(self) -> int:
        """Drop stale alerts, start the due rows that fit; returns how many sends were started."""
        now = self._clock.timestamp()
        async with self._storage.transaction() as db:
            dropped = len(await outbox.drop_stale(db, "alert", now - ALERT_MAX_AGE_SECONDS, now))
        if dropped:
            log.info("dropped %d queued alerts older than 60 minutes", dropped)
            self._metrics.messages.labels("dropped").inc(dropped)
        free = self._concurrency - len(self._in_flight)
        rows = []
        if free > 0:
            rows = await outbox.due(self._storage.db, now, limit=free * 4, exclude=self._in_flight)
            rows = await self._drop_not_allowed(rows, now)
        started = 0
        for row in rows:
            if started >= free or self._stopping:
                break
            if row.chat_id in self._busy_chats or row.id in self._in_flight:
                continue
            self._in_flight.add(row.id)
            self._busy_chats.add(row.chat_id)
            task = asyncio.create_task(self._send(row))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        if time.monotonic() - self._counted_at >= QUEUE_GAUGE_SECONDS:
            # Counting walks every queued row (30,000 in a fan-out), and rounds come several a second.
            self._counted_at = time.monotonic()
            self._metrics.queue_length.set(await outbox.queued_count(self._storage.db))
        return started

    async def _drop_not_allowed(self, rows: list[OutboxRow], now: float) -> list[OutboxRow]:
        """A user taken off ALLOWED_TELEGRAM_USER_IDS is messaged no more, also by rows queued before."""
        refused = [r for r in rows if r.telegram_user_id is not None and not self._accounts.may_message(r.telegram_user_id)]
        if not refused:
            return rows
        async with self._storage.transaction() as db:
            await drop_messages(db, [(r.id, r.kind) for r in refused], now, "not allowed")
        log.info("dropped %d queued messages to users no longer on the allow-list", len(refused))
        self._metrics.messages.labels("dropped").inc(len(refused))
        return [r for r in rows if r not in refused]

    async def _rest(self, seconds: float) -> None:
        """Wait out a backoff; stop() ends the wait early."""
        try:
            await asyncio.wait_for(self._stop_requested.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def stop(self, timeout: float) -> None:
        """Take no new rows; let in-flight sends finish within `timeout`. Never raises."""
        self._stopping = True
        self._stop_requested.set()
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._started:
            try:
                await asyncio.wait_for(self._loop_exited.wait(), timeout=timeout)
            except TimeoutError:
                log.warning("the outbox loop did not stop within %.1f s", timeout)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - loop.time()))
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d sends still in flight at shutdown: outcome unknown", len(pending))

    async def drain(self, timeout: float = 10.0) -> None:
        """Send every due row now (tests and the benchmark)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self._clock.timestamp()
            if not await outbox.due(self._storage.db, now, limit=1, exclude=set()) and not self._in_flight:
                return
            await asyncio.sleep(0.01)

    async def _send(self, row: OutboxRow) -> None:
        try:
            async with self._slots:
                await self._deliver(row)
            self._sends_failing = False
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the top of one send: the database failed around the call, or a bug
            delay = self._health.failed(err)
            if row.id not in self._sending and isinstance(err, sqlite3.Error):
                # Never marked sending, so it certainly did not reach Telegram; the database is
                # what failed (busy, disk full), which passes: keep the row, and take no new
                # rows until the backoff is over (the loop's own reads may still work).
                self._sends_failing = True
                self._hold_until = time.monotonic() + delay
                log.warning("outbox message %d stays queued: the database failed before the send", row.id)
            else:
                await self._fail_internal(row)  # a bug would repeat: fail the row rather than retry it
        finally:
            self._in_flight.discard(row.id)
            self._sending.discard(row.id)
            self._busy_chats.discard(row.chat_id)
            self._wake.set()

    async def _fail_internal(self, row: OutboxRow) -> None:
        """Record a row that failed for a reason of ours; it is not resent."""
        try:
            await self.finish(row.id, "failed", "internal error")
        except Exception:  # the database is failing too: the row stays 'sending', failed at the next start
            log.error("outbox message %d: could not record its failure", row.id, exc_info=True)

    async def _deliver(self, row: OutboxRow) -> None:
        async def mark_sending() -> None:
            if self._stopping:
                raise Postponed(row.id)  # shutting down: the row stays queued for the next start
            async with self._storage.transaction() as db:
                if not await outbox.mark_sending(db, row.id):
                    raise Withdrawn(row.id)
            self._sending.add(row.id)

        markup = InlineKeyboardMarkup.de_json(json.loads(row.reply_markup), self._bot) if row.reply_markup else None
        try:
            await self._bot.send_message(
                chat_id=row.chat_id, text=row.text, reply_markup=markup, message_thread_id=row.message_thread_id,
                rate_limit_args=Bulk(mark_sending),
            )
        except Withdrawn:
            log.info("outbox message %d was withdrawn while it waited for a slot; not sent", row.id)
        except Postponed:
            log.info("outbox message %d stays queued: shutting down", row.id)
        except ChatMigrated as err:
            # Telegram refused it (400 with migrate_to_chat_id): it certainly did not arrive, so it
            # goes again to the supergroup, with the binding, its log and the other queued rows.
            new_chat_id = int(err.new_chat_id)
            if self._projects is not None:
                await self._projects.migrate(row.chat_id, new_chat_id)
            async with self._storage.transaction() as db:
                await outbox.move_row(db, row.id, new_chat_id)
            self._metrics.messages.labels("retried").inc()
            log.info("outbox message %d: chat_id=%d became chat_id=%d; sent again there", row.id, row.chat_id, new_chat_id)
        except Forbidden as err:
            await self.finish(row.id, "failed", "forbidden")
            self._metrics.messages.labels("failed").inc()
            if row.telegram_user_id is None and self._projects is not None:
                await self._projects.chat_membership(row.chat_id, False)
            if row.telegram_user_id is not None:
                log.info("telegram_user_id=%d cannot be messaged (%s): marked inactive", row.telegram_user_id, type(err).__name__)
                await self._accounts.set_blocked(row.telegram_user_id, True)
        except (RetryAfter, NetworkError) as err:
            now = self._clock.timestamp()
            if certainly_not_delivered(err) and row.attempts < 5:
                delay = retry_after_seconds(err) if isinstance(err, RetryAfter) else min(2 ** row.attempts * 5, 300)
                async with self._storage.transaction() as db:
                    await outbox.requeue(db, row.id, now + delay)
                self._metrics.messages.labels("retried").inc()
                log.warning("outbox message %d not delivered (%s); retry in %.0f s", row.id, type(err).__name__, delay)
            else:
                if isinstance(err, BadRequest):
                    reason = "rejected"  # Telegram answered 400: it did not take the message
                else:
                    reason = "outcome unknown" if not certainly_not_delivered(err) else "gave up"
                await self.finish(row.id, "failed", f"{type(err).__name__}: {reason}")
                self._metrics.messages.labels("failed").inc()
                log.warning("outbox message %d failed (%s, %s); not resent", row.id, type(err).__name__, reason)
        else:
            await self.finish(row.id, "sent", None)
            self._metrics.messages.labels("sent").inc()
            if row.caused_at is not None:  # an alert a Bitrix24 event set off (SPEC 14)
                self._metrics.event_latency.observe(max(0.0, self._clock.timestamp() - row.caused_at))
