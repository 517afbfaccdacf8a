"""Linking end to end: the real Application against the fake Telegram and the fake Bitrix24."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import db as tdb
from tests.harness import Harness

ANNA = 547


def code_sent_to(h: Harness, bitrix_user_id: int) -> str:
    """The last one-time code the fake Bitrix24 delivered to this user."""
    messages = [m for uid, m in h.b24.notifications if uid == bitrix_user_id]
    assert messages, "no code was sent through Bitrix24"
    return re.search(r"Code: (\d{6})", messages[-1]).group(1)


async def link(h: Harness, telegram_user_id: int, target: str = str(ANNA)) -> list[str]:
    """The whole code flow; returns the bot's answers to /verify."""
    await h.say(telegram_user_id, f"/link {target}")
    bitrix_user_id = ANNA if target == str(ANNA) else int(re.sub(r"\D", "", target.split("/user/")[-1]) or ANNA)
    return await h.say(telegram_user_id, f"/verify {code_sent_to(h, bitrix_user_id)}")


@pytest.fixture
def portal(tmp_path: Path) -> Harness:
    h = Harness(tmp_path)
    h.b24.add_user(ANNA, "Anna", "Smith", email="anna@corp.example", time_zone="Europe/Moscow")
    h.b24.add_user(548, "Boris", "Ivanov", email="boris@corp.example")
    h.b24.set_counters(ANNA, "view_all", expired=3, new_comments=5, total=8)
    for role in ("view_role_responsible", "view_role_accomplice", "view_role_auditor", "view_role_originator"):
        h.b24.set_counters(ANNA, role, expired=1, new_comments=0)
    return h


async def test_full_code_flow_links_and_shows_counters_once(portal: Harness) -> None:
    async with portal as h:
        answers = await h.say(42, "/link 547")
        assert len(answers) == 1 and "one-time code" in answers[0]
        assert "Anna" not in answers[0] and "Smith" not in answers[0]  # no name leaks from a lookup
        (uid, note), = h.b24.notifications
        assert uid == ANNA and "ID 42" in note and "Never pass it on" in note
        code = code_sent_to(h, ANNA)
        h.b24.requests.clear()
        answers = await h.say(42, code[:3] + "-" + code[3:])  # a bare code, dashes ignored
        assert "Anna Smith" in answers[0] and "09:00" in answers[0] and "Europe/Moscow" in answers[0]
        assert "Overdue 3" in answers[1] and "New comments 5" in answers[1] and "total" not in answers[1]
        assert h.b24.request_count("batch") == 1
        user = await tdb.user(h.storage, 42)
        assert user.bitrix_user_id == ANNA and user.full_name == "Anna Smith"
        settings = await tdb.settings(h.storage, 42)
        assert settings.timezone == "Europe/Moscow" and settings.thresholds == {"expired": 1}
        assert (await h.storage.table_counts())["link_codes"] == 0
        rows = await tdb.rows(h.storage, "SELECT code_hash FROM link_codes")
        assert rows == []


async def test_code_is_stored_only_as_a_keyed_hash(portal: Harness) -> None:
    async with portal as h:
        await h.say(42, "/link 547")
        code = code_sent_to(h, ANNA)
        (row,) = await tdb.rows(h.storage, "SELECT code_hash FROM link_codes")
        assert code not in row[0] and len(row[0]) == 64
        raw = h.settings.database_path.read_bytes() + Path(str(h.settings.database_path) + "-wal").read_bytes()
        assert code.encode() not in raw


async def test_wrong_code_counts_down_and_the_right_one_still_works(portal: Harness) -> None:
    async with portal as h:
        await h.say(42, "/link 547")
        code = code_sent_to(h, ANNA)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        assert "Tries left: 4" in (await h.say(42, f"/verify {wrong}"))[0]
        assert "Anna Smith" in (await h.say(42, f"/verify {code}"))[0]


