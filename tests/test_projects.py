"""Project chats (SPEC 13) through the real stack: binding, the offer, the view, the digest, chat life."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.delivery import DeliveryLimiter
from bot.storage import projects as project_store
from tests import db as tdb
from tests.fakes.bitrix import Scripted
from tests.harness import Harness
from tests.test_linking import ANNA, link
from tests.test_scheduled import portal

BORIS = 548
VERA = 549
GROUP = -1001
PROJECT = 12
REFUSAL = "Only a linked owner or moderator of the project can connect it here."


def project_portal(tmp_path: Path, **settings: str) -> Harness:
    """Anna (owner of project 12 'Website'), Boris (member), Vera (moderator); a group with all three."""
    h = portal(tmp_path, **settings)
    h.b24.scopes.add("sonet_group")
    h.b24.add_user(BORIS, "Boris", "Ivanov")
    h.b24.add_user(VERA, "Vera", "Orlova")
    h.b24.add_workgroup(PROJECT, "Website", owner=ANNA, moderators=(VERA,), members=(BORIS,))
    h.tg.add_group(GROUP, {42: "member", 43: "member", 44: "administrator"})
    return h


async def linked_as(h: Harness, telegram_user_id: int, bitrix_user_id: int) -> None:
    """Link a Telegram user to a Bitrix24 user (code flow), digests off so they stay out of the way."""
    await link(h, telegram_user_id, str(bitrix_user_id) if bitrix_user_id != ANNA else str(ANNA))
    await h.say(telegram_user_id, "/digest off")


async def in_group(h: Harness, telegram_user_id: int, text: str, chat_id: int = GROUP, **kwargs: Any) -> list[str]:
    """Send a message in the group; the bot's answers there."""
    return await h.say(telegram_user_id, text, chat_id=chat_id, chat_type="group", **kwargs)


def markup(h: Harness, chat_id: int = GROUP) -> list[list[dict[str, Any]]]:
    return h.tg.sent(chat_id)[-1]["reply_markup"]["inline_keyboard"]


def edits(h: Harness, chat_id: int = GROUP) -> list[str]:
    return [p["text"] for p in h.tg.sent(chat_id, method="editMessageText")]


def toasts(h: Harness) -> list[str]:
    return [p.get("text", "") for p in h.tg.sent(None, method="answerCallbackQuery")]


def sonet(h: Harness) -> list[Any]:
    return [r for r in h.b24.requests if r.method.startswith("sonet_group.")]


async def bound(h: Harness, telegram_user_id: int = 42, bitrix_user_id: int = ANNA, chat_id: int = GROUP) -> None:
    """Link, /project 12 in the group, press Connect."""
    await linked_as(h, telegram_user_id, bitrix_user_id)
    await in_group(h, telegram_user_id, f"/project {PROJECT}", chat_id=chat_id)
    data = markup(h, chat_id)[0][0]["callback_data"]
    await h.send(h.tg.callback(telegram_user_id, data, 7000, chat_id=chat_id))
    assert "now follows" in edits(h, chat_id)[-1]


