"""Bitrix24 events end to end (SPEC 14): the fake portal posts real form-encoded events to the bot's port."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from tests import db as tdb
from tests.fakes.bitrix import Scripted
from tests.fakes.bitrix_events import EventPoster
from tests.fakes.clock import FakeClock
from tests.harness import EVENTS_TOKEN, Harness
from tests.test_linking import ANNA
from tests.test_scheduled import MONDAY_0600, alerts, linked, portal

BORIS = 548
LONG_AGO = MONDAY_0600 - timedelta(days=2)


def events_portal(tmp_path: Path, **settings: str) -> Harness:
    h = portal(tmp_path, FakeClock(MONDAY_0600), BITRIX24_EVENTS_TOKEN=EVENTS_TOKEN, **settings)
    h.b24.add_user(BORIS, "Boris", "Ivanov")
    h.b24.derive_counters = True  # `expired` follows the fake's tasks
    return h


async def on_task(h: Harness, bitrix: EventPoster, task_id: int, event: str = "ONTASKADD", **task: object) -> None:
    """The portal gives Anna an overdue task (or changes it as `task` says), posts `event` about it; the work runs."""
    h.b24.add_task(task_id, "Report", **{"deadline": LONG_AGO, "responsible": ANNA, **task})  # type: ignore[arg-type]
    await bitrix.post(event, task_id)
    await h.events_done()


async def members(h: Harness) -> list[tuple[int, int]]:
    return [tuple(r) for r in await tdb.rows(h.storage, "SELECT task_id, bitrix_user_id FROM task_members ORDER BY 1, 2")]


async def test_a_task_reassigned_to_a_linked_user_alerts_once_through_the_event(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        h.b24.add_task(7, "Report", deadline=LONG_AGO, responsible=BORIS)
        await h.poll()  # baseline: nothing overdue for Anna
        before = h.b24.request_count()
        async with h.events() as bitrix:
            h.b24.add_task(7, "Report", deadline=LONG_AGO, responsible=ANNA, created_by=BORIS)
            answer = await bitrix.post("ONTASKUPDATE", 7)
            assert answer.status_code == 200
            await h.events_done()
        sent = alerts(h)
        assert len(sent) == 1 and "<b>1</b>" in sent[0]["text"]
        assert h.b24.request_count() - before == 2  # the task's members, then Anna's counters
        assert await members(h) == [(7, ANNA)]  # Boris is not linked: not kept
        assert h.services.metrics.event_latency._sum.get() >= 0  # noqa: SLF001


def counter_reads_of(h: Harness, bitrix_user_id: int, since: int) -> int:
    """How many counters reads (batch commands) asked for this user since request number `since`."""
    found = 0
    for recorded in h.b24.requests[since:]:
        if recorded.method == "batch" and f"userId={bitrix_user_id}&" in str(recorded.params):
            found += 1
    return found


async def test_a_member_removed_from_a_cached_task_is_still_refreshed(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        async with h.events() as bitrix:
            await on_task(h, bitrix, 7, created_by=BORIS)
            assert len(alerts(h)) == 1 and await members(h) == [(7, ANNA)]
            h.clock.advance(minutes=1)
            # Anna is taken off the task: the portal's answer no longer names her.
            since = len(h.b24.requests)
            await on_task(h, bitrix, 7, "ONTASKUPDATE", responsible=BORIS)
        assert counter_reads_of(h, ANNA, since) == 1, "the removed member was not read again"
        state = (await tdb.states(h.storage, 42))["expired"]
        assert state.alerted is False and state.peak == 0  # re-armed, silently
        assert len(alerts(h)) == 1
        assert await members(h) == [(7, 0)]  # known, with no linked member now


async def test_a_deleted_task_refreshes_its_cached_members_without_reading_it(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        async with h.events() as bitrix:
            await on_task(h, bitrix, 7)
            h.clock.advance(minutes=1)
            h.b24.delete_task(7)
            since = len(h.b24.requests)
            await bitrix.post("ONTASKDELETE", 7)
            await h.events_done()
        methods = [r.method for r in h.b24.requests[since:]]
        assert counter_reads_of(h, ANNA, since) == 1 and len(methods) == 1, methods  # no task read: it is gone
        assert await members(h) == []
        assert (await tdb.states(h.storage, 42))["expired"].alerted is False


async def test_a_comment_refreshes_the_tasks_members_and_a_second_comment_uses_the_cache(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        await h.say(42, "/alerts comments 1")
        h.b24.add_task(7, "Report", deadline=MONDAY_0600 + timedelta(days=3), responsible=BORIS, auditors={ANNA})
        await h.poll()
        async with h.events() as bitrix:
            h.b24.set_counters(ANNA, "view_all", expired=0, new_comments=1)
            since = len(h.b24.requests)
            await bitrix.post("ONTASKCOMMENTADD", 7)
            await h.events_done()
            assert [r.method for r in h.b24.requests[since:]] == ["batch", "batch"]  # the task's members, Anna
            assert len(alerts(h)) == 1 and "<b>1</b>" in alerts(h)[0]["text"]
            h.clock.advance(minutes=1)
            h.b24.set_counters(ANNA, "view_all", expired=0, new_comments=2)
            since = len(h.b24.requests)
            await bitrix.post("ONTASKCOMMENTADD", 7, comment_id=502)
            await h.events_done()
        assert counter_reads_of(h, ANNA, since) == 1
        assert len(h.b24.requests) - since == 1, "the second comment read the task again instead of the cache"
        assert len(alerts(h)) == 1  # calm: a growing counter alerts again only after POLL_INTERVAL_SECONDS


async def test_ten_comments_in_ten_seconds_give_one_alert_and_the_next_poll_the_value_then(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        await h.say(42, "/alerts comments 1")
        h.b24.add_task(7, "Report", deadline=MONDAY_0600 + timedelta(days=3), responsible=ANNA, created_by=BORIS)
        await h.poll()
        async with h.events() as bitrix:
            for n in range(1, 11):
                h.b24.set_counters(ANNA, "view_all", expired=0, new_comments=n)
                assert (await bitrix.post("ONTASKCOMMENTADD", 7, comment_id=500 + n)).status_code == 200
                h.clock.advance(seconds=1)
            await h.events_done()
            assert len(alerts(h)) == 1
            h.clock.advance(seconds=300)
            await h.poll()
        sent = alerts(h)
        assert len(sent) == 2 and "<b>10</b>" in sent[1]["text"]


def is_counters_batch(method: str, params: dict) -> bool:
    return method == "batch" and "tasks.task.counters.get" in str(params)


@pytest.mark.parametrize("held_first", ["poll", "event"])
async def test_an_event_refresh_and_a_poll_of_the_same_user_at_once_give_one_alert(tmp_path: Path, held_first: str) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        h.b24.add_task(7, "Report", deadline=LONG_AGO, responsible=BORIS)
        await h.poll()
        h.clock.advance(minutes=5)
        async with h.events() as bitrix:
            h.b24.add_task(7, "Report", deadline=LONG_AGO, responsible=ANNA)
            held = Scripted.held().only_for(is_counters_batch)
            h.b24.push(held)
            assert held.arrived is not None and held.gate is not None
            earlier = h.clock.timestamp()
            if held_first == "poll":
                first = asyncio.ensure_future(h.services.coordinator.poll_cycle())
            else:
                first = asyncio.ensure_future(bitrix.post("ONTASKUPDATE", 7))
            assert await asyncio.to_thread(held.arrived.wait, 10), "the first read never started"
            # The first read is in flight; the other one runs meanwhile.
            if held_first == "poll":
                # Event work waits for a running poll cycle (it never delays one): nothing is read for the
                # event until the poll is through, and then the poll's read already decided.
                requests = len(h.b24.requests)
                await bitrix.post("ONTASKUPDATE", 7)
                await asyncio.sleep(0.2)
                assert len(h.b24.requests) == requests and h.services.events is not None and h.services.events.pending == 1
            else:
                h.clock.advance(seconds=1)
                await h.services.coordinator.poll_cycle()
            held.gate.set()
            await first
            await h.events_done()
        assert len(alerts(h)) == 1
        assert (await tdb.states(h.storage, 42))["expired"].peak == 1
        # The read that began later decided; the held one, answered last, was not applied over it.
        (read_at,) = [r[0] for r in await tdb.rows(h.storage, "SELECT read_at FROM counter_snapshots WHERE telegram_user_id = 42")]
        assert read_at >= earlier + (1 if held_first == "poll" else 2)  # the event's read after the poll; the poll after the event's


def counter_read_times(h: Harness, bitrix_user_id: int) -> list[float]:
    """The fake clock at each counters read of this user."""
    return [r.time for r in h.b24.requests if r.method == "batch" and f"userId={bitrix_user_id}&" in str(r.params)]


async def test_unchanged_counters_are_read_once_more_after_20_s_for_the_portals_late_recount(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        h.b24.derive_counters = False
        h.b24.add_task(7, "Report", deadline=LONG_AGO, responsible=ANNA)
        await h.poll()
        before = len(counter_read_times(h, ANNA))
        gate = asyncio.Event()

        async with h.events() as bitrix:
            work = h.services.events
            assert work is not None

            async def sleep(seconds: float) -> None:
                if seconds >= 10:  # the re-read: wait until the test let the portal recount
                    await gate.wait()
                await h._advance(seconds)  # noqa: SLF001

            work.sleep = sleep
            await bitrix.post("ONTASKUPDATE", 7)
            for _ in range(500):
                if work.due == 1 and not work.pending:
                    break
                await asyncio.sleep(0.01)
            assert alerts(h) == [] and work.due == 1  # read once, unchanged: the re-read is waiting
            h.b24.set_counters(ANNA, "view_all", expired=1, new_comments=0)  # Bitrix24 has recounted
            gate.set()
            await h.events_done()
        assert len(alerts(h)) == 1
        reads = counter_read_times(h, ANNA)[before:]
        assert len(reads) == 2 and reads[1] - reads[0] >= 20  # the event's read, the re-read


async def test_a_user_refreshed_less_than_30_s_ago_is_read_again_only_after_30_s(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        before = len(counter_read_times(h, ANNA))
        async with h.events() as bitrix:
            await on_task(h, bitrix, 7)
            h.clock.advance(seconds=5)
            await on_task(h, bitrix, 8)
        reads = counter_read_times(h, ANNA)[before:]
        assert len(reads) == 2 and reads[1] - reads[0] >= 30
        assert len(alerts(h)) == 1  # 1, then 2 within the poll interval: calm


async def test_an_event_refresh_right_after_linking_only_sets_the_state_as_a_poll_would(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        h.b24.add_task(7, "Report", deadline=LONG_AGO, responsible=ANNA)
        await linked(h)  # no poll yet
        async with h.events() as bitrix:
            await bitrix.post("ONTASKUPDATE", 7)
            await h.events_done()
        assert alerts(h) == []
        state = (await tdb.states(h.storage, 42))["expired"]
        assert state.baseline_needed is False and state.alerted and state.peak == 1


async def test_unlink_and_forget_take_the_users_task_member_rows(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        async with h.events() as bitrix:
            await on_task(h, bitrix, 7)
        assert await members(h) == [(7, ANNA)]
        await h.say(42, "/unlink")
        assert await members(h) == []


async def test_a_valid_event_is_answered_before_any_of_its_work_is_done(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        held = Scripted.held().only_for(lambda method, params: method == "batch")
        h.b24.push(held)
        assert held.arrived is not None and held.gate is not None
        async with h.events() as bitrix:
            h.b24.add_task(7, "Report", deadline=LONG_AGO, responsible=ANNA)
            answer = await bitrix.post("ONTASKUPDATE", 7)
            assert answer.status_code == 200 and answer.text == "ok"
            assert await asyncio.to_thread(held.arrived.wait, 10)  # the work started after the answer
            assert alerts(h) == []
            held.gate.set()
            await h.events_done()
        assert len(alerts(h)) == 1


async def test_housekeeping_drops_task_member_rows_no_event_named_for_30_days(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        async with h.events() as bitrix:
            await on_task(h, bitrix, 7)
            h.clock.advance(days=29)
            await on_task(h, bitrix, 8)
        h.clock.advance(days=2)
        removed = await h.services.coordinator.housekeeping()
        assert removed["task_members"] == 1 and await members(h) == [(8, ANNA)]


async def test_unlink_while_an_event_refresh_reads_sends_no_alert_and_keeps_nothing(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        held = Scripted.held().only_for(is_counters_batch)
        h.b24.push(held)
        assert held.arrived is not None and held.gate is not None
        async with h.events() as bitrix:
            h.b24.add_task(7, "Report", deadline=LONG_AGO, responsible=ANNA)
            await bitrix.post("ONTASKUPDATE", 7)
            assert await asyncio.to_thread(held.arrived.wait, 10), "the event refresh never read"
            assert any("unlinked" in text.lower() for text in await h.say(42, "/unlink"))
            held.gate.set()
            await h.events_done()
        assert alerts(h) == []
        assert await tdb.states(h.storage, 42) == {}
        assert await members(h) == []  # Anna's rows went with her link


async def test_unlink_while_the_events_task_read_is_in_flight_caches_and_refreshes_nobody(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        held = Scripted.held().only_for(lambda method, params: method == "batch" and "tasks.task.list" in str(params))
        h.b24.push(held)
        assert held.arrived is not None and held.gate is not None
        async with h.events() as bitrix:
            h.b24.add_task(7, "Report", deadline=LONG_AGO, responsible=ANNA)
            await bitrix.post("ONTASKUPDATE", 7)
            assert await asyncio.to_thread(held.arrived.wait, 10), "the task read never started"
            await h.say(42, "/unlink")
            since = len(h.b24.requests)
            held.gate.set()
            await h.events_done()
        assert await members(h) == [(7, 0)]  # the task is known; Anna, unlinked during its read, is not kept
        assert counter_reads_of(h, ANNA, since) == 0 and alerts(h) == []


async def test_a_snooze_pressed_while_an_event_refresh_reads_is_kept(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        h.b24.derive_counters = False  # the counters as set here; task 7 only names Anna as its member
        h.b24.add_task(7, "Report", deadline=LONG_AGO, responsible=ANNA)
        h.b24.set_counters(ANNA, "view_all", expired=1, new_comments=0)
        await h.poll()  # baseline
        h.clock.advance(minutes=5)
        h.b24.set_counters(ANNA, "view_all", expired=2, new_comments=0)
        await h.poll()
        assert len(alerts(h)) == 1
        h.clock.advance(minutes=6)
        held = Scripted.held().only_for(is_counters_batch)
        h.b24.push(held)
        assert held.arrived is not None and held.gate is not None
        async with h.events() as bitrix:
            h.b24.set_counters(ANNA, "view_all", expired=3, new_comments=0)
            await bitrix.post("ONTASKUPDATE", 7)
            assert await asyncio.to_thread(held.arrived.wait, 10), "the event refresh never read"
            await h.send(h.tg.callback(42, "z:expired:h", 1))
            held.gate.set()
            await h.events_done()
        assert len(alerts(h)) == 1, "the snoozed counter alerted again"
        state = (await tdb.states(h.storage, 42))["expired"]
        assert state.snooze_until is not None and state.peak == 3