async def test_five_wrong_codes_kill_the_code_even_for_the_right_one(portal: Harness) -> None:
    async with portal as h:
        await h.say(42, "/link 547")
        code = code_sent_to(h, ANNA)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        for _ in range(4):
            await h.say(42, f"/verify {wrong}")
        assert "no tries are left" in (await h.say(42, f"/verify {wrong}"))[0]
        assert "no code waiting" in (await h.say(42, f"/verify {code}"))[0]
        assert (await tdb.user(h.storage, 42)).bitrix_user_id is None


async def test_expired_code_is_refused(portal: Harness) -> None:
    async with portal as h:
        await h.say(42, "/link 547")
        code = code_sent_to(h, ANNA)
        h.clock.advance(minutes=10, seconds=1)
        assert "expired" in (await h.say(42, f"/verify {code}"))[0]
        assert (await tdb.user(h.storage, 42)).bitrix_user_id is None


async def test_a_new_code_cancels_the_previous_one(portal: Harness) -> None:
    async with portal as h:
        await h.say(42, "/link 547")
        first = code_sent_to(h, ANNA)
        await h.say(42, "/link 547")
        second = code_sent_to(h, ANNA)
        if first != second:
            assert "Wrong code" in (await h.say(42, f"/verify {first}"))[0]
        assert "Anna Smith" in (await h.say(42, f"/verify {second}"))[0]


async def test_three_codes_an_hour_per_telegram_user(portal: Harness) -> None:
    async with portal as h:
        for _ in range(3):
            await h.say(42, "/link 547")
        assert "Too many codes" in (await h.say(42, "/link 547"))[0]
        assert len(h.b24.notifications) == 3
        h.clock.advance(minutes=61)
        assert "one-time code" in (await h.say(42, "/link 547"))[0]


async def test_three_codes_an_hour_per_bitrix24_user_whoever_asks(portal: Harness) -> None:
    async with portal as h:
        for telegram_user_id in (42, 43, 44):
            await h.say(telegram_user_id, "/link 547")
        assert "Too many codes" in (await h.say(45, "/link 547"))[0]
        assert len(h.b24.notifications) == 3


async def test_ten_lookups_an_hour_found_or_not(portal: Harness) -> None:
    async with portal as h:
        for n in range(10):
            await h.say(42, f"/link {9000 + n}")
        h.b24.requests.clear()
        assert "Too many lookups" in (await h.say(42, "/link 547"))[0]
        assert h.b24.request_count() == 0


async def test_limit_records_survive_forget(portal: Harness) -> None:
    async with portal as h:
        for _ in range(3):
            await h.say(42, "/link 547")
        await h.say(42, "/forget")
        assert "Too many codes" in (await h.say(42, "/link 547"))[0]


async def test_unknown_user_gets_the_same_answer_as_an_inactive_one(portal: Harness) -> None:
    async with portal as h:
        portal.b24.add_user(549, "Gone", "User", active=False)
        assert "No active Bitrix24 user" in (await h.say(42, "/link 549"))[0]
        assert "No active Bitrix24 user" in (await h.say(42, "/link 9999"))[0]
        assert h.b24.notifications == []


async def test_link_by_email_and_by_profile_url(portal: Harness) -> None:
    async with portal as h:
        answers = await link(h, 42, "ANNA@corp.example")
        assert "Anna Smith" in answers[0]
        answers = await link(h, 43, "https://corp.bitrix24.example/company/personal/user/548/")
        assert "Boris Ivanov" in answers[0]


async def test_profile_url_on_a_foreign_host_is_refused(portal: Harness) -> None:
    async with portal as h:
        answers = await h.say(42, "/link https://evil.example/company/personal/user/547/")
        assert "not on our portal" in answers[0] and h.b24.request_count() == 0


