"""The tasks behind a counter (SPEC 11) end to end: /tasks, the buttons, paging, the row check, the limits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests import db as tdb
from tests.harness import Harness
from tests.test_linking import ANNA, link
from tests.test_scheduled import alerts, linked, portal

BORIS = 548


def task_portal(tmp_path: Path, **settings: str) -> Harness:
    h = portal(tmp_path, **settings)
    h.b24.derive_counters = True  # counters follow the tasks, as on a portal
    return h


def lists(h: Harness) -> list:
    return [r for r in h.b24.requests if r.method == "tasks.task.list"]


def edits(h: Harness, chat_id: int = 42) -> list[str]:
    return [p["text"] for p in h.tg.sent(chat_id, method="editMessageText")]


def toasts(h: Harness) -> list[str]:
    return [p.get("text", "") for p in h.tg.sent(None, method="answerCallbackQuery")]


async def test_tasks_lists_the_overdue_tasks_of_a_role_with_links_ages_and_projects(tmp_path: Path) -> None:
    async with task_portal(tmp_path) as h:
        now = h.clock.now()
        h.b24.add_task(11, "Quarterly report", deadline=now - timedelta(days=3), responsible=ANNA, group=(7, "Sales"))
        h.b24.add_task(12, "Call the client", deadline=now - timedelta(hours=5), responsible=BORIS, auditors=(ANNA,))
        h.b24.add_task(13, "Not yet due", deadline=now + timedelta(days=1), responsible=ANNA)
        h.b24.add_task(14, "Done already", deadline=now - timedelta(days=1), responsible=ANNA, status=5)
        await linked(h)
        (text,) = await h.say(42, "/tasks")
        assert text.startswith("<b>Overdue: All</b> (2)")
        assert 'href="https://corp.bitrix24.example/workgroups/group/7/tasks/task/view/11/">Quarterly report</a> — overdue by 3 d · Sales' in text
        assert '/company/personal/user/547/tasks/task/view/12/">Call the client</a> — overdue by 5 h' in text
        assert "Not yet due" not in text and "Done already" not in text
        (request,) = lists(h)
        assert request.params["filter"]["MEMBER"] in (ANNA, str(ANNA)) and "IS_MUTED" not in request.params["filter"]
        h.clock.advance(seconds=11)
        (doing,) = await h.say(42, "/tasks doing")
        assert doing.startswith("<b>Overdue: Doing</b> (1)") and "Quarterly report" in doing and "Call the client" not in doing
        assert "RESPONSIBLE_ID" in lists(h)[-1].params["filter"]


async def test_the_counters_button_opens_the_list_in_place_and_pages_of_a_block_cost_nothing(tmp_path: Path) -> None:
    async with task_portal(tmp_path) as h:
        now = h.clock.now()
        for n in range(60):
            h.b24.add_task(100 + n, f"task {n:02d}", deadline=now - timedelta(days=60 - n), responsible=ANNA)
        await linked(h)
        h.clock.advance(seconds=11)
        (counters,) = await h.say(42, "/counters")
        keyboard = h.tg.sent(42)[-1]["reply_markup"]["inline_keyboard"]
        assert keyboard[0][0]["callback_data"] == "t:all:0" and "(60)" in keyboard[0][0]["text"]
        await h.send(h.tg.callback(42, "t:all:0", 1))
        first = edits(h)[-1]
        assert first.startswith("<b>Overdue: All</b> (60)") and "task 00<" in first and "page 1 of 6" in first
        before = len(lists(h))
        await h.send(h.tg.callback(42, "t:all:4", 1))
        assert len(lists(h)) == before and "task 40<" in edits(h)[-1]  # same block of 50: no request
        await h.send(h.tg.callback(42, "t:all:5", 1))
        assert len(lists(h)) == before + 1 and lists(h)[-1].params["start"] in (50, "50")
        assert "task 50<" in edits(h)[-1] and "page 6 of 6" in edits(h)[-1]


async def test_a_portal_that_ignores_the_member_filter_shows_nobodys_tasks_and_tells_admins_once(tmp_path: Path) -> None:
    async with task_portal(tmp_path, ADMIN_TELEGRAM_USER_IDS="1") as h:
        await h.say(1, "/start")
        now = h.clock.now()
        h.b24.add_task(11, "Anna's task", deadline=now - timedelta(days=1), responsible=ANNA)
        h.b24.add_task(12, "Secret of Boris", deadline=now - timedelta(days=2), responsible=BORIS)
        h.b24.ignored_task_filters = {"MEMBER"}
        await linked(h)
        (text,) = await h.say(42, "/tasks")
        assert text.startswith("Task lists are unavailable on this portal")
        h.clock.advance(seconds=11)
        await h.say(42, "/tasks")
        await h.flush()
        told = [t for t in h.tg.texts(1) if "Task lists are off" in t]
        assert len(told) == 1
        assert not any("Secret of Boris" in t for chat in (1, 42) for t in h.tg.texts(chat) + edits(h, chat))


async def test_the_footer_says_when_the_list_and_the_counter_differ(tmp_path: Path) -> None:
    async with task_portal(tmp_path) as h:
        now = h.clock.now()
        h.b24.add_task(11, "One", deadline=now - timedelta(days=1), responsible=ANNA)
        h.b24.add_task(12, "Muted", deadline=now - timedelta(days=1), responsible=ANNA, muted_by=(ANNA,))
        await linked(h)
        h.clock.advance(seconds=11)
        await h.say(42, "/counters")  # expired 1: the muted task is not counted
        (text,) = await h.say(42, "/tasks")
        assert "(2)" in text.splitlines()[0] and "The list has 2, the counter says 1" in text


async def test_nothing_overdue_is_said_with_a_refresh_button(tmp_path: Path) -> None:
    async with task_portal(tmp_path) as h:
        await linked(h)
        (text,) = await h.say(42, "/tasks created")
        assert text.startswith("Nothing overdue for Created by me.")
        assert h.tg.sent(42)[-1]["reply_markup"]["inline_keyboard"][-1][0]["callback_data"] == "tr:created:0"


async def test_a_stale_or_forged_button_shows_nothing(tmp_path: Path) -> None:
    async with task_portal(tmp_path) as h:
        h.b24.add_task(11, "Anna's task", deadline=h.clock.now() - timedelta(days=1), responsible=ANNA)
        await linked(h)
        await h.say(42, "/unlink")
        await h.send(h.tg.callback(42, "t:all:0", 1))
        await h.send(h.tg.callback(43, "t:all:0", 1))  # someone who never linked
        await h.send(h.tg.callback(42, "t:all:0:548", 1))  # a person id smuggled in
        assert edits(h) == [] and edits(h, 43) == [] and lists(h) == []


async def test_tasks_in_russian(tmp_path: Path) -> None:
    async with task_portal(tmp_path) as h:
        h.b24.add_task(11, "Отчёт", deadline=h.clock.now() - timedelta(minutes=30), responsible=ANNA)
        await linked(h)
        await h.say(42, "/language ru")
        (text,) = await h.say(42, "/tasks делаю")
        assert text.startswith("<b>Просрочено: Делаю</b> (1)") and "просрочено на 30 мин" in text


async def test_a_users_reads_past_six_a_minute_get_a_toast_and_the_message_stays(tmp_path: Path) -> None:
    async with task_portal(tmp_path) as h:
        now = h.clock.now()
        for n in range(400):
            h.b24.add_task(1000 + n, f"t{n}", deadline=now - timedelta(days=1, minutes=n), responsible=ANNA)
        await linked(h)
        h.clock.advance(seconds=11)  # the link's counters read is out of the window, but counts in the minute
        await h.say(42, "/tasks")
        for page in (5, 10, 15, 20):  # four more blocks of 50
            await h.send(h.tg.callback(42, f"t:all:{page}", 1))
        shown = len(edits(h))
        await h.send(h.tg.callback(42, "t:all:25", 1))
        assert len(edits(h)) == shown  # refused: the message stays as it was
        assert any(t.startswith("Too many reads for now. Try again in") for t in toasts(h))
        h.clock.advance(seconds=61)
        await h.send(h.tg.callback(42, "t:all:25", 1))
        assert len(edits(h)) == shown + 1


async def test_an_overdue_alert_carries_a_button_that_opens_the_list_as_a_new_message(tmp_path: Path) -> None:
    async with task_portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        h.b24.add_task(11, "Late one", deadline=h.clock.now() - timedelta(hours=2), responsible=ANNA)
        await h.poll()
        (alert,) = alerts(h)
        assert alert["reply_markup"]["inline_keyboard"][-1][0]["callback_data"] == "tn:all"
        before = len(h.tg.texts(42))
        await h.send(h.tg.callback(42, "tn:all", 1))
        new = h.tg.texts(42)[before:]
        assert len(new) == 1 and "Late one" in new[0] and edits(h) == []
        assert (await tdb.user(h.storage, 42)).bitrix_user_id == ANNA


# ---- the digest's task lines ---------------------------------------------------------------------


def digest_portal(tmp_path: Path) -> Harness:
    h = task_portal(tmp_path, ADMIN_TELEGRAM_USER_IDS="1")
    h.clock.set(h.clock.now().replace(hour=8, minute=0))
    return h


async def test_the_digest_shows_the_three_most_overdue_tasks_from_one_extra_request(tmp_path: Path) -> None:
    async with digest_portal(tmp_path) as h:
        h.b24.add_user(BORIS, "Boris", "Ivanov")
        h.b24.set_counters(BORIS, "view_all", new_comments=2)  # not empty, but nothing overdue
        now = h.clock.now()
        for n in range(5):
            h.b24.add_task(20 + n, f"late {n}", deadline=now - timedelta(days=5 - n), responsible=ANNA)
        await link(h, 42)
        await link(h, 43, str(BORIS))  # nothing overdue: no task line read for Boris
        h.clock.set(now.replace(hour=9))
        before = len(h.b24.requests)
        assert await h.services.coordinator.digest_tick() == 2
        await h.flush()
        batches = [r for r in h.b24.requests[before:] if r.method == "batch"]
        assert len(batches) == 2  # roles of both (10 users a batch), then task lines of Anna only
        task_cmds = [c for c in batches[1].params["cmd"].values() if c.startswith("tasks.task.list")]
        assert len(task_cmds) == 1 and "start%5D=-1" not in task_cmds[0] and "start=-1" in task_cmds[0]
        (anna,) = [t for t in h.tg.texts(42) if t.startswith("<b>Good morning")]
        assert "Most overdue:" in anna and "late 0<" in anna and "late 2<" in anna and "late 3<" not in anna
        digest_row = [p for p in h.tg.sent(42) if p["text"].startswith("<b>Good morning")][0]
        assert digest_row["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "tn:all"
        (boris,) = [t for t in h.tg.texts(43) if t.startswith("<b>Good morning")]
        assert "Most overdue:" not in boris


async def test_a_failed_task_list_read_leaves_the_lines_out_and_never_delays_the_digest(tmp_path: Path) -> None:
    async with digest_portal(tmp_path) as h:
        h.b24.add_task(20, "late", deadline=h.clock.now() - timedelta(days=1), responsible=ANNA)
        h.b24.task_list_errors[ANNA] = ("ACCESS_DENIED", "no")
        await link(h, 42)
        h.clock.set(h.clock.now().replace(hour=9))
        assert await h.services.coordinator.digest_tick() == 1
        await h.flush()
        (text,) = [t for t in h.tg.texts(42) if t.startswith("<b>Good morning")]
        assert "Overdue 1" in text and "Most overdue:" not in text


async def test_digest_tasks_off_reads_no_task_lines(tmp_path: Path) -> None:
    async with digest_portal(tmp_path) as h:
        h.b24.add_task(20, "late", deadline=h.clock.now() - timedelta(days=1), responsible=ANNA)
        await link(h, 42)
        await h.say(42, "/digest tasks off")
        h.clock.set(h.clock.now().replace(hour=9))
        before = len(h.b24.requests)
        assert await h.services.coordinator.digest_tick() == 1
        # department.get: the digest asks whether a due user heads a department (SPEC 12, cached 15 min)
        assert [r.method for r in h.b24.requests[before:] if r.method != "department.get"] == ["batch"]
        cmds = next(r for r in reversed(h.b24.requests) if r.method == "batch").params["cmd"].values()
        assert not any(c.startswith("tasks.task.list") for c in cmds)


async def test_odd_rows_from_the_portal_still_make_a_readable_list(tmp_path: Path) -> None:
    from tests.fakes.bitrix import Scripted

    async with task_portal(tmp_path) as h:
        await linked(h)
        past = (h.clock.now() - timedelta(days=2)).isoformat()
        rows = [
            {"id": "1", "title": "", "deadline": past, "status": "3", "responsibleId": str(ANNA), "group": []},
            {"id": "2", "title": "<script>" + "x" * 5000, "deadline": past, "status": "2", "responsibleId": str(ANNA),
             "groupId": "7", "group": {"id": "7", "name": "Sales & <Co>"}},
            {"id": "3", "title": "😀" * 100, "deadline": "next tuesday-ish", "status": "3", "responsibleId": str(ANNA)},
            "not a row",
        ]
        h.b24.push(Scripted(status=200, json={"result": {"tasks": rows}, "total": 3}).only_for(
            lambda method, params: method == "tasks.task.list"))
        (text,) = await h.say(42, "/tasks")
        assert text.startswith("<b>Overdue: All</b> (3)")
        assert ">Task #1</a> — overdue by 2 d" in text
        assert "&lt;script&gt;" + "x" * 70 in text and "<script>" not in text and "Sales &amp; &lt;Co&gt;" in text
        (emoji,) = [line for line in text.splitlines() if "view/3/" in line]
        assert "overdue by" not in emoji and emoji.count("😀") == 79


async def test_digest_tasks_off_while_the_digest_reads_leaves_the_lines_out(tmp_path: Path) -> None:
    from tests.test_overlap import during_read

    async with digest_portal(tmp_path) as h:
        h.b24.add_task(20, "late", deadline=h.clock.now() - timedelta(days=1), responsible=ANNA)
        await link(h, 42)
        h.clock.set(h.clock.now().replace(hour=9))
        queued = await during_read(h, h.services.coordinator.digest_tick(), lambda: h.say(42, "/digest tasks off"))
        await h.flush()
        (text,) = [t for t in h.tg.texts(42) if t.startswith("<b>Good morning")]
        assert queued == 1 and "Overdue 1" in text and "Most overdue:" not in text


async def test_lists_of_two_roles_at_once_on_a_portal_that_ignores_the_filter_tell_the_admins_once(tmp_path: Path) -> None:
    h = task_portal(tmp_path, ADMIN_TELEGRAM_USER_IDS="1")
    async with h:
        await h.say(1, "/start")
        now = h.clock.now()
        h.b24.add_task(11, "Anna's task", deadline=now - timedelta(days=1), responsible=ANNA)
        h.b24.add_task(12, "Secret of Boris", deadline=now - timedelta(days=2), responsible=BORIS, auditors=(BORIS,))
        h.b24.ignored_task_filters = {"MEMBER", "RESPONSIBLE_ID", "AUDITOR"}
        await linked(h)
        async with h.polling():
            answers = await h.together(
                h.tg.message(42, "/tasks"), h.tg.message(42, "/tasks doing"), h.tg.message(42, "/tasks following"),
                answers=3, chat_id=42,
            )
        await h.flush()
        assert all(a.startswith("Task lists are unavailable") for a in answers)
        assert len([t for t in h.tg.texts(1) if "Task lists are off" in t]) == 1