async def test_the_owner_binds_the_group_with_a_stored_offer_and_connect(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await linked_as(h, 42, ANNA)
        (offer,) = await in_group(h, 42, "/project 12")
        assert "<b>Website</b>" in offer and "Everyone in this chat" in offer and "not open" not in offer
        connect, cancel = markup(h)[0]
        assert connect["text"] == "Connect" and cancel["text"] == "Cancel"
        (stored,) = await tdb.rows(h.storage, "SELECT offer_id, telegram_user_id, group_id FROM project_offers")
        assert connect["callback_data"] == f"pj:c:{stored[0]}" and tuple(stored)[1:] == (42, PROJECT)
        assert {r.params.get("IS_ADMIN") for r in sonet(h) if r.method == "sonet_group.get"} == {"Y"}
        await h.send(h.tg.callback(42, connect["callback_data"], 7000, chat_id=GROUP))
        assert "now follows <b>Website</b>" in edits(h)[-1]
        binding = await project_store.get(h.storage.db, GROUP)
        assert binding is not None and binding.group_id == PROJECT and binding.binder_bitrix_user_id == ANNA
        assert binding.binder_telegram_user_id == 42 and binding.live
        assert await tdb.rows(h.storage, "SELECT * FROM project_offers") == []


async def test_a_moderator_binds_and_a_closed_project_is_announced_in_bold(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        h.b24.workgroups[PROJECT].opened = False
        await linked_as(h, 44, VERA)
        (offer,) = await in_group(h, 44, "/project https://corp.bitrix24.example/workgroups/group/12/")
        assert "<b>This project is not open" in offer
        await h.send(h.tg.callback(44, markup(h)[0][0]["callback_data"], 7000, chat_id=GROUP))
        binding = await project_store.get(h.storage.db, GROUP)
        assert binding is not None and binding.binder_bitrix_user_id == VERA


async def test_a_member_an_unlinked_user_and_a_missing_project_get_the_same_line(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await linked_as(h, 43, BORIS)
        assert await in_group(h, 43, "/project 12") == [REFUSAL]  # plain member
        assert await in_group(h, 44, "/project 12") == [REFUSAL]  # not linked
        assert await in_group(h, 43, "/project 99") == [REFUSAL]  # no such project
        everything = " ".join(h.tg.texts(GROUP))
        assert "Website" not in everything and "Anna" not in everything
        assert await tdb.rows(h.storage, "SELECT * FROM project_offers") == []
        assert await tdb.rows(h.storage, "SELECT * FROM project_bindings") == []


async def test_channels_and_public_groups_are_refused(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await linked_as(h, 42, ANNA)
        h.tg.add_group(-1002, {42: "administrator"}, chat_type="channel")
        h.tg.add_group(-1003, {42: "member"}, chat_type="supergroup", username="public_team")
        for chat_id in (-1002, -1003):
            (answer,) = await in_group(h, 42, "/project 12", chat_id=chat_id)
            assert "without a public @username" in answer
        assert sonet(h) == [] and await tdb.rows(h.storage, "SELECT * FROM project_offers") == []


async def test_only_the_callers_press_counts_and_an_offer_lapses_after_ten_minutes(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await linked_as(h, 42, ANNA)
        await linked_as(h, 44, VERA)
        await in_group(h, 42, "/project 12")
        data = markup(h)[0][0]["callback_data"]
        await h.send(h.tg.callback(44, data, 7000, chat_id=GROUP))  # Vera presses Anna's offer
        assert toasts(h)[-1] == "Only the person who sent /project can answer this."
        assert await project_store.get(h.storage.db, GROUP) is None and edits(h) == []
        h.clock.advance(minutes=10, seconds=1)
        await h.send(h.tg.callback(42, data, 7000, chat_id=GROUP))
        assert "lapsed" in edits(h)[-1] and await project_store.get(h.storage.db, GROUP) is None
        assert await tdb.rows(h.storage, "SELECT * FROM project_offers") == []


async def test_cancel_connects_nothing(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await linked_as(h, 42, ANNA)
        await in_group(h, 42, "/project 12")
        await h.send(h.tg.callback(42, markup(h)[0][1]["callback_data"], 7000, chat_id=GROUP))
        assert "Cancelled" in edits(h)[-1] and await project_store.get(h.storage.db, GROUP) is None


async def test_the_view_lists_overdue_tasks_with_people_and_costs_one_read_per_fifty(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        now = h.clock.now()
        for n in range(55):
            h.b24.add_task(
                100 + n, f"task {n:02d}", deadline=now - timedelta(days=60 - n), responsible=BORIS if n % 5 else VERA,
                group=(PROJECT, "Website"),
            )
        h.b24.add_task(300, "Not in the project", deadline=now - timedelta(days=1), responsible=BORIS)
        h.b24.add_task(301, "Done", deadline=now - timedelta(days=1), responsible=BORIS, status=5, group=(PROJECT, "Website"))
        before = len(h.b24.requests)
        (view,) = await in_group(h, 43, "/project")
        assert view.startswith("<b>Website</b>: 55 overdue")
        assert 'href="https://corp.bitrix24.example/workgroups/group/12/tasks/task/view/100/">task 00</a>' in view
        assert "overdue by 60 d · Vera Orlova" in view and "task 10<" not in view  # the 10 most overdue
        assert "By person: Boris 44 · Vera 11" in view and "Not in the project" not in view
        new = h.b24.requests[before:]
        assert [r.method for r in new] == ["tasks.task.list", "tasks.task.list", "user.get"]
        assert new[0].params["filter"]["GROUP_ID"] in (PROJECT, str(PROJECT))
        assert markup(h)[0][0]["callback_data"] == "pj:r"
        # Inside 30 s the view is answered from that read: nothing more crosses the wire.
        h.clock.advance(seconds=20)
        await in_group(h, 44, "/project")
        await h.send(h.tg.callback(43, "pj:r", 7000, chat_id=GROUP))
        assert len(h.b24.requests) == before + 3 and "55 overdue" in edits(h)[-1]


async def test_two_chats_on_one_project_share_a_read(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        h.tg.add_group(-1009, {44: "member"})
        await bound(h)
        await bound(h, 44, VERA, chat_id=-1009)
        h.b24.add_task(100, "Late", deadline=h.clock.now() - timedelta(days=1), responsible=BORIS, group=(PROJECT, "Website"))
        before = h.b24.request_count("tasks.task.list")
        await in_group(h, 42, "/project")
        await in_group(h, 44, "/project", chat_id=-1009)
        assert h.b24.request_count("tasks.task.list") == before + 1
        assert "1 overdue" in h.tg.texts(-1009)[-1] and "1 overdue" in h.tg.texts(GROUP)[-1]


async def test_a_row_of_another_project_shows_nothing(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        h.b24.add_task(100, "Secret", deadline=h.clock.now() - timedelta(days=1), responsible=BORIS, group=(77, "Other"))
        h.b24.ignored_task_filters = {"GROUP_ID"}
        (answer,) = await in_group(h, 42, "/project")
        assert "Secret" not in answer and answer.startswith("Task lists are unavailable")


async def test_hostile_project_arguments_are_refused_before_any_request(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await linked_as(h, 42, ANNA)
        hostile = [
            "/project https://evil.example/workgroups/group/12/",
            "/project " + "9" * 30,
            "/project <b>12</b>",
            "/project " + "x" * 4000,
            "/project 12 13",
            "/project https://corp.bitrix24.example/company/personal/user/547/",
        ]
        for text in hostile:
            (answer,) = await in_group(h, 42, text)
            assert "<b>12</b>" not in answer and "Connect" not in answer, text
        assert sonet(h) == []
        assert await tdb.rows(h.storage, "SELECT * FROM project_offers") == []


async def test_without_the_sonet_group_scope_the_administrator_is_named(tmp_path: Path) -> None:
    async with project_portal(tmp_path, ADMIN_TELEGRAM_USER_IDS="1") as h:
        await h.say(1, "/start")
        h.b24.scopes.discard("sonet_group")
        await linked_as(h, 42, ANNA)
        (answer,) = await in_group(h, 42, "/project 12")
        assert "must add the sonet_group scope" in answer
        await h.flush()
        assert not any("sonet_group" in t for t in h.tg.texts(1))  # no admin notice


async def test_in_private_project_explains_it_works_in_a_group(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        (answer,) = await h.say(42, "/project 12")
        assert "works in a group" in answer


async def test_project_chats_are_off_with_link_verification_none(tmp_path: Path) -> None:
    async with project_portal(tmp_path, LINK_VERIFICATION="none", ALLOWED_TELEGRAM_USER_IDS="42 43 44") as h:
        (answer,) = await in_group(h, 42, "/project 12")
        assert "off" in answer and sonet(h) == []


# ---- the project digest ----------------------------------------------------------------------------


def digests_in(h: Harness, chat_id: int = GROUP) -> list[str]:
    return [t for t in h.tg.texts(chat_id) if t.startswith("☀️")]


async def tick(h: Harness) -> int:
    queued = await h.services.projects.digest_tick()
    await h.flush()
    return queued


def late(h: Harness, n: int, task_id: int, responsible: int = BORIS) -> None:
    h.b24.add_task(
        task_id, f"late {task_id}", deadline=h.clock.now() - timedelta(days=n), responsible=responsible,
        group=(PROJECT, "Website"),
    )


async def test_the_digest_goes_once_per_local_date_across_a_restart_with_the_change(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)  # Monday 06:00 UTC; defaults from Anna: 09:00 UTC on weekdays
        late(h, 3, 100)
        late(h, 1, 101, responsible=VERA)
        assert await tick(h) == 0
        h.clock.advance(hours=3)
        assert await tick(h) == 1
        (digest,) = digests_in(h)
        assert digest.startswith("☀️ <b>Website</b>: 2 overdue") and "since the last digest" not in digest
        assert "By person: Boris 1 · Vera 1" in digest and "/workgroups/group/12/tasks/task/view/100/" in digest
        assert await tick(h) == 0
        (row,) = await project_store.log_rows(h.storage.db, GROUP)
        assert (row["local_date"], row["status"], row["overdue"]) == ("2026-03-02", "sent", 2)
    clock = h.clock
    clock.advance(minutes=30)
    async with project_portal(tmp_path, clock=clock) as h2:  # a restart on the same database
        assert await tick(h2) == 0 and digests_in(h2) == []
        clock.advance(days=1)
        late(h2, 2, 102)
        late(h2, 2, 103)
        late(h2, 2, 104)
        assert await tick(h2) == 1
        (digest,) = digests_in(h2)
        assert digest.startswith("☀️ <b>Website</b>: 3 overdue (+1 since the last digest)")


async def test_an_empty_project_digest_is_skipped_unless_asked_for(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        h.clock.advance(hours=3)
        assert await tick(h) == 0 and digests_in(h) == []
        assert [r["status"] for r in await project_store.log_rows(h.storage.db, GROUP)] == ["skipped"]
        assert "empty digests sent" in (await in_group(h, 42, "/project digest empty on"))[0]
        h.clock.advance(days=1)
        assert await tick(h) == 1 and digests_in(h)[-1] == "☀️ <b>Website</b>: nothing overdue."


async def test_a_digest_missed_by_more_than_two_hours_is_recorded_as_skipped(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        late(h, 1, 100)
        h.clock.advance(hours=5, minutes=1)  # 11:01: more than 2 hours after 09:00
        assert await tick(h) == 0 and digests_in(h) == []
        assert [r["status"] for r in await project_store.log_rows(h.storage.db, GROUP)] == ["skipped"]


async def test_digest_settings_by_an_owner_only_and_a_new_time_never_catches_up(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        await linked_as(h, 43, BORIS)
        assert await in_group(h, 43, "/project digest 7:00") == [
            "Only an owner or moderator of the project, or a bot administrator, can change this."
        ]
        (saved,) = await in_group(h, 42, "/project digest 5:30 daily")
        assert "05:30" in saved
        late(h, 1, 100)
        h.clock.advance(minutes=1)
        assert await tick(h) == 0  # 05:30 passed before the change was saved
        (ru,) = await in_group(h, 42, "/project language ru")
        assert ru.startswith("Сохранено")
        h.clock.advance(days=1, minutes=-30)  # Tuesday 05:31
        assert await tick(h) == 1 and digests_in(h)[-1].startswith("☀️ <b>Website</b>: просрочено 1")


async def test_the_binder_demoted_suspends_the_chat_once_then_a_moderator_takes_over(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        late(h, 1, 100)
        h.b24.workgroups[PROJECT].owner = VERA  # Anna is no longer owner or moderator
        h.b24.workgroups[PROJECT].moderators = set()
        h.b24.workgroups[PROJECT].members.add(ANNA)
        h.clock.advance(hours=3)
        assert await tick(h) == 0
        assert await tick(h) == 0
        told = [t for t in h.tg.texts(GROUP) if "paused" in t]
        assert len(told) == 1 and digests_in(h) == []
        binding = await project_store.get(h.storage.db, GROUP)
        assert binding is not None and binding.suspended
        assert "paused" in (await in_group(h, 43, "/project"))[0]
        await linked_as(h, 44, VERA)
        (offer,) = await in_group(h, 44, "/project 12")
        await h.send(h.tg.callback(44, markup(h)[0][0]["callback_data"], 7000, chat_id=GROUP))
        binding = await project_store.get(h.storage.db, GROUP)
        assert binding is not None and binding.live and binding.binder_bitrix_user_id == VERA
        assert await tick(h) == 1 and digests_in(h)[-1].startswith("☀️ <b>Website</b>: 1 overdue")


async def test_a_binder_who_left_the_chat_suspends_it(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        h.tg.chats[GROUP]["members"][42] = "left"
        h.clock.advance(hours=3)
        assert await tick(h) == 0
        assert any("paused" in t for t in h.tg.texts(GROUP))
        assert h.tg.sent(None, method="getChatMember")[-1]["user_id"] in (42, "42")


async def test_forget_suspends_the_bindings_the_user_made(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        await h.say(42, "/forget")
        await h.flush()
        binding = await project_store.get(h.storage.db, GROUP)
        assert binding is not None and binding.suspended
        assert sum("paused" in t for t in h.tg.texts(GROUP)) == 1


async def test_project_off_ends_the_binding_for_an_owner_and_stats_lists_bindings(tmp_path: Path) -> None:
    async with project_portal(tmp_path, ADMIN_TELEGRAM_USER_IDS="1") as h:
        await bound(h)
        (stats,) = await h.say(1, "/stats")
        assert "Project chats: 1" in stats and f"chat {GROUP}: Website (#12), binder {ANNA}, active" in stats
        await linked_as(h, 43, BORIS)
        assert "Only an owner" in (await in_group(h, 43, "/project off"))[0]
        assert await project_store.get(h.storage.db, GROUP) is not None
        late(h, 1, 100)
        h.clock.advance(hours=3)
        assert await h.services.projects.digest_tick() == 1  # queued, not yet sent
        (admin_off,) = await h.say(1, f"/project off {GROUP}")
        assert "no longer follows" in admin_off and await project_store.get(h.storage.db, GROUP) is None
        await h.flush()
        assert digests_in(h) == []  # what was queued to the chat is withdrawn with the binding


# ---- chat life -------------------------------------------------------------------------------------


async def test_removed_from_the_chat_and_added_back(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        late(h, 1, 100)
        await h.send(h.tg.group_member(GROUP, "left", by=44))
        binding = await project_store.get(h.storage.db, GROUP)
        assert binding is not None and binding.removed
        h.clock.advance(hours=3)
        assert await tick(h) == 0
        await h.send(h.tg.group_member(GROUP, "member", by=44))
        binding = await project_store.get(h.storage.db, GROUP)
        assert binding is not None and binding.live
        assert await tick(h) == 1 and len(digests_in(h)) == 1


async def test_a_403_on_send_makes_the_binding_inactive(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        late(h, 1, 100)
        h.tg.blocked_chats.add(GROUP)
        h.clock.advance(hours=3)
        assert await tick(h) == 1
        binding = await project_store.get(h.storage.db, GROUP)
        assert binding is not None and binding.removed
        assert [r["status"] for r in await project_store.log_rows(h.storage.db, GROUP)] == ["failed"]


async def test_migration_to_a_supergroup_moves_the_binding_its_log_and_a_queued_digest(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        late(h, 1, 100)
        h.clock.advance(hours=3)
        assert await h.services.projects.digest_tick() == 1  # queued, not sent yet
        h.tg.migrate(GROUP, -100777)
        await h.flush()
        assert digests_in(h, GROUP) == [] and len(digests_in(h, -100777)) == 1
        assert await project_store.get(h.storage.db, GROUP) is None
        moved = await project_store.get(h.storage.db, -100777)
        assert moved is not None and moved.group_id == PROJECT
        (row,) = await project_store.log_rows(h.storage.db, -100777)
        assert row["status"] == "sent"
        assert h.tg.attempts(GROUP) and h.tg.attempts(GROUP)[-1].startswith("☀️")  # tried once there, refused
        h.clock.advance(minutes=5)
        assert await tick(h) == 0  # the log moved with it: still once per date


async def test_the_service_message_of_a_migration_moves_the_binding(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        await h.send(h.tg.migration(GROUP, -100778, 42))
        assert await project_store.get(h.storage.db, -100778) is not None
        assert await project_store.get(h.storage.db, GROUP) is None


async def test_a_forum_chat_gets_its_digest_in_the_topic_where_connect_was_pressed(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        h.tg.add_group(-1005, {42: "member"}, chat_type="supergroup", is_forum=True)
        await linked_as(h, 42, ANNA)
        await in_group(h, 42, "/project 12", chat_id=-1005, thread_id=9)
        assert h.tg.sent(-1005)[-1]["message_thread_id"] in (9, "9")
        await h.send(h.tg.callback(42, markup(h, -1005)[0][0]["callback_data"], 7000, chat_id=-1005, thread_id=9))
        late(h, 1, 100)
        h.clock.advance(hours=3)
        assert await tick(h) == 1
        assert h.tg.sent(-1005)[-1]["message_thread_id"] in (9, "9") and h.tg.texts(-1005)[-1].startswith("☀️")


async def test_anonymous_admins_and_commands_to_other_bots_get_nothing(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await linked_as(h, 42, ANNA)
        sender_chat = {"id": GROUP, "type": "group", "title": "Team"}
        (answer,) = await in_group(h, 42, "/project 12", sender_chat=sender_chat)
        assert "on behalf of a chat" in answer
        assert await in_group(h, 42, "/project@other_bot 12") == []
        assert await in_group(h, 42, "/counters@other_bot") == []
        assert await in_group(h, 42, "/counters") == ["Write to me in private: I never show personal data in a group."]
        assert sonet(h) == []


async def test_only_the_three_project_buttons_work_in_groups(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        before = len(h.b24.requests)
        await h.send(h.tg.callback(42, "c:every", 7000, chat_id=GROUP))
        await h.send(h.tg.callback(42, "t:all:0", 7000, chat_id=GROUP))
        assert len(h.b24.requests) == before and len(edits(h)) == 1  # only Connect's edit


async def test_a_project_ends_only_after_two_empty_reads_a_day_apart_and_errors_never_end_it(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        h.clock.advance(days=1)
        h.b24.push(Scripted.error(503, "INTERNAL_SERVER_ERROR"), times=10)
        assert await h.services.projects.recheck() == 0
        h.b24.script.clear()
        binding = await project_store.get(h.storage.db, GROUP)
        assert binding is not None and binding.gone_since is None
        del h.b24.workgroups[PROJECT]
        h.clock.advance(days=1)
        assert await h.services.projects.recheck() == 0
        binding = await project_store.get(h.storage.db, GROUP)
        assert binding is not None and binding.gone_since is not None
        h.clock.advance(hours=12)
        assert await h.services.projects.recheck() == 0  # not checked again before a day has passed
        h.clock.advance(hours=12)
        assert await h.services.projects.recheck() == 1
        await h.flush()
        assert await project_store.get(h.storage.db, GROUP) is None
        assert any("no longer exists" in t for t in h.tg.texts(GROUP))


async def test_an_archived_project_pauses_the_digest_and_says_so_once(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        late(h, 1, 100)
        h.b24.workgroups[PROJECT].closed = True
        h.clock.advance(hours=3)
        assert await tick(h) == 0
        h.clock.advance(days=1)
        assert await tick(h) == 0
        assert sum("archived" in t for t in h.tg.texts(GROUP)) == 1 and digests_in(h) == []
        h.b24.workgroups[PROJECT].closed = False
        h.clock.advance(days=1)
        assert await tick(h) == 1


# ---- delivery to groups ----------------------------------------------------------------------------


async def test_the_limiter_holds_a_group_to_twenty_messages_a_minute_and_private_chats_are_not_held() -> None:
    now = [1000.0]
    limiter = DeliveryLimiter(overall_per_second=1000.0, per_chat_interval=0.0, monotonic=lambda: now[0])
    for _ in range(20):
        now[0] += 0.5
        await asyncio.wait_for(limiter.acquire(GROUP, True), 0.5)
    for _ in range(25):
        now[0] += 0.01
        await asyncio.wait_for(limiter.acquire(42, True), 0.5)  # a private chat: no per-minute cap
    waiting = asyncio.ensure_future(limiter.acquire(GROUP, False))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # the 21st message within a minute waits, interactive or not
    waiting.cancel()
    now[0] += 50.6  # a minute after the first of the twenty
    await asyncio.wait_for(limiter.acquire(GROUP, True), 0.5)


# ---- overlap ---------------------------------------------------------------------------------------


async def test_two_connects_overlapping_leave_one_project_in_the_chat(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        h.b24.add_workgroup(13, "Mobile", owner=VERA)
        await linked_as(h, 42, ANNA)
        await linked_as(h, 44, VERA)
        await in_group(h, 42, "/project 12")
        anna = markup(h)[0][0]["callback_data"]
        await in_group(h, 44, "/project 13")
        vera = markup(h)[0][0]["callback_data"]
        held = Scripted.held().only_for(lambda method, params: method == "sonet_group.user.get" and str(params.get("ID")) == "12")
        h.b24.push(held)
        async with h.polling():
            h.tg.push_many(h.tg.callback(42, anna, 7001, chat_id=GROUP), h.tg.callback(44, vera, 7002, chat_id=GROUP))
            assert await asyncio.to_thread(held.arrived.wait, 5)  # Anna's Connect has read, not yet decided
            assert await asyncio.to_thread(h.tg.wait_for, lambda: len(edits(h)) == 1)
            assert "now follows <b>Mobile</b>" in edits(h)[-1]
            held.gate.set()
            assert await asyncio.to_thread(h.tg.wait_for, lambda: len(edits(h)) == 2)
        assert "already follows Mobile" in edits(h)[-1]
        binding = await project_store.get(h.storage.db, GROUP)
        assert binding is not None and binding.group_id == 13 and binding.binder_bitrix_user_id == VERA
        assert await tdb.rows(h.storage, "SELECT * FROM project_offers") == []


async def test_project_off_while_the_digest_reads_sends_no_digest(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        late(h, 1, 100)
        h.clock.advance(hours=3)
        held = Scripted.held().only_for(lambda method, params: method == "tasks.task.list")
        h.b24.push(held)
        digest = asyncio.ensure_future(h.services.projects.digest_tick())
        assert await asyncio.to_thread(held.arrived.wait, 5)
        assert "no longer follows" in (await in_group(h, 42, "/project off"))[0]
        held.gate.set()
        assert await digest == 0
        await h.flush()
        assert digests_in(h) == [] and await tdb.rows(h.storage, "SELECT * FROM project_digest_log") == []
        assert [r for r in await tdb.outbox_rows(h.storage) if r["kind"] == "project_digest"] == []


async def test_a_project_digest_in_a_spring_forward_gap_fires_shifted_by_the_gap(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await bound(h)
        await in_group(h, 42, "/project timezone America/New_York")
        await in_group(h, 42, "/project digest 2:30 daily")
        late(h, 1, 100)
        h.clock.advance(days=6, hours=1, minutes=29)  # Sunday 8 March 07:29 UTC: 02:30 local does not exist today
        assert await tick(h) == 0  # only Saturday's, long past: recorded as skipped
        h.clock.advance(minutes=1)  # 07:30 UTC = 03:30 EDT: 02:30 shifted by the gap
        assert await tick(h) == 1
        dates = [(r["local_date"], r["status"]) for r in await project_store.log_rows(h.storage.db, GROUP)]
        assert dates == [("2026-03-07", "skipped"), ("2026-03-08", "sent")]


async def test_at_most_ten_project_tries_an_hour_per_person(tmp_path: Path) -> None:
    async with project_portal(tmp_path) as h:
        await linked_as(h, 43, BORIS)
        for n in range(10):
            assert await in_group(h, 43, f"/project {20 + n}") == [REFUSAL]
        before = len(sonet(h))
        (answer,) = await in_group(h, 43, "/project 12")
        assert "Too many /project tries" in answer and len(sonet(h)) == before
        h.clock.advance(hours=1, seconds=1)
        assert await in_group(h, 43, "/project 12") == [REFUSAL]
