"""/team and its buttons (SPEC 12): a department head's people and their counters."""

from __future__ import annotations

import logging

from telegram import InlineKeyboardMarkup, Update

from bot import teamview
from bot.errors import BitrixError
from bot.handlers.core import Caller, bitrix_failed, caller, linked_caller, query_of, reply
from bot.handlers.counters import edit_in_place
from bot.reader import TooManyReads
from bot.services import BotContext
from bot.team import NotAHead, TeamScopeMissing, TeamUnavailable, TeamViewsOff
from bot.texts import t

log = logging.getLogger(__name__)


async def _team_message(context: BotContext, who: Caller, *, refresh: bool) -> tuple[str, InlineKeyboardMarkup | None]:
    """The team view or the one line that says why there is none; raises BitrixError and TooManyReads."""
    assert who.user is not None and who.user.bitrix_user_id is not None
    try:
        read = await context.services.team.view(who.telegram_user_id, who.user.bitrix_user_id, refresh=refresh)
    except TeamViewsOff:
        return t(who.lang, "team_off"), None
    except TeamScopeMissing:
        return t(who.lang, "team_scope_missing"), None
    except NotAHead:
        context.services.team.forget(who.telegram_user_id)
        return t(who.lang, "team_not_head"), None
    except TeamUnavailable:
        return t(who.lang, "team_unavailable"), None
    return teamview.render_team(who.lang, read.value), teamview.team_keyboard(who.lang, read.value)


async def team_command(update: Update, context: BotContext) -> None:
    """Shows the people of the departments the user heads, most overdue first."""
    who = await linked_caller(update, context)
    if who is None:
        return
    try:
        text, markup = await _team_message(context, who, refresh=True)
    except BitrixError as err:
        await bitrix_failed(update, who.lang, err)
        return
    except TooManyReads as err:
        await reply(update, t(who.lang, "reads_too_many", seconds=round(err.retry_in)))
        return
    await reply(update, text, markup)


async def team_button(update: Update, context: BotContext) -> None:
    """Refresh (tm:r) and back-to-team (tm:v): edit the message in place; the viewer is the presser's link."""
    query = query_of(update)
    who = await caller(update, context)
    data = query.data or ""
    if data not in ("tm:r", "tm:v") or not who.linked or who.user is None or who.user.bitrix_user_id is None:
        await query.answer(t(who.lang, "not_linked") if not who.linked else None)
        return
    refresh = data == "tm:r"
    wait = context.services.team.refused(who.user.bitrix_user_id) if refresh else None
    if wait is not None:
        await query.answer(t(who.lang, "reads_too_many", seconds=round(wait)))
        return
    await query.answer()
    try:
        text, markup = await _team_message(context, who, refresh=refresh)
    except BitrixError as err:
        await bitrix_failed(update, who.lang, err)
        return
    except TooManyReads:
        return
    await edit_in_place(query, text, markup)
