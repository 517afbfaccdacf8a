"""/counters and the settings commands end to end, in English and Russian, with bad input tables."""

from __future__ import annotations

import json
from datetime import date, time
from pathlib import Path

import pytest

from tests import db as tdb
from tests.fakes.bitrix import Scripted
from tests.harness import Harness
from tests.test_linking import ANNA, link

ROLES = ("view_role_responsible", "view_role_accomplice", "view_role_auditor", "view_role_originator")


@pytest.fixture
def portal(tmp_path: Path) -> Harness:
    h = Harness(tmp_path)
    h.b24.add_user(ANNA, "Anna", "Smith")
    h.b24.set_counters(ANNA, "view_all", expired=3, new_comments=5, total=8)
    for role in ROLES:
        h.b24.set_counters(ANNA, role, expired=1, new_comments=2)
    return h


async def test_counters_reads_every_role_in_exactly_one_request(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        h.clock.advance(seconds=11)
        h.b24.requests.clear()
        (text,) = await h.say(42, "/counters")
        assert h.b24.request_count() == 1 and h.b24.request_count("batch") == 1
        for label in ("All", "Doing", "Helping", "Following", "Created by me"):
            assert f"<b>{label}</b>" in text
        assert "updated 06:00" in text
        assert text.count("<a href=") == 1 and "/company/personal/user/547/tasks/" in text
        markup = h.tg.sent(42)[-1]["reply_markup"]
        datas = [b["callback_data"] for row in markup["inline_keyboard"] for b in row]
        assert "c:doing" in datas and "c:every" in datas


async def test_counters_for_one_role_and_in_russian(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        await h.say(42, "/language ru")
        h.clock.advance(seconds=11)
        (text,) = await h.say(42, "/counters doing")
        assert "<b>Делаю</b>: Просрочено 1 · Новые комментарии 2" in text
        assert "Помогаю" not in text and "обновлено" in text


async def test_second_read_within_ten_seconds_comes_from_the_last_one(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        h.b24.requests.clear()
        (text,) = await h.say(42, "/counters")  # the link's own read was less than 10 s ago
        assert h.b24.request_count() == 0 and "read at 06:00" in text


async def test_no_access_is_said_plainly_never_as_zeros(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        h.b24.admin = False  # the webhook is not an administrator's: everyone else reads as []
        h.clock.advance(seconds=11)
        (text,) = await h.say(42, "/counters all")
        assert "no access to this account's counters" in text and "Overdue 0" not in text


async def test_unknown_counter_names_are_shown_under_their_key(portal: Harness) -> None:
    async with portal as h:
        h.b24.set_counters(ANNA, "view_all", expired=1, new_comments=0, wo_deadline=4, expired_soon=2)
        await link(h, 42)
        h.clock.advance(seconds=11)
        (text,) = await h.say(42, "/counters all")
        assert "wo_deadline 4" in text and "expired_soon 2" in text


async def test_role_buttons_edit_the_message_in_place(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        h.clock.advance(seconds=11)
        await h.say(42, "/counters")
        message_id = 5000
        await h.send(h.tg.callback(42, "c:following", message_id))
        (edit,) = h.tg.sent(42, method="editMessageText")
        assert edit["message_id"] == message_id and "<b>Following</b>" in edit["text"] and "<b>Doing</b>" not in edit["text"]
        assert len(h.tg.sent(method="answerCallbackQuery")) == 1


async def test_not_modified_edit_counts_as_success(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        h.tg.script("editMessageText", (400, "Bad Request: message is not modified: specified new message content is the same"))
        await h.send(h.tg.callback(42, "c:every", 5000))
        assert h.tg.texts(42)[-1].startswith("<b>Task counters</b>")  # no error answer followed


async def test_forged_callback_data_changes_nothing(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        before = await h.storage.table_counts()
        for data in ("c:../../etc", "s:drop_table", "z:expired:x", "z:' OR 1=1 --:h", "c:", "s:", "zzz"):
            await h.send(h.tg.callback(42, data, 5000))
        assert h.tg.sent(42, method="editMessageText") == []
        assert await h.storage.table_counts() == before


async def test_bitrix24_down_during_counters_is_explained(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        h.clock.advance(seconds=11)
        h.b24.push(*[Scripted.html(502)] * 10)
        (text,) = await h.say(42, "/counters")
        assert "Traceback" not in text and "<b>All</b>:" in text and "Overdue" not in text


async def test_settings_show_everything_and_buttons_toggle_in_place(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        (text,) = await h.say(42, "/settings")
        assert "Digest: 09:00, Mon–Fri" in text and "Alerts: on: Overdue ≥ 1" in text and "Time zone: UTC" in text
        await h.send(h.tg.callback(42, "s:digest_off", 6000))
        (edit,) = h.tg.sent(42, method="editMessageText")
        assert "Digest: off" in edit["text"]
        assert (await tdb.settings(h.storage, 42)).digest_enabled is False
        await h.send(h.tg.callback(42, "s:lang_ru", 6000))
        assert "Сводка: выключено" in h.tg.sent(42, method="editMessageText")[-1]["text"]


async def test_settings_commands_change_what_they_say(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        assert "07:30, Mon, Wed, Fri" in (await h.say(42, "/digest 7:30 mon,wed,fri"))[0]
        assert "08:15, Mon, Wed, Fri" in (await h.say(42, "/digest 8:15"))[0]  # omitted days are kept
        await h.say(42, "/digest off")
        assert "08:15" in (await h.say(42, "/digest on"))[0]  # on restores the last time
        await h.say(42, "/digest empty on")
        await h.say(42, "/alerts comments 10")
        await h.say(42, "/alerts overdue off")
        await h.say(42, "/quiet 22:00-07:00")
        await h.say(42, "/timezone utc+3")
        await h.say(42, "/pause 7")
        s = await tdb.settings(h.storage, 42)
        assert (s.digest_time, s.digest_days, s.digest_empty) == (time(8, 15), frozenset({0, 2, 4}), True)
        assert s.thresholds == {"new_comments": 10}
        assert (s.quiet_start, s.quiet_end, s.timezone) == (time(22, 0), time(7, 0), "UTC+03:00")
        assert s.pause_until == date(2026, 3, 9)
        assert "2026-03-09" in (await h.say(42, "/settings"))[0]
        assert "over" in (await h.say(42, "/resume"))[0]
        assert (await tdb.settings(h.storage, 42)).pause_until is None


@pytest.mark.parametrize(
    "command, fragment",
    [
        ("/digest 25:00", "0:00 to 23:59"),
        ("/digest 9:00 fri-mon", "wrap around"),
        ("/digest 9:00 someday", "Days are"),
        ("/digest empty maybe", "/digest empty on"),
        ("/digest sometimes", "did not understand"),
        ("/alerts overdue 0", "from 1 to 9999"),
        ("/alerts overdue 10000", "from 1 to 9999"),
        ("/alerts overdue -3", "from 1 to 9999"),
        ("/alerts overdue 1.5", "from 1 to 9999"),
        ("/alerts bugs 3", "overdue or comments"),
        ("/alerts overdue", "counter and a threshold"),
        ("/quiet 22:00", "HH:MM-HH:MM"),
        ("/quiet 22:00-22:00", "different times"),
        ("/timezone Mars/Olympus", "do not know that time zone"),
        ("/timezone UTC+15", "UTC-12:00 to UTC+14:00"),
        ("/language de", "en, ru"),
        ("/pause 0", "1 to 365 days"),
        ("/pause 366", "1 to 365 days"),
        ("/pause 2020-01-01", "from 2026-03-03"),
        ("/pause someday", "number of days or a date"),
        ("/counters everyone", "all, doing"),
        ("/link ' OR 1=1; DROP TABLE links; --", "ID, an e-mail or a profile link"),
        ("/link " + "9" * 30, "from 1 to"),
        ("/digest " + "x" * 5000, "too long"),
        ("/timezone \x00\x01", "characters I cannot accept"),
    ],
)
async def test_bad_input_gets_one_line_with_an_example_and_changes_nothing(
    portal: Harness, command: str, fragment: str
) -> None:
    async with portal as h:
        await link(h, 42)
        before_settings = await tdb.settings(h.storage, 42)
        before_rows = await h.storage.table_counts()
        answers = await h.say(42, command)
        assert len(answers) == 1 and fragment in answers[0], answers
        assert answers[0].count("\n") <= 1 and len(answers[0]) < 300
        assert await tdb.settings(h.storage, 42) == before_settings
        after_rows = await h.storage.table_counts()
        assert {k: v for k, v in after_rows.items() if k != "limit_events"} == {
            k: v for k, v in before_rows.items() if k != "limit_events"
        }


@pytest.mark.parametrize("command", ["/digest", "/alerts", "/quiet", "/timezone", "/language", "/pause"])
async def test_a_command_without_arguments_shows_the_value_and_an_example(portal: Harness, command: str) -> None:
    async with portal as h:
        await link(h, 42)
        (text,) = await h.say(42, command)
        assert "Example: <code>/" in text


async def test_settings_commands_need_a_link(portal: Harness) -> None:
    async with portal as h:
        for command in ("/counters", "/settings", "/digest 9:00", "/alerts on", "/quiet off", "/pause 3"):
            assert "not linked" in (await h.say(42, command))[0]
        assert (await h.storage.table_counts())["user_settings"] == 0


async def test_html_in_a_bitrix24_name_is_escaped(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.b24.add_user(ANNA, "<b>Anna</b>", "O'Neil & Co")
    h.b24.set_counters(ANNA, "view_all", expired=0, new_comments=0)
    async with h:
        answers = await link(h, 42)
        assert "&lt;b&gt;Anna&lt;/b&gt; O'Neil &amp; Co" in answers[0]


async def test_snooze_buttons_set_the_snooze_of_that_counter(portal: Harness) -> None:
    async with portal as h:
        await link(h, 42)
        await h.services.coordinator.poll_cycle()  # baseline: the state row exists
        await h.send(h.tg.callback(42, "z:expired:h", 7000))
        (answer,) = h.tg.sent(42, method="answerCallbackQuery") or h.tg.sent(method="answerCallbackQuery")
        assert "07:00" in answer["text"]
        states = await tdb.states(h.storage, 42)
        assert states["expired"].snooze_until.isoformat() == "2026-03-02T07:00:00+00:00"
        await h.send(h.tg.callback(42, "z:expired:t", 7000))
        states = await tdb.states(h.storage, 42)
        assert states["expired"].snooze_until.isoformat() == "2026-03-03T09:00:00+00:00"


async def test_command_menu_is_registered_in_both_languages(portal: Harness) -> None:
    from bot.app import set_commands

    async with portal as h:
        await set_commands(h.app)
        calls = h.tg.sent(method="setMyCommands")
        by_lang = {c.get("language_code"): c["commands"] for c in calls}
        assert set(by_lang) == {None, "ru"}
        assert {"counters", "link", "settings"} <= {c["command"] for c in by_lang[None]}
        assert json.dumps(by_lang["ru"], ensure_ascii=False).count("Мои счётчики задач") == 1
