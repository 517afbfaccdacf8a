"""Overlap: what else runs between a decision's read and its write, made to happen, through the real stack.

Each test holds a Bitrix24 answer (FakeBitrix's `Scripted.held()`) while a user acts, or delivers
several updates in one getUpdates answer so that PTB handles them concurrently, and then looks at
what crossed the wire and what landed in SQLite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.bitrix import COUNTERS_IN_FLIGHT
from tests import db as tdb
from tests.fakes.bitrix import Scripted
from tests.fakes.clock import FakeClock
from tests.harness import Harness
from tests.test_linking import ANNA, code_sent_to, link
from tests.test_scheduled import alerts, digests, linked, portal

BORIS = 548
MONDAY_0900 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def during_read(h: Harness, work: Awaitable[Any], action: Callable[[], Awaitable[Any]]) -> Any:
    """Run `work` until its Bitrix24 batch request is in flight, do `action`, then let the answer go."""
    held = Scripted.held().only_for(lambda method, params: method == "batch")
    h.b24.push(held)
    task = asyncio.ensure_future(work)
    assert held.arrived is not None and held.gate is not None
    assert await asyncio.to_thread(held.arrived.wait, 10), "the read never started"
    try:
        await action()
    finally:
        held.gate.set()
    return await task


# ---- item 1: the poll cycle ------------------------------------------------------------------


async def test_a_snooze_pressed_while_the_poll_reads_is_kept_and_the_grown_counter_stays_quiet(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        h.b24.set_counters(ANNA, "view_all", expired=1, new_comments=0)
        await h.poll()  # baseline
        h.b24.set_counters(ANNA, "view_all", expired=2, new_comments=0)
        await h.poll()
        assert len(alerts(h)) == 1
        h.b24.set_counters(ANNA, "view_all", expired=3, new_comments=0)
        await during_read(
            h, h.services.coordinator.poll_cycle(), lambda: h.send(h.tg.callback(42, "z:expired:h", 1))
        )
        await h.flush()
        assert len(alerts(h)) == 1, "the snoozed counter alerted again"
        state = (await tdb.states(h.storage, 42))["expired"]
        assert state.snooze_until is not None and state.peak == 3


async def test_unlink_while_the_poll_reads_sends_no_alert_and_leaves_no_state(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        await h.poll()  # baseline at 0
        h.b24.set_counters(ANNA, "view_all", expired=4, new_comments=0)
        await during_read(h, h.services.coordinator.poll_cycle(), lambda: h.say(42, "/unlink"))
        await h.flush()
        assert alerts(h) == []
        assert h.tg.texts(42)[-1].startswith("Unlinked")
        assert await tdb.states(h.storage, 42) == {}
        assert await tdb.rows(h.storage, "SELECT * FROM counter_snapshots") == []


async def test_forget_while_the_poll_reads_loses_nothing_for_the_others(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        h.b24.add_user(BORIS, "Boris", "Ivanov")
        h.b24.set_counters(BORIS, "view_all", expired=0, new_comments=0)
        await linked(h)
        await link(h, 43, str(BORIS))
        await h.say(43, "/digest off")
        await h.poll()
        h.b24.set_counters(ANNA, "view_all", expired=2, new_comments=0)
        h.b24.set_counters(BORIS, "view_all", expired=2, new_comments=0)
        result = await during_read(h, h.services.coordinator.poll_cycle(), lambda: h.say(42, "/forget"))
        await h.flush()
        assert result.cause is None and result.skipped == 1
        assert len(alerts(h, 43)) == 1 and alerts(h, 42) == []
        assert await tdb.user(h.storage, 42) is None
        assert "expired" in await tdb.states(h.storage, 43)


async def test_a_threshold_changed_while_the_poll_reads_only_sets_the_baseline(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        h.b24.set_counters(ANNA, "view_all", expired=6, new_comments=0)
        await during_read(h, h.services.coordinator.poll_cycle(), lambda: h.say(42, "/alerts overdue 5"))
        await h.flush()
        assert alerts(h) == [], "a threshold change must only set the state on the next poll"
        await h.poll()
        assert alerts(h) == []
        h.b24.set_counters(ANNA, "view_all", expired=7, new_comments=0)
        await h.poll()
        assert len(alerts(h)) == 1


async def test_a_link_moved_while_the_poll_reads_gives_neither_holder_an_alert_about_it(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        h.b24.set_counters(ANNA, "view_all", expired=3, new_comments=0)

        async def move() -> None:
            await link(h, 77)

        await during_read(h, h.services.coordinator.poll_cycle(), move)
        await h.flush()
        assert alerts(h, 42) == [] and alerts(h, 77) == []
        assert (await tdb.user(h.storage, 77)).bitrix_user_id == ANNA
        assert await tdb.states(h.storage, 42) == {}


# ---- item 2: the digest tick ---------------------------------------------------------------


def digest_portal(tmp_path: Path) -> Harness:
    h = portal(tmp_path, FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC)))
    h.b24.set_counters(ANNA, "view_all", expired=2, new_comments=1)
    return h


async def test_digest_off_while_the_digest_reads_queues_nothing(tmp_path: Path) -> None:
    async with digest_portal(tmp_path) as h:
        await link(h, 42)
        h.clock.set(MONDAY_0900)
        queued = await during_read(h, h.services.coordinator.digest_tick(), lambda: h.say(42, "/digest off"))
        await h.flush()
        assert queued == 0 and digests(h) == []
        assert await tdb.digest_log(h.storage, 42) == []


async def test_unlink_while_the_digest_reads_queues_nothing(tmp_path: Path) -> None:
    async with digest_portal(tmp_path) as h:
        await link(h, 42)
        h.clock.set(MONDAY_0900)
        queued = await during_read(h, h.services.coordinator.digest_tick(), lambda: h.say(42, "/unlink"))
        await h.flush()
        assert queued == 0 and digests(h) == []
        assert [r for r in await tdb.outbox_rows(h.storage) if r["kind"] == "digest"] == []


async def test_forget_while_the_digest_reads_keeps_the_rest_of_the_batch(tmp_path: Path) -> None:
    async with digest_portal(tmp_path) as h:
        h.b24.add_user(BORIS, "Boris", "Ivanov")
        h.b24.set_counters(BORIS, "view_all", expired=1, new_comments=0)
        await link(h, 42)
        await link(h, 43, str(BORIS))
        h.clock.set(MONDAY_0900)
        queued = await during_read(h, h.services.coordinator.digest_tick(), lambda: h.say(42, "/forget"))
        await h.flush()
        assert queued == 1 and len(digests(h, 43)) == 1 and digests(h, 42) == []
        assert [r["status"] for r in await tdb.digest_log(h.storage, 43)] == ["sent"]


# ---- items 3-5: updates handled concurrently -------------------------------------------------


async def test_twelve_guesses_at_once_kill_the_code_after_five_and_never_link(tmp_path: Path) -> None:
    h = portal(tmp_path)
    async with h:
        await h.say(42, f"/link {ANNA}")
    async with h, h.polling():
        right = code_sent_to(h, ANNA)
        wrong = [f"{(int(right) + n) % 1_000_000:06d}" for n in range(1, 12)]
        answers = await h.together(*[h.tg.message(42, f"/verify {c}") for c in [*wrong, right]], answers=12, chat_id=42)
        assert (await tdb.user(h.storage, 42)).bitrix_user_id is None
        assert sum("Tries left" in a for a in answers) == 4 and sum("no tries are left" in a for a in answers) == 1
        assert await tdb.rows(h.storage, "SELECT * FROM link_codes") == []


async def test_twelve_link_requests_at_once_send_three_codes_and_count_ten_lookups(tmp_path: Path) -> None:
    h = portal(tmp_path)
    async with h, h.polling():
        await h.together(*[h.tg.message(42, f"/link {ANNA}") for _ in range(12)], answers=12, chat_id=42)
        assert len([1 for uid, _ in h.b24.notifications if uid == ANNA]) == 3
        (row,) = await tdb.rows(h.storage, "SELECT COUNT(*) FROM limit_events WHERE kind = 'lookup'")
        assert row[0] == 10
        assert h.b24.request_count("user.get") == 10


async def test_two_settings_changes_at_once_both_hold(tmp_path: Path) -> None:
    h = portal(tmp_path)
    async with h:
        await linked(h)
        async with h.polling():
            await h.together(
                h.tg.message(42, "/alerts comments 5"), h.tg.message(42, "/quiet 22:00-07:00"),
                h.tg.callback(42, "s:empty_on", 5), answers=2, chat_id=42,
            )
            await asyncio.sleep(0.2)  # the button's edit
        s = await tdb.settings(h.storage, 42)
        assert s.thresholds == {"expired": 1, "new_comments": 5}
        assert (s.quiet_start, s.quiet_end) is not None and s.quiet_start.strftime("%H:%M") == "22:00"
        assert s.digest_empty is True


async def test_eight_counters_at_once_make_one_bitrix24_read(tmp_path: Path) -> None:
    h = portal(tmp_path)
    async with h:
        await linked(h)
        h.clock.advance(seconds=11)  # past the window of the read that linking showed
        before = h.b24.request_count("batch")
        h.b24.push(Scripted(delay=0.5).only_for(lambda method, params: method == "batch"))
        async with h.polling():
            answers = await h.together(*[h.tg.message(42, "/counters") for _ in range(8)], answers=8, chat_id=42)
        assert h.b24.request_count("batch") - before == 1
        assert all("Overdue" in a for a in answers), answers


# ---- item 8: a Bitrix24 that hangs ---------------------------------------------------------------


async def test_counters_answers_within_its_deadline_while_bitrix24_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.reader.INTERACTIVE_DEADLINE", 0.5)  # 15 s in the bot; the wiring is what is tested
    async with portal(tmp_path) as h:
        await linked(h)
        h.clock.advance(seconds=11)
        h.b24.push(Scripted(delay=3.0).only_for(lambda method, params: method == "batch"))
        started = time.monotonic()
        (answer,) = await h.say(42, "/counters")
        assert time.monotonic() - started < 2.0
        assert "Bitrix24 is not answering right now" in answer and "Overdue" not in answer, answer


async def test_a_poll_against_a_hanging_bitrix24_fails_fast_after_one_round_of_requests(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        for n in range(200):  # four batches of 50
            h.b24.add_user(5000 + n, f"U{n}", "Test")
            await tdb.link(h.storage, 1000 + n, 5000 + n, f"U{n}", await tdb.settings_or_default(h.storage), 0.0)
        h.b24.push(Scripted.read_timeout(), times=50)
        before = len(h.b24.requests)
        result = await h.services.coordinator.poll_cycle()
        batches = {tuple(sorted(r.params["cmd"])) for r in h.b24.requests[before:] if r.method == "batch"}
        assert result.cause == "transient" and result.failed == 200
        # The batches already in flight finish their retries; the fourth is never sent.
        assert len(batches) <= COUNTERS_IN_FLIGHT < 4
