"""/tasks and the overdue-list buttons (SPEC 11): the tasks behind a counter, a page of 10 at a time."""

from __future__ import annotations

import logging

from telegram import InlineKeyboardMarkup, Update

from bot import parsing, tasklist
from bot.bitrix import Counters
from bot.errors import BitrixError
from bot.handlers.core import Caller, bitrix_failed, caller, linked_caller, parse_error_answer, query_of, reply
from bot.handlers.counters import edit_in_place
from bot.reader import TooManyReads
from bot.render import ROLE_SHORT
from bot.services import BotContext
from bot.storage import alerts
from bot.tasks import TaskListsUnavailable
from bot.texts import t

log = logging.getLogger(__name__)


async def _list_message(
    context: BotContext, who: Caller, role: str, page: int, *, refresh: bool
) -> tuple[str, InlineKeyboardMarkup]:
    """Read (or reuse) the page and render it; raises BitrixError, TaskListsUnavailable, TooManyReads."""
    services = context.services
    assert who.user is not None and who.user.bitrix_user_id is not None
    viewer = who.user.bitrix_user_id
    view = await services.task_lists.page(viewer, role, page, refresh=refresh)
    text = tasklist.render_task_page(
        who.lang, role, view.block, block_start=view.block_start, page=view.page, total=view.total,
        counter=await _last_counter(context, who, role), portal_url=services.settings.bitrix24_portal_url,
        viewer_bitrix_id=viewer, now=services.clock.now(),
    )
    return text, tasklist.task_keyboard(who.lang, role, view.page, view.total, back_to_counters=True)


async def _last_counter(context: BotContext, who: Caller, role: str) -> int | None:
    """The `expired` counter last read for the role: /counters' read, else the poll's view_all."""
    assert who.user is not None and who.user.bitrix_user_id is not None
    counters = context.services.reader.last(who.user.bitrix_user_id)
    value = counters.get(role) if counters is not None else None
    if isinstance(value, Counters):
        return value.get("expired")
    if role == "view_all":
        snapshot = await alerts.snapshot(context.services.storage.db, who.telegram_user_id)
        if snapshot is not None and snapshot[0] is not None:
            return snapshot[0].get("expired", 0)
    return None


async def tasks_command(update: Update, context: BotContext) -> None:
    """Lists the overdue tasks of a role (all roles by default), ten a page, most overdue first."""
    who = await linked_caller(update, context)
    if who is None:
        return
    try:
        role = parsing.parse_tasks_role(context.args or [])
    except parsing.ParseError as err:
        await parse_error_answer(update, who.lang, err)
        return
    await _send_list(update, context, who, role)


async def _send_list(update: Update, context: BotContext, who: Caller, role: str) -> None:
    try:
        text, markup = await _list_message(context, who, role, 0, refresh=True)
    except BitrixError as err:
        await bitrix_failed(update, who.lang, err)
        return
    except TaskListsUnavailable:
        await reply(update, t(who.lang, "tasks_unavailable"))
        return
    except TooManyReads as err:
        await reply(update, t(who.lang, "reads_too_many", seconds=round(err.retry_in)))
        return
    await reply(update, text, markup)


async def tasks_button(update: Update, context: BotContext) -> None:
    """Page, refresh and "Overdue: <role>" buttons: edit the message in place; the viewer is the presser's link."""
    query = query_of(update)
    parsed = tasklist.parse_callback(query.data or "")
    who = await caller(update, context)
    if parsed is None or not who.linked or who.user is None or who.user.bitrix_user_id is None:
        await query.answer(t(who.lang, "not_linked") if not who.linked else None)
        return  # forged or stale (after /unlink, /forget, a moved link): nothing is shown
    role, page, refresh, person = parsed
    if person is not None:
        await person_list_button(update, context, who, page, refresh, person)
        return
    wait = context.services.task_lists.refused(who.user.bitrix_user_id, role, page, refresh=refresh)
    if wait is not None:
        await query.answer(t(who.lang, "reads_too_many", seconds=round(wait)))  # the message stays as it is
        return
    await query.answer()
    try:
        text, markup = await _list_message(context, who, role, page, refresh=refresh)
    except BitrixError as err:
        await bitrix_failed(update, who.lang, err)
        return
    except TaskListsUnavailable:
        await edit_in_place(query, t(who.lang, "tasks_unavailable"), None)
        return
    except TooManyReads:
        return  # another read took the last request between the check and this one: the message stays
    await edit_in_place(query, text, markup)


async def tasks_new_button(update: Update, context: BotContext) -> None:
    """The button under an alert or a digest: the list as a new message, so the message it sits under stays."""
    query = query_of(update)
    short = (query.data or "").partition(":")[2]
    role = {s: r for r, s in ROLE_SHORT.items()}.get(short)
    who = await caller(update, context)
    if role is None or not who.linked:
        await query.answer(t(who.lang, "not_linked") if not who.linked else None)
        return
    await query.answer()
    await _send_list(update, context, who, role)


async def person_list_button(
    update: Update, context: BotContext, who: Caller, page: int, refresh: bool, person: int
) -> None:
    """A team member's button (SPEC 12): their `doing` list, only while the presser heads them (checked on this press)."""
    from bot.team import NotAHead, TeamScopeMissing, TeamUnavailable

    query = query_of(update)
    services = context.services
    assert who.user is not None and who.user.bitrix_user_id is not None
    viewer = who.user.bitrix_user_id
    role = "view_role_responsible"
    wait = services.task_lists.refused(person, role, page, refresh=refresh, viewer=viewer)
    if wait is not None:
        await query.answer(t(who.lang, "reads_too_many", seconds=round(wait)))
        return
    try:
        member = await services.team.member(who.telegram_user_id, viewer, person)
    except (BitrixError, TeamScopeMissing, TeamUnavailable, NotAHead):
        member = None  # authorization could not be confirmed: nothing is shown
    if member is None:
        log.info("telegram_user_id=%d pressed a team button for someone outside their team", who.telegram_user_id)
        await query.answer(t(who.lang, "team_not_member"))
        return
    await query.answer()
    try:
        view = await services.task_lists.page(person, role, page, refresh=refresh, viewer=viewer)
    except BitrixError as err:
        await bitrix_failed(update, who.lang, err)
        return
    except TaskListsUnavailable:
        await edit_in_place(query, t(who.lang, "tasks_unavailable"), None)
        return
    except TooManyReads:
        return
    text = tasklist.render_task_page(
        who.lang, role, view.block, block_start=view.block_start, page=view.page, total=view.total, counter=None,
        portal_url=services.settings.bitrix24_portal_url, viewer_bitrix_id=viewer, now=services.clock.now(),
    )
    text = t(who.lang, "team_person_title", name=member.full_name) + text
    await edit_in_place(
        query, text, tasklist.task_keyboard(who.lang, role, view.page, view.total, back_to_counters=False, person=person)
    )
