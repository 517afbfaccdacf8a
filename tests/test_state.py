"""State that must be right after the fact: fresh links, outcomes of digests, retention, restarts, notices."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.storage import Storage, migrations, outbox
from tests import db as tdb
from tests.fakes.clock import FakeClock
from tests.harness import Harness
from tests.test_linking import ANNA, link
from tests.test_scheduled import digests, fail_requests, linked, notices, portal

BORIS = 548


# ---- item 12: a new link starts fresh ---------------------------------------------------------


async def test_a_language_chosen_before_linking_keeps_only_the_language_and_the_profile_zone_wins(tmp_path: Path) -> None:
    h = portal(tmp_path)
    h.b24.add_user(ANNA, "Anna", "Smith", time_zone="Europe/Moscow")
    async with h:
        await h.say(42, "/language ru")
        await h.say(42, "/quiet 22:00-07:00")  # not linked: refused, nothing stored
        await link(h, 42)
        s = await tdb.settings(h.storage, 42)
        assert (s.timezone, s.language, s.quiet_start, s.digest_enabled) == ("Europe/Moscow", "ru", None, True)


async def test_a_link_to_another_account_starts_a_fresh_digest_log(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    h = portal(tmp_path, clock)
    h.b24.add_user(BORIS, "Boris", "Ivanov")
    h.b24.set_counters(ANNA, "view_all", expired=4, new_comments=0)
    h.b24.set_counters(BORIS, "view_all", expired=1, new_comments=0)
    async with h:
        await link(h, 42)
        h.clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        await h.services.coordinator.digest_tick()
        await h.flush()
        assert len(digests(h)) == 1
        await h.say(42, "/unlink")
        await link(h, 42, str(BORIS))
        assert await tdb.digest_log(h.storage, 42) == []
        h.clock.set(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
        await h.services.coordinator.digest_tick()
        await h.flush()
        assert len(digests(h)) == 2 and "(-3)" not in digests(h)[-1]  # no delta against Anna's counters


# ---- item 13: the outbox targets a chat; retention ----------------------------------------------


async def test_migration_2_keeps_the_rows_a_version_1_database_holds(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    storage = await Storage.open_at_version(path, 1)
    async with storage.transaction() as db:
        await db.execute("INSERT INTO users VALUES (42, 42, 'en', 0, 0, 0)")
        await db.execute("INSERT INTO links VALUES (42, 547, 'Anna', 0, 0)")
        await db.execute(
            "INSERT INTO outbox (telegram_user_id, chat_id, kind, text, status, not_before, created_at) "
            "VALUES (42, 42, 'alert', 'queued text', 'queued', 10, 5), (42, 42, 'digest', 'sent text', 'sent', 10, 5)"
        )
        await db.execute("INSERT INTO digest_log VALUES (42, '2026-03-02', 1.0, 'sent', '{}')")
        await db.execute("INSERT INTO link_codes VALUES (42, 547, 'hash', 99, 5)")
    await storage.close()
    storage = await Storage.open(path)
    try:
        assert await storage.schema_version() == len(migrations())
        rows = await tdb.outbox_rows(storage)
        assert [(r["chat_id"], r["telegram_user_id"], r["status"], r["text"]) for r in rows] == [
            (42, 42, "queued", "queued text"),
            (42, 42, "sent", ""),
        ]
        (log,) = await tdb.digest_log(storage, 42)
        assert (log["status"], log["bitrix_user_id"]) == ("sent", 547)
        async with storage.transaction() as db:  # a row for a chat that is no user's
            await outbox.enqueue(db, [outbox.OutgoingMessage(-100123, None, "notice", "project")], 20.0)
    finally:
        await storage.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []


async def test_housekeeping_deletes_what_only_served_an_ended_window(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        h.b24.set_counters(ANNA, "view_all", expired=0, new_comments=0)
        await h.poll()
        h.b24.set_counters(ANNA, "view_all", expired=2, new_comments=0)
        await h.poll()
        (sent,) = [r for r in await tdb.outbox_rows(h.storage) if r["kind"] == "alert"]
        assert sent["status"] == "sent" and sent["text"] == ""  # the text goes as soon as it left
        await h.say(43, f"/link {ANNA}")  # a code and two limit records
        h.clock.advance(days=31)
        removed = await h.services.coordinator.housekeeping()
        assert removed["outbox"] >= 1 and removed["link_codes"] == 1 and removed["limit_events"] >= 2
        assert [r for r in await tdb.outbox_rows(h.storage) if r["kind"] == "alert"] == []
        (row,) = await tdb.rows(h.storage, "SELECT COUNT(*) FROM limit_events")
        assert row[0] == 0


# ---- item 14: a notice is queued in the transaction of the change -------------------------------


async def test_a_moved_link_and_its_notice_happen_together_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        await h.say(77, f"/link {ANNA}")
        from tests.test_linking import code_sent_to

        code = code_sent_to(h, ANNA)

        async def broken(*args: object, **kwargs: object) -> list[int]:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr("bot.account.outbox.enqueue", broken)
        answer = await h.say(77, f"/verify {code}")
        assert "went wrong" in answer[0].lower() or "error" in answer[0].lower()
        assert (await tdb.user(h.storage, 42)).bitrix_user_id == ANNA
        assert (await tdb.user(h.storage, 77)).bitrix_user_id is None
        monkeypatch.undo()
        await h.say(77, f"/verify {code}")  # the code is still there: nothing was written
        await h.flush()
        assert (await tdb.user(h.storage, 77)).bitrix_user_id == ANNA
        assert any("moved" in t.lower() or "another telegram" in t.lower() for t in h.tg.texts(42))


# ---- item 15: the digest log follows its message ------------------------------------------------


async def test_a_digest_telegram_refused_is_no_baseline_for_the_next_one(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    async with portal(tmp_path, clock) as h:
        await link(h, 42)
        h.b24.set_counters(ANNA, "view_all", expired=2, new_comments=0)
        h.clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        await h.services.coordinator.digest_tick()
        h.tg.script("sendMessage", (400, "Bad Request: message is too long"))
        await h.flush()
        assert [r["status"] for r in await tdb.digest_log(h.storage, 42)] == ["failed"]
        h.b24.set_counters(ANNA, "view_all", expired=5, new_comments=0)
        h.clock.set(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
        await h.services.coordinator.digest_tick()
        await h.flush()
        assert "(+3)" not in digests(h)[-1]


async def test_a_digest_whose_retry_moved_its_time_is_still_withdrawn_when_the_settings_change(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 50, tzinfo=UTC))
    async with portal(tmp_path, clock) as h:
        await link(h, 42)
        h.b24.set_counters(ANNA, "view_all", expired=2, new_comments=0)
        h.clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        await h.services.coordinator.digest_tick()
        (row,) = [r for r in await tdb.outbox_rows(h.storage) if r["kind"] == "digest"]
        async with h.storage.transaction() as db:  # as the retry after a refused connection does
            await outbox.requeue(db, row["id"], row["not_before"] + 7.5)
        h.clock.advance(seconds=1)
        await h.say(42, "/digest 10:00")
        assert [r["status"] for r in await tdb.outbox_rows(h.storage) if r["kind"] == "digest"] == ["dropped"]
        assert [r for r in await tdb.digest_log(h.storage, 42)] == []
        h.clock.set(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
        await h.services.coordinator.digest_tick()
        await h.flush()
        assert len(digests(h)) == 1


# ---- item 16: what the coordinator knew survives a restart --------------------------------------


async def test_failing_cycles_are_counted_across_a_restart(tmp_path: Path) -> None:
    first = portal(tmp_path, ADMIN_TELEGRAM_USER_IDS="1")
    async with first as h:
        await h.say(1, "/start")
        await linked(h)
        await h.poll()
        fail_requests(h, 503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        await h.poll()
    second = Harness(tmp_path, clock=first.clock, ADMIN_TELEGRAM_USER_IDS="1")
    second.b24, second.tg = first.b24, first.tg
    async with second as h:
        await h.services.coordinator.restore()
        h.clock.advance(minutes=6)
        await h.poll()
        assert len(notices(h)) == 1, "the second failing cycle after the restart must tell the admins"


# ---- item 17: the allow-list and /stats ----------------------------------------------------------


async def test_a_user_off_the_allow_list_gets_no_notice_and_stats_show_when_the_poll_ran(tmp_path: Path) -> None:
    first = portal(tmp_path)
    async with first as h:
        await linked(h)
    second = Harness(tmp_path, clock=first.clock, ADMIN_TELEGRAM_USER_IDS="1", ALLOWED_TELEGRAM_USER_IDS="5")
    second.b24, second.tg = first.b24, first.tg
    async with second as h:
        await h.say(1, "/start")
        await h.poll()
        poll_time = h.clock.now()
        before = len(h.tg.texts(42))
        assert "is unlinked" in (await h.say(1, f"/unlink {ANNA}"))[0]
        await h.flush()
        assert len(h.tg.texts(42)) == before
        h.clock.advance(hours=2)
        (stats,) = await h.say(1, "/stats")
        assert poll_time.strftime("%Y-%m-%d %H:%M") in stats and h.clock.now().strftime("%H:%M") not in stats


# ---- item 7: one user's bad data stops nobody else ------------------------------------------------


async def test_a_stored_zone_the_system_does_not_know_stops_only_that_user(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    h = portal(tmp_path, clock)
    h.b24.add_user(BORIS, "Boris", "Ivanov")
    h.b24.set_counters(BORIS, "view_all", expired=0, new_comments=0)
    async with h:
        await link(h, 42)
        await link(h, 43, str(BORIS))
        await h.poll()
        async with h.storage.transaction() as db:  # a zone removed from tzdata by an OS upgrade
            await db.execute("UPDATE user_settings SET timezone = 'Mars/Olympus_Mons' WHERE telegram_user_id = 42")
        h.b24.set_counters(ANNA, "view_all", expired=3, new_comments=0)
        h.b24.set_counters(BORIS, "view_all", expired=3, new_comments=0)
        h.clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        result = await h.poll()
        assert result.cause is None and result.broken == 1
        assert len([t for t in h.tg.texts(43) if t.startswith("⚠️")]) == 1, h.tg.texts(43)
        assert await h.services.coordinator.digest_tick() == 1
        await h.flush()
        assert len(digests(h, 43)) == 1 and digests(h, 42) == []
        metrics = h.services.metrics.render().decode()
        assert 'bot_worker_errors_total{worker="poll_user"} 1.0' in metrics


async def test_a_time_blocked_method_stays_blocked_across_a_restart(tmp_path: Path) -> None:
    first = portal(tmp_path)
    async with first as h:
        await linked(h)
        fail_requests(h, 429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", times=1)
        result = await h.poll()
        assert result.cause == "time_budget"
    second = Harness(tmp_path, clock=first.clock)
    second.b24, second.tg = first.b24, first.tg
    async with second as h:
        await h.services.coordinator.restore()
        before = h.b24.request_count()
        h.clock.advance(minutes=5)
        result = await h.poll()
        assert result.cause == "time_budget" and h.b24.request_count() == before  # no request into a blocked method
        h.clock.advance(minutes=6)
        assert (await h.poll()).cause is None


async def test_messages_queued_before_a_user_left_the_allow_list_are_dropped_not_sent(tmp_path: Path) -> None:
    first = portal(tmp_path)
    async with first as h:
        await linked(h)
        async with h.storage.transaction() as db:
            await outbox.enqueue(db, [outbox.OutgoingMessage(42, 42, "alert", "queued before the restart")], h.clock.timestamp())
    second = Harness(tmp_path, clock=first.clock, ALLOWED_TELEGRAM_USER_IDS="5")
    second.b24, second.tg = first.b24, first.tg
    async with second as h:
        await h.flush()
        assert "queued before the restart" not in h.tg.attempts(42)
        (row,) = [r for r in await tdb.outbox_rows(h.storage) if r["kind"] == "alert"]
        assert (row["status"], row["error"]) == ("dropped", "not allowed")


async def test_digest_task_lines_are_on_by_default_and_switch_by_command_and_button(tmp_path: Path) -> None:
    async with portal(tmp_path) as h:
        await linked(h)
        assert (await tdb.settings(h.storage, 42)).digest_tasks is True
        (answer,) = await h.say(42, "/digest tasks off")
        assert answer == "Overdue tasks in the digest: off"
        assert (await tdb.settings(h.storage, 42)).digest_tasks is False
        (bad,) = await h.say(42, "/digest tasks maybe")
        assert bad.startswith("Say /digest tasks on or /digest tasks off.")
        (shown,) = await h.say(42, "/settings")
        assert "Overdue tasks in the digest: off" in shown
        await h.send(h.tg.callback(42, "s:tasks_on", 5))
        assert (await tdb.settings(h.storage, 42)).digest_tasks is True


async def test_migration_4_keeps_alert_states_and_queued_messages_of_a_version_3_database(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    storage = await Storage.open_at_version(path, 3)
    async with storage.transaction() as db:
        await db.execute("INSERT INTO users VALUES (42, 42, 'en', 0, 0, 0)")
        await db.execute(
            "INSERT INTO alert_state (telegram_user_id, counter, alerted, peak, snooze_until, held, baseline_needed) "
            "VALUES (42, 'expired', 1, 3, NULL, 0, 0)"
        )
        await db.execute(
            "INSERT INTO outbox (telegram_user_id, chat_id, kind, text, status, not_before, created_at) "
            "VALUES (42, 42, 'alert', 'queued text', 'queued', 10, 5)"
        )
    await storage.close()
    storage = await Storage.open(path)
    try:
        state = (await tdb.states(storage, 42))["expired"]
        assert (state.alerted, state.peak, state.alerted_at) == (True, 3, None)  # its next growth alerts at once
        (row,) = await outbox.due(storage.db, 20.0, 10, set())
        assert (row.text, row.caused_at) == ("queued text", None)
        assert [tuple(r) for r in await tdb.rows(storage, "SELECT COUNT(*) FROM task_members")] == [(0,)]
    finally:
        await storage.close()
