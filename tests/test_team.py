"""Team views for department heads (SPEC 12) end to end: /team, its buttons, authorization, the digest's team line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests import db as tdb
from tests.fakes.clock import FakeClock
from tests.harness import Harness
from tests.test_linking import ANNA, link
from tests.test_scheduled import portal

BORIS, CARL, DINA, EVE, OLEG, PAVEL = 548, 549, 550, 551, 600, 700
COMPANY, SALES, EAST, SUPPORT, MARKETING = 1, 2, 3, 4, 5


def team_portal(tmp_path: Path, clock: FakeClock | None = None, **settings: str) -> Harness:
    """Company > Sales (Anna) > Sales East (Oleg); Company > Support (Pavel); Company > Marketing (Anna)."""
    h = portal(tmp_path, clock, **settings)
    b = h.b24
    b.scopes.add("department")
    b.add_department(COMPANY, "Company", head=1)
    b.add_department(SALES, "Sales", parent=COMPANY, head=ANNA)
    b.add_department(EAST, "Sales East", parent=SALES, head=OLEG)
    b.add_department(SUPPORT, "Support", parent=COMPANY, head=PAVEL)
    b.add_department(MARKETING, "Marketing", parent=COMPANY, head=ANNA)
    b.add_user(ANNA, "Anna", "Smith", departments=(SALES, SUPPORT))  # a head who is also a member elsewhere
    b.add_user(BORIS, "Boris", "Ivanov", departments=(SALES,))
    b.add_user(CARL, "Carl", "Berg", departments=(EAST,))
    b.add_user(DINA, "Dina", "Roth", departments=(EAST, MARKETING))  # in two of Anna's departments: counted once
    b.add_user(EVE, "Eve", "Secret", departments=(SUPPORT,))
    b.add_user(OLEG, "Oleg", "Petrov", departments=(EAST,))
    b.add_user(PAVEL, "Pavel", "Lee", departments=(SUPPORT,))
    for bid, overdue, comments in ((BORIS, 3, 5), (CARL, 0, 0), (DINA, 1, 0), (EVE, 9, 9), (OLEG, 0, 2), (PAVEL, 0, 0)):
        b.set_counters(bid, "view_all", expired=overdue, new_comments=comments)
    return h


async def head(h: Harness) -> None:
    await link(h, 42)
    await h.say(42, "/digest off")


def counter_batches(h: Harness) -> list[dict]:
    return [r.params for r in h.b24.requests if r.method == "batch" and "tasks.task.counters.get" in str(r.params)]


def asked_users(h: Harness) -> set[int]:
    return {
        int(part.split("=")[1])
        for params in counter_batches(h)
        for command in params["cmd"].values()
        for part in command.partition("?")[2].split("&")
        if part.startswith("userId=")
    }


def toasts(h: Harness) -> list[str]:
    return [p.get("text", "") for p in h.tg.sent(None, method="answerCallbackQuery")]


def edits(h: Harness, chat_id: int = 42) -> list[str]:
    return [p["text"] for p in h.tg.sent(chat_id, method="editMessageText")]


async def test_a_head_of_two_departments_sees_nested_people_once_most_overdue_first(tmp_path: Path) -> None:
    async with team_portal(tmp_path) as h:
        await head(h)
        h.b24.requests.clear()
        (text,) = await h.say(42, "/team")
        lines = text.splitlines()
        assert lines[0] == "<b>Team</b>: Sales, Marketing, Sales East · 4 people"
        assert lines[1] == "Boris Ivanov — overdue 3 · new comments 5"
        assert lines[2] == "Dina Roth — overdue 1"
        assert lines[3] == "Oleg Petrov — new comments 2"
        assert lines[4] == "1 more: nothing overdue, no new comments"
        assert "Eve" not in text and "Pavel" not in text and "Anna" not in text
        keyboard = h.tg.sent(42)[-1]["reply_markup"]["inline_keyboard"]
        assert [b["callback_data"] for b in keyboard[0]] == [f"t:doing:0:{BORIS}", f"t:doing:0:{DINA}"]
        assert keyboard[-1][0]["callback_data"] == "tm:r"
        # one structure read, one people read, one counters batch for the four
        assert h.b24.request_count("department.get") == 1 and h.b24.request_count("user.get") == 1
        (people_read,) = [r for r in h.b24.requests if r.method == "user.get"]
        assert sorted(int(d) for d in people_read.params["FILTER"]["UF_DEPARTMENT"]) == [SALES, EAST, MARKETING]
        assert len(counter_batches(h)) == 1 and asked_users(h) == {BORIS, CARL, DINA, OLEG}


async def test_linked_people_come_from_the_poll_and_a_refresh_rereads_at_most_every_5_minutes(tmp_path: Path) -> None:
    async with team_portal(tmp_path) as h:
        await head(h)
        await link(h, 43, str(BORIS))
        await h.poll()
        h.b24.requests.clear()
        (text,) = await h.say(42, "/team")
        assert "Boris Ivanov — overdue 3" in text
        assert asked_users(h) == {CARL, DINA, OLEG}  # Boris is linked: the poll's counters
        h.clock.advance(seconds=11)
        await h.send(h.tg.callback(42, "tm:r", 1))
        assert len(counter_batches(h)) == 1 and h.b24.request_count("department.get") == 1  # all from the caches
        h.b24.set_counters(CARL, "view_all", expired=4, new_comments=0)
        h.clock.advance(minutes=5)
        await h.send(h.tg.callback(42, "tm:r", 1))
        assert len(counter_batches(h)) == 2 and "Carl Berg — overdue 4" in edits(h)[-1]


async def test_a_head_who_is_also_a_member_elsewhere_is_on_the_other_heads_team(tmp_path: Path) -> None:
    async with team_portal(tmp_path) as h:
        await link(h, 45, str(PAVEL))
        (text,) = await h.say(45, "/team")
        assert text.startswith("<b>Team</b>: Support · 2 people")
        assert "Eve Secret — overdue 9" in text and "Pavel" not in text
        assert "1 more: nothing overdue" in text  # Anna, who heads Sales elsewhere


async def test_a_user_who_heads_nothing_is_told_in_one_line(tmp_path: Path) -> None:
    async with team_portal(tmp_path) as h:
        await link(h, 44, str(CARL))
        assert await h.say(44, "/team") == ["You head no department in Bitrix24, so there is no team to show."]
        assert h.b24.request_count("user.get") == 1  # the link's lookup only: no people read


async def test_without_the_department_scope_the_answer_names_it_and_admins_hear_nothing(tmp_path: Path) -> None:
    async with team_portal(tmp_path, ADMIN_TELEGRAM_USER_IDS="1") as h:
        await h.say(1, "/start")
        await head(h)
        h.b24.scopes.discard("department")
        (text,) = await h.say(42, "/team")
        assert "must add the scope <b>department</b>" in text
        await h.flush()
        assert len(h.tg.texts(1)) == 1  # only the /start answer


async def test_a_portal_that_ignores_the_department_filter_shows_nobody_and_tells_admins_once(tmp_path: Path) -> None:
    async with team_portal(tmp_path, ADMIN_TELEGRAM_USER_IDS="1") as h:
        await h.say(1, "/start")
        await head(h)
        h.b24.ignore_department_filter = True
        h.b24.requests.clear()
        (text,) = await h.say(42, "/team")
        assert text.startswith("Team views are unavailable on this portal")
        h.clock.advance(seconds=11)
        await h.say(42, "/team")
        await h.flush()
        assert len([t for t in h.tg.texts(1) if "UF_DEPARTMENT" in t]) == 1
        assert counter_batches(h) == []
        assert not any("Eve" in t or "Boris" in t for chat in (1, 42) for t in h.tg.texts(chat))


async def test_a_persons_button_opens_their_doing_list_and_a_forged_one_shows_nothing(tmp_path: Path) -> None:
    async with team_portal(tmp_path) as h:
        now = h.clock.now()
        h.b24.add_task(11, "Boris's report", deadline=now - timedelta(days=2), responsible=BORIS)
        h.b24.add_task(12, "Eve's secret", deadline=now - timedelta(days=2), responsible=EVE)
        await head(h)
        await h.say(42, "/team")
        await h.send(h.tg.callback(42, f"t:doing:0:{BORIS}", 1))
        text = edits(h)[-1]
        assert text.startswith("Boris Ivanov: <b>Overdue: Doing</b> (1)") and "Boris&#x27;s report" in text
        (request,) = [r for r in h.b24.requests if r.method == "tasks.task.list"]
        assert int(request.params["filter"]["RESPONSIBLE_ID"]) == BORIS
        keyboard = h.tg.sent(42, method="editMessageText")[-1]["reply_markup"]["inline_keyboard"]
        assert [b["callback_data"] for b in keyboard[-1]] == [f"tr:doing:0:{BORIS}", "tm:v"]
        await h.send(h.tg.callback(42, f"t:doing:0:{EVE}", 1))  # forged: Eve is in Support
        await h.send(h.tg.callback(42, f"t:doing:0:{ANNA}", 1))  # the head herself
        assert toasts(h)[-2:] == ["This person is not on your team."] * 2
        assert len([r for r in h.b24.requests if r.method == "tasks.task.list"]) == 1
        assert not any("Eve&#x27;s secret" in t for t in edits(h))
        await h.send(h.tg.callback(42, "tm:v", 1))  # back to the team, from the view read a moment ago
        assert edits(h)[-1].startswith("<b>Team</b>: Sales")


async def test_a_press_after_the_head_lost_the_role_or_the_link_shows_nothing(tmp_path: Path) -> None:
    async with team_portal(tmp_path) as h:
        h.b24.add_task(11, "Boris's report", deadline=h.clock.now() - timedelta(days=2), responsible=BORIS)
        await head(h)
        await h.say(42, "/team")
        h.b24.add_department(SALES, "Sales", parent=COMPANY, head=None)
        h.b24.add_department(MARKETING, "Marketing", parent=COMPANY, head=None)
        h.clock.advance(minutes=16)  # the structure cache expired: the press re-reads it
        await h.send(h.tg.callback(42, f"t:doing:0:{BORIS}", 1))
        assert toasts(h)[-1] == "This person is not on your team."
        assert not any(r.method == "tasks.task.list" for r in h.b24.requests)
        assert await h.say(42, "/team") == ["You head no department in Bitrix24, so there is no team to show."]
        h.b24.add_department(SALES, "Sales", parent=COMPANY, head=ANNA)
        h.clock.advance(minutes=16)
        await h.say(42, "/team")
        assert 42 in h.services.team._teams
        await h.say(42, "/unlink")
        assert 42 not in h.services.team._teams  # the team cache goes with the link
        await h.send(h.tg.callback(42, f"t:doing:0:{BORIS}", 1))
        await h.send(h.tg.callback(42, "tm:r", 1))
        assert not any(r.method == "tasks.task.list" for r in h.b24.requests)


async def test_russian_team_view(tmp_path: Path) -> None:
    async with team_portal(tmp_path) as h:
        await head(h)
        await h.say(42, "/language ru")
        (text,) = await h.say(42, "/team")
        assert text.startswith("<b>Команда</b>: Sales, Marketing, Sales East · человек: 4")
        assert "Boris Ivanov — просрочено 3 · новых комментариев 5" in text
        assert "Ещё 1: ничего не просрочено, новых комментариев нет" in text


async def test_no_team_views_without_link_verification(tmp_path: Path) -> None:
    async with team_portal(tmp_path, LINK_VERIFICATION="none", ALLOWED_TELEGRAM_USER_IDS="42") as h:
        await h.say(42, "/link 547")
        h.b24.requests.clear()
        assert await h.say(42, "/team") == ["Team views are off on this bot (links are not verified with a code)."]
        assert h.b24.requests == []


async def test_a_heads_digest_ends_with_the_team_line_and_it_can_be_turned_off(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    async with team_portal(tmp_path, clock) as h:
        h.b24.add_user(CARL, "Boris", "Berg", departments=(EAST,))  # two Borises: a last-name initial
        h.b24.set_counters(CARL, "view_all", expired=2, new_comments=0)
        await link(h, 42)
        await link(h, 44, str(OLEG))  # Oleg heads Sales East; his digest is due too
        await h.poll()
        h.b24.requests.clear()
        h.clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        assert await h.services.coordinator.digest_tick() == 2
        await h.flush()
        anna = [t for t in h.tg.texts(42) if t.startswith("<b>Good morning")][-1]
        assert anna.splitlines()[-1] == "<b>Team:</b> 6 overdue across 3 of 4 people (Boris I. 3, Boris B. 2, Dina 1)"
        oleg = [t for t in h.tg.texts(44) if t.startswith("<b>Good morning")][-1]
        assert oleg.splitlines()[-1] == "<b>Team:</b> 3 overdue across 2 of 2 people (Boris 2, Dina 1)"
        # one structure read, one people read for both teams, one counters batch for the unlinked members
        assert h.b24.request_count("department.get") == 1 and h.b24.request_count("user.get") == 1
        assert asked_users(h) - {ANNA, OLEG} == {BORIS, CARL, DINA}
        await h.say(42, "/digest team off")
        assert (await tdb.settings(h.storage, 42)).digest_team is False
        h.b24.set_counters(ANNA, "view_all", expired=1, new_comments=0)  # else her digest is empty and skipped
        h.clock.set(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
        await h.services.coordinator.digest_tick()
        await h.flush()
        sent = [t for t in h.tg.texts(42) if t.startswith("<b>Good morning")]
        assert len(sent) == 2 and "Team:" not in sent[-1]


async def test_a_failed_team_read_leaves_the_line_out_and_the_digest_goes(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    async with team_portal(tmp_path, clock) as h:
        h.b24.set_counters(ANNA, "view_all", expired=1, new_comments=0)
        await link(h, 42)
        h.b24.method_errors["department.get"] = (503, "INTERNAL_SERVER_ERROR", "down")
        h.clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        assert await h.services.coordinator.digest_tick() == 1
        await h.flush()
        digest = [t for t in h.tg.texts(42) if t.startswith("<b>Good morning")][-1]
        assert "Team" not in digest and "Overdue 1" in digest


async def test_a_heads_digest_with_nothing_of_their_own_goes_when_the_team_is_behind(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    async with team_portal(tmp_path, clock) as h:
        await link(h, 42)  # Anna's own counters are all 0; empty digests are skipped
        h.clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        assert await h.services.coordinator.digest_tick() == 1
        h.b24.set_counters(BORIS, "view_all", expired=0, new_comments=0)
        h.b24.set_counters(DINA, "view_all", expired=0, new_comments=0)
        h.clock.set(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
        await h.services.coordinator.digest_tick()
        assert [r["status"] for r in await tdb.digest_log(h.storage, 42)][-1] == "skipped"


async def test_the_team_line_has_a_settings_button(tmp_path: Path) -> None:
    async with team_portal(tmp_path) as h:
        await head(h)
        (text,) = await h.say(42, "/settings")
        assert "Team line in the digest (heads): on" in text
        buttons = [b["callback_data"] for row in h.tg.sent(42)[-1]["reply_markup"]["inline_keyboard"] for b in row]
        assert "s:team_off" in buttons
        await h.send(h.tg.callback(42, "s:team_off", 1))
        assert (await tdb.settings(h.storage, 42)).digest_team is False
        assert "Team line in the digest (heads): off" in edits(h)[-1]
        assert await h.say(42, "/digest team maybe") == ["Say /digest team on or /digest team off.\nExample: <code>/digest team off</code>"]
