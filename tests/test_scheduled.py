"""Polling, alerts, digests, admin notices and blocked users, end to end through both fakes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests import db as tdb
from tests.fakes.bitrix import Scripted
from tests.fakes.clock import FakeClock
from tests.harness import Harness
from tests.test_linking import ANNA, link

MONDAY_0600 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def fail_requests(h: Harness, status: int, code: str, description: str, times: int = 50) -> None:
    """The portal answers the next requests with this error envelope (until cleared)."""
    h.b24.push(*[Scripted.error(status, code, description)] * times)


def portal(tmp_path: Path, clock: FakeClock | None = None, **settings: str) -> Harness:
    h = Harness(tmp_path, clock=clock or FakeClock(MONDAY_0600), **settings)
    h.b24.add_user(ANNA, "Anna", "Smith")
    h.b24.set_counters(ANNA, "view_all", expired=0, new_comments=0)
    for role in ("view_role_responsible", "view_role_accomplice", "view_role_auditor", "view_role_originator"):
        h.b24.set_counters(ANNA, role, expired=0, new_comments=0)
    return h


def alerts(h: Harness, chat_id: int = 42) -> list[dict]:
    return [p for p in h.tg.sent(chat_id) if p["text"].startswith("⚠️")]


async def linked(h: Harness) -> None:
    await link(h, 42)
    await h.say(42, "/digest off")


async def test_crossing_then_silence_then_growth_then_rearm(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        # (value, alerts sent): cross, silence, growth, silence, re-arm, cross again
        script = [(2, 1), (2, 0), (3, 1), (3, 0), (0, 0), (1, 1)]
        await h.poll()  # baseline after linking: value 0
        for step, (value, expected) in enumerate(script, start=1):
            h.b24.set_counters(ANNA, "view_all", expired=value, new_comments=0)
            h.clock.advance(minutes=5)
            before = len(alerts(h))
            await h.poll()
            assert len(alerts(h)) - before == expected, (step, value)
        texts = [a["text"] for a in alerts(h)]
        assert len(texts) == 3 and "<b>2</b>" in texts[0] and "<b>3</b>" in texts[1] and "<b>1</b>" in texts[2]
        buttons = alerts(h)[0]["reply_markup"]["inline_keyboard"][0]
        assert [b["callback_data"] for b in buttons] == ["z:expired:h", "z:expired:t"]


async def test_first_poll_after_linking_only_sets_the_state(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        h.b24.set_counters(ANNA, "view_all", expired=7, new_comments=0)
        await linked(h)
        await h.poll()
        assert alerts(h) == []
        h.b24.set_counters(ANNA, "view_all", expired=8, new_comments=0)
        await h.poll()
        assert len(alerts(h)) == 1


async def test_restart_sends_no_duplicate_alert(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_0600)
    async with portal(tmp_path, clock) as h:
        await linked(h)
        await h.poll()
        h.b24.set_counters(ANNA, "view_all", expired=4, new_comments=0)
        await h.services.coordinator.poll_cycle()  # queued, not yet sent: then the bot stops
    again = portal(tmp_path, clock)
    again.b24.set_counters(ANNA, "view_all", expired=4, new_comments=0)
    async with again as h:
        await h.poll()  # the queued alert goes out once; the same value alerts nobody
        await h.poll()
        assert len(alerts(h)) == 1


async def test_failed_poll_changes_nothing_and_alerts_nobody(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        states = await tdb.states(h.storage, 42)
        h.b24.set_counters(ANNA, "view_all", expired=9, new_comments=0)
        fail_requests(h, 503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        result = await h.poll()
        assert result.cause == "rate_limited" and alerts(h) == []
        assert await tdb.states(h.storage, 42) == states


async def test_user_whose_counters_read_empty_keeps_their_state(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        states = await tdb.states(h.storage, 42)
        del h.b24.counters[(ANNA, "view_all")]  # result: []
        result = await h.poll()
        assert result.no_access == 1 and result.cause == "no_access"
        assert await tdb.states(h.storage, 42) == states and alerts(h) == []


async def test_quiet_hours_hold_alerts_and_sum_up_at_the_end(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 21, 0, tzinfo=UTC))
    async with portal(tmp_path, clock) as h:
        await linked(h)
        await h.say(42, "/quiet 22:00-07:00")
        await h.say(42, "/alerts comments 5")
        await h.poll()
        h.clock.set(datetime(2026, 3, 2, 23, 0, tzinfo=UTC))
        h.b24.set_counters(ANNA, "view_all", expired=2, new_comments=6)
        await h.poll()
        assert alerts(h) == []
        h.clock.set(datetime(2026, 3, 3, 3, 0, tzinfo=UTC))
        h.b24.set_counters(ANNA, "view_all", expired=3, new_comments=1)
        await h.poll()
        h.clock.set(datetime(2026, 3, 3, 7, 1, tzinfo=UTC))
        await h.poll()
        summaries = [t for t in h.tg.texts(42) if "During quiet hours" in t]
        assert len(summaries) == 1 and "Overdue: <b>3</b>" in summaries[0] and "New comments" not in summaries[0]
        await h.poll()
        assert len([t for t in h.tg.texts(42) if "During quiet hours" in t]) == 1 and alerts(h) == []


async def test_snoozed_counter_is_dropped_until_the_snooze_ends(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        await h.send(h.tg.callback(42, "z:expired:h", 1))
        h.b24.set_counters(ANNA, "view_all", expired=5, new_comments=0)
        await h.poll()
        assert alerts(h) == []
        h.clock.advance(minutes=61)
        h.b24.set_counters(ANNA, "view_all", expired=6, new_comments=0)
        await h.poll()
        assert len(alerts(h)) == 1


async def test_pause_holds_alerts_and_resume_sets_a_new_baseline(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        await h.say(42, "/pause 3")
        h.b24.set_counters(ANNA, "view_all", expired=5, new_comments=0)
        await h.poll()
        await h.say(42, "/resume")
        await h.poll()
        assert alerts(h) == []
        h.b24.set_counters(ANNA, "view_all", expired=6, new_comments=0)
        await h.poll()
        assert len(alerts(h)) == 1


# ---- digests -----------------------------------------------------------------------------------


def digests(h: Harness, chat_id: int = 42) -> list[str]:
    return [t for t in h.tg.texts(chat_id) if t.startswith("<b>Good morning")]


async def test_digest_at_local_time_once_per_date_across_restarts(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 5, 0, tzinfo=UTC))
    async with portal(tmp_path, clock) as h:
        await link(h, 42)
        await h.say(42, "/timezone Europe/Moscow")  # 09:00 MSK = 06:00 UTC
        h.b24.set_counters(ANNA, "view_all", expired=2, new_comments=1)
        h.clock.set(datetime(2026, 3, 2, 5, 59, 30, tzinfo=UTC))
        assert await h.services.coordinator.digest_tick() == 0  # 30 s early: one batch needs less
        h.clock.set(datetime(2026, 3, 2, 6, 0, tzinfo=UTC))
        h.b24.requests.clear()
        assert await h.services.coordinator.digest_tick() == 1
        # SPEC 8: one batch for the roles, one for the task lines of the users with overdue tasks.
        assert h.b24.request_count("batch") == 2
        await h.flush()
        (text,) = digests(h)
        assert "<b>All</b>: Overdue 2 · New comments 1" in text and "first digest" in text
        h.clock.advance(minutes=1)
        assert await h.services.coordinator.digest_tick() == 0
    async with portal(tmp_path, clock) as h:  # restart on the same database
        assert await h.services.coordinator.digest_tick() == 0
        log = await tdb.digest_log(h.storage, 42)
        assert [(r["local_date"], r["status"]) for r in log] == [("2026-03-02", "sent")]


async def test_digest_is_read_ahead_for_many_users_and_waits_for_its_time(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    async with portal(tmp_path, clock, BITRIX24_REQUESTS_PER_SECOND="0.1") as h:
        await link(h, 42)
        h.b24.set_counters(ANNA, "view_all", expired=1, new_comments=0)
        h.clock.set(datetime(2026, 3, 2, 8, 59, 55, tzinfo=UTC))  # lead at 0.1 req/s: 10 s
        assert await h.services.coordinator.digest_tick() == 1
        await h.flush()
        assert digests(h) == []  # queued for 09:00
        h.clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        await h.flush()
        assert len(digests(h)) == 1


@pytest.mark.parametrize("late_minutes, sent", [(119, True), (121, False)])
async def test_downtime_catch_up_inside_and_outside_two_hours(tmp_path: Path, late_minutes: int, sent: bool) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    async with portal(tmp_path, clock) as h:
        await link(h, 42)
        h.b24.set_counters(ANNA, "view_all", expired=1, new_comments=0)
    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    clock.advance(minutes=late_minutes)
    async with portal(tmp_path, clock) as h:
        h.b24.set_counters(ANNA, "view_all", expired=1, new_comments=0)
        await h.services.coordinator.digest_tick()
        await h.flush()
        assert len(digests(h)) == (1 if sent else 0)
        (row,) = await tdb.digest_log(h.storage, 42)
        assert row["status"] == ("sent" if sent else "skipped")


async def test_unreadable_bitrix24_delays_the_digest_then_it_goes(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    async with portal(tmp_path, clock) as h:
        await link(h, 42)
        h.clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        h.b24.set_counters(ANNA, "view_all", expired=1, new_comments=0)
        fail_requests(h, 500, "INTERNAL_SERVER_ERROR", "Internal server error")
        assert await h.services.coordinator.digest_tick() == 0
        assert await tdb.digest_log(h.storage, 42) == []
        h.b24.script.clear()
        h.clock.advance(minutes=30)
        assert await h.services.coordinator.digest_tick() == 1


async def test_empty_digest_is_skipped_unless_asked_for(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    async with portal(tmp_path, clock) as h:
        await link(h, 42)
        h.clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        await h.services.coordinator.digest_tick()
        assert [r["status"] for r in await tdb.digest_log(h.storage, 42)] == ["skipped"]
        await h.say(42, "/digest empty on")
        h.clock.set(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
        await h.services.coordinator.digest_tick()
        await h.flush()
        assert len(digests(h)) == 1


async def test_digest_shows_the_change_since_the_last_one_and_digest_now_changes_nothing(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    async with portal(tmp_path, clock) as h:
        await link(h, 42)
        h.b24.set_counters(ANNA, "view_all", expired=2, new_comments=1)
        h.clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        await h.services.coordinator.digest_tick()
        await h.flush()  # only a digest Telegram accepted is the baseline for the next one
        h.b24.set_counters(ANNA, "view_all", expired=5, new_comments=0)
        h.clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
        (now_text,) = await h.say(42, "/digest now")
        assert "Overdue 5 (+3) · New comments 0 (-1)" in now_text and "digest of 2026-03-02" in now_text
        assert len(await tdb.digest_log(h.storage, 42)) == 1
        h.clock.set(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
        await h.services.coordinator.digest_tick()
        await h.flush()
        assert "Overdue 5 (+3)" in digests(h)[-1]


async def test_changing_the_digest_time_never_makes_a_second_one(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    async with portal(tmp_path, clock) as h:
        await link(h, 42)
        h.b24.set_counters(ANNA, "view_all", expired=1, new_comments=0)
        h.clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        await h.services.coordinator.digest_tick()
        await h.say(42, "/digest 10:00")
        h.clock.set(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
        assert await h.services.coordinator.digest_tick() == 0
        await h.say(42, "/digest 9:30")  # already past when saved: no catch-up tomorrow's is next
        h.clock.set(datetime(2026, 3, 2, 10, 30, tzinfo=UTC))
        assert await h.services.coordinator.digest_tick() == 0
        await h.flush()
        assert len(digests(h)) == 1


async def test_paused_days_are_skipped_and_the_return_day_is_sent(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    async with portal(tmp_path, clock) as h:
        await link(h, 42)
        await h.say(42, "/digest empty on")
        await h.say(42, "/pause 2026-03-04")
        for day in (2, 3, 4):
            h.clock.set(datetime(2026, 3, day, 9, 0, tzinfo=UTC))
            await h.services.coordinator.digest_tick()
        await h.flush()
        assert [(r["local_date"], r["status"]) for r in await tdb.digest_log(h.storage, 42)] == [
            ("2026-03-02", "skipped"), ("2026-03-03", "skipped"), ("2026-03-04", "sent")
        ]
        assert len(digests(h)) == 1


# ---- delivery and blocked users -----------------------------------------------------------------


async def test_blocked_user_is_dropped_from_sending_and_polling_and_restored_on_unblock(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        h.tg.blocked_chats.add(42)
        h.b24.set_counters(ANNA, "view_all", expired=3, new_comments=0)
        await h.poll()
        assert (await tdb.user(h.storage, 42)).blocked
        h.b24.requests.clear()
        result = await h.poll()
        assert result.users == 0 and h.b24.request_count("batch") == 0
        h.tg.blocked_chats.clear()
        await h.send(h.tg.chat_member(42, "member"))
        assert not (await tdb.user(h.storage, 42)).blocked
        await h.poll()  # back: a fresh baseline, nothing replayed
        assert alerts(h) == []
        h.b24.set_counters(ANNA, "view_all", expired=4, new_comments=0)
        await h.poll()
        assert len(alerts(h)) == 1


async def test_my_chat_member_kicked_marks_the_user_inactive(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        await h.send(h.tg.chat_member(42, "kicked"))
        assert (await tdb.user(h.storage, 42)).blocked
        await h.say(42, "/start")  # writing again makes them active
        assert not (await tdb.user(h.storage, 42)).blocked


async def test_telegram_429_is_followed_exactly_and_the_alert_arrives_once(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        h.tg.script("sendMessage", (429, "Too Many Requests: retry after 1", 1))
        h.b24.set_counters(ANNA, "view_all", expired=3, new_comments=0)
        await h.poll()
        assert len(alerts(h)) == 1
        attempts = [c for c in h.tg.calls if c.method == "sendMessage" and c.params["text"].startswith("⚠️")]
        assert len(attempts) == 2 and attempts[1].at - attempts[0].at >= 1.0


# ---- admin notices ----------------------------------------------------------------------------


def notices(h: Harness, admin: int = 1) -> list[str]:
    return [t for t in h.tg.texts(admin) if "Polling Bitrix24" in t or "poll cycle" in t]


async def test_admin_is_told_once_on_a_permanent_failure_and_once_on_recovery(tmp_path: Path) -> None:
    async with portal(tmp_path, ADMIN_TELEGRAM_USER_IDS="1") as h:
        await h.say(1, "/start")
        await linked(h)
        await h.poll()
        fail_requests(h, 401, "NO_AUTH_FOUND", "Wrong authorization data")
        for _ in range(3):
            h.clock.advance(minutes=5)
            await h.poll()
        (failing,) = notices(h)
        assert "fails" in failing and "webhook" in failing.lower()
        h.b24.script.clear()
        h.clock.advance(minutes=5)
        await h.poll()
        assert len(notices(h)) == 2 and "recovered after 15 min" in notices(h)[1]
        assert notices(h, 42) == []


async def test_transient_failure_is_told_only_after_two_cycles_and_five_minutes(tmp_path: Path) -> None:
    async with portal(tmp_path, ADMIN_TELEGRAM_USER_IDS="1") as h:
        await h.say(1, "/start")
        await linked(h)
        await h.poll()
        fail_requests(h, 503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        await h.poll()
        h.clock.advance(minutes=2)
        await h.poll()
        assert notices(h) == []  # two cycles, but only two minutes
        h.clock.advance(minutes=3)
        await h.poll()
        assert len(notices(h)) == 1
        h.clock.advance(minutes=5)
        await h.poll()
        assert len(notices(h)) == 1  # one message per cause per 6 hours


async def test_no_admin_message_when_every_user_reads_fine(tmp_path: Path) -> None:
    async with portal(tmp_path, ADMIN_TELEGRAM_USER_IDS="1") as h:
        await h.say(1, "/start")
        await linked(h)
        for _ in range(3):
            await h.poll()
        assert notices(h) == []


async def test_daily_recheck_unlinks_users_no_longer_active_and_tells_them_once(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        h.b24.add_user(ANNA, "Anna", "Smith", active=False)
        h.b24.add_user(548, "Boris", "Ivanov")
        assert await h.services.coordinator.recheck_links() == 0  # checked when linked: due a day later
        h.clock.advance(days=1)
        assert await h.services.coordinator.recheck_links() == 1
        await h.flush()
        assert (await tdb.user(h.storage, 42)).bitrix_user_id is None
        assert sum("no longer active" in t for t in h.tg.texts(42)) == 1
        assert await h.services.coordinator.recheck_links() == 0


async def test_a_row_dropped_while_it_waits_for_a_slot_is_not_sent(tmp_path: Path) -> None:
    from bot.delivery import OutboxWorker
    from bot.storage import OutgoingMessage, outbox

    async with portal(tmp_path) as h:
        await linked(h)
        async with h.storage.transaction() as db:
            await outbox.enqueue(db, [OutgoingMessage(42, 42, "alert", "late alert")], h.clock.timestamp())
        (row,) = await outbox.due(h.storage.db, h.clock.timestamp(), limit=10, exclude=set())
        await h.send(h.tg.chat_member(42, "kicked"))  # drops the user's queued rows
        worker = OutboxWorker(h.storage, h.app.bot, h.clock, h.services.metrics, h.services.accounts)
        await worker._deliver(row)
        assert "late alert" not in h.tg.attempts(42)
        assert [r["status"] for r in await tdb.outbox_rows(h.storage)][-1] == "dropped"


async def test_time_budget_paces_the_next_cycle_and_admins_are_told_once(tmp_path: Path) -> None:
    async with portal(tmp_path, ADMIN_TELEGRAM_USER_IDS="1") as h:
        await h.say(1, "/start")
        await linked(h)
        h.b24.method_seconds["tasks.task.counters.get"] = 200.0  # each read eats 200 s of the 480 s budget
        h.b24.operating_limit = 480.0
        started = h.clock.timestamp()
        await h.poll()
        coordinator = h.services.coordinator
        assert coordinator.effective_interval > 300
        stretched = [t for t in h.tg.texts(1) if "POLL_INTERVAL_SECONDS=300" in t]
        assert len(stretched) == 1 and "1 users" in stretched[0]
        h.clock.advance(seconds=300)
        await h.poll()  # 200 + 200 s would pass the 384 s bulk share: the read waits for the window
        (second,) = [r for r in h.b24.requests if r.method == "batch"][-1:]
        assert second.time >= started + 600
        assert all(r.status == 200 for r in h.b24.requests)
        assert len([t for t in h.tg.texts(1) if "POLL_INTERVAL_SECONDS=300" in t]) == 1