async def test_email_filter_dropped_by_the_portal_finds_nobody(portal: Harness) -> None:
    async with portal as h:
        h.b24.scopes = {"task", "im", "user_brief"}  # user.get then ignores EMAIL and returns everyone
        h.b24.add_user(550, "Anna", "Twin", email="anna@corp.example")
        assert "No active Bitrix24 user" in (await h.say(42, "/link anna@corp.example"))[0]


async def test_relinking_moves_the_link_and_tells_the_old_chat(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        answers = await link(h, 77)
        assert "Anna Smith" in answers[0]
        assert (await tdb.user(h.storage, 42)).bitrix_user_id is None
        assert (await tdb.user(h.storage, 77)).bitrix_user_id == ANNA
        notices = [r for r in await tdb.outbox_rows(h.storage) if r["telegram_user_id"] == 42]
        assert len(notices) == 1 and "another Telegram account" in notices[0]["text"]


async def test_unlink_stops_everything_and_forget_leaves_only_limit_records(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        assert "Unlinked" in (await h.say(42, "/unlink"))[0]
        assert (await tdb.user(h.storage, 42)).bitrix_user_id is None
        assert "not linked" in (await h.say(42, "/counters"))[0]
        await link(h, 42)
        await h.say(42, "/forget")
        counts = await h.storage.table_counts()
        assert counts["limit_events"] > 0
        assert {k: v for k, v in counts.items() if k not in ("limit_events", "meta", "admin_notices")} == {
            k: 0 for k in counts if k not in ("limit_events", "meta", "admin_notices")
        }


async def test_admin_unlinks_someone_else_by_bitrix_id(tmp_path: Path) -> None:
    h = Harness(tmp_path, ADMIN_TELEGRAM_USER_IDS="1")
    h.b24.add_user(ANNA, "Anna", "Smith")
    async with h:
        await link(h, 42)
        assert "only the bot's administrators" in (await h.say(43, "/unlink 547"))[0].lower()
        assert "is unlinked" in (await h.say(1, "/unlink 547"))[0]
        assert (await tdb.user(h.storage, 42)).bitrix_user_id is None
        assert "not linked" in (await h.say(1, "/unlink 547"))[0]


async def test_verification_none_links_at_once_and_refuses_a_taken_account(tmp_path: Path) -> None:
    h = Harness(tmp_path, LINK_VERIFICATION="none", ALLOWED_TELEGRAM_USER_IDS="42 43")
    h.b24.add_user(ANNA, "Anna", "Smith")
    async with h:
        answers = await h.say(42, "/link 547")
        assert "Anna Smith" in answers[0] and h.b24.notifications == []
        assert "already linked to another" in (await h.say(43, "/link 547"))[0]
        assert (await tdb.user(h.storage, 42)).bitrix_user_id == ANNA


async def test_strangers_are_told_the_bot_is_private_and_nothing_is_stored(tmp_path: Path) -> None:
    h = Harness(tmp_path, ALLOWED_TELEGRAM_USER_IDS="42")
    async with h:
        answers = await h.say(99, "/link 547")
        assert "private" in answers[0]
        assert await tdb.user(h.storage, 99) is None and h.b24.request_count() == 0


async def test_groups_get_no_personal_data(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        for command in ("/counters", "/link 547", "/settings", "/digest now", "/verify 123456"):
            answers = await h.say(42, command, chat_id=-100500, chat_type="supergroup")
            assert answers == ["Write to me in private: I never show personal data in a group."]
        assert "Hello" in (await h.say(42, "/start", chat_id=-100500, chat_type="supergroup"))[0]


async def test_bitrix24_failure_during_link_is_explained_and_changes_nothing(portal: Harness) -> None:
    from tests.fakes.bitrix import Scripted

    async with portal as h:
        h.b24.push(Scripted.error(401, "NO_AUTH_FOUND", "Wrong authorization data"))
        answers = await h.say(42, "/link 547")
        assert answers[0].startswith("I could not read Bitrix24")
        assert "Traceback" not in answers[0]
        assert (await h.storage.table_counts())["link_codes"] == 0
