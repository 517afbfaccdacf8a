"""/counters and its role and Refresh buttons (SPEC section 5)."""

from __future__ import annotations

import logging
from typing import Any

from telegram import InlineKeyboardMarkup, Update
from telegram.error import BadRequest

from bot import parsing, render
from bot.errors import BitrixError
from bot.handlers.core import bitrix_failed, caller, linked_caller, parse_error_answer, query_of, reply
from bot.model import ROLE_ALIASES, ROLES, UserSettings
from bot.reader import TooManyReads
from bot.services import BotContext
from bot.storage import settings as user_settings
from bot.texts import t

log = logging.getLogger(__name__)


def _roles_for(short: str) -> tuple[str, ...]:
    return ROLES if short == render.EVERY_ROLE else (ROLE_ALIASES[short],)


async def _counters_message(
    context: BotContext, lang: str, user_tid: int, bitrix_user_id: int, full_name: str, short: str
) -> tuple[str, InlineKeyboardMarkup]:
    services = context.services
    reading = await services.reader.read(bitrix_user_id)
    settings = await user_settings.get(services.storage.db, user_tid) or UserSettings(
        timezone=services.settings.default_timezone
    )
    text = render.render_counters(
        lang,
        reading.value,
        _roles_for(short),
        full_name=full_name,
        read_at=reading.read_at_utc().astimezone(settings.tz()),
        cached=reading.cached,
        portal_url=services.settings.bitrix24_portal_url,
        bitrix_user_id=bitrix_user_id,
    )
    return text, render.counters_keyboard(lang, short, reading.value, _roles_for(short))


async def send_counters(
    update: Update, context: BotContext, lang: str, user_tid: int, bitrix_user_id: int, full_name: str, short: str
) -> None:
    """Read and send the counters message (a Bitrix24 failure is explained, never a traceback)."""
    try:
        text, markup = await _counters_message(context, lang, user_tid, bitrix_user_id, full_name, short)
    except BitrixError as err:
        await bitrix_failed(update, lang, err)
        return
    except TooManyReads as err:
        await reply(update, t(lang, "reads_too_many", seconds=round(err.retry_in)))
        return
    await reply(update, text, markup)


async def counters_command(update: Update, context: BotContext) -> None:
    """Shows every counter of every role (or one role) in one message, from one batch request."""
    who = await linked_caller(update, context)
    if who is None or who.user is None or who.user.bitrix_user_id is None:
        return
    try:
        role = parsing.parse_counters_role(context.args or [])
    except parsing.ParseError as err:
        await parse_error_answer(update, who.lang, err)
        return
    short = render.ROLE_SHORT[role] if role else render.EVERY_ROLE
    await send_counters(update, context, who.lang, who.telegram_user_id, who.user.bitrix_user_id, who.user.full_name or "", short)


async def counters_button(update: Update, context: BotContext) -> None:
    """Role and Refresh buttons: edit the counters message in place."""
    query = query_of(update)
    short = (query.data or "").partition(":")[2]
    who = await caller(update, context)
    user = who.user
    if short not in ROLE_ALIASES and short != render.EVERY_ROLE or user is None or user.bitrix_user_id is None:
        await query.answer(t(who.lang, "not_linked") if not who.linked else None)
        return
    wait = context.services.reader.refused(user.bitrix_user_id)
    if wait is not None:
        await query.answer(t(who.lang, "reads_too_many", seconds=round(wait)))  # the message stays as it is
        return
    await query.answer()
    try:
        text, markup = await _counters_message(
            context, who.lang, who.telegram_user_id, user.bitrix_user_id, user.full_name or "", short
        )
    except BitrixError as err:
        await bitrix_failed(update, who.lang, err)
        return
    except TooManyReads:
        return  # another read took the last request between the check and this one: the message stays
    await edit_in_place(query, text, markup)


async def edit_in_place(query: Any, text: str, markup: InlineKeyboardMarkup | None) -> None:
    """Edit the pressed message; Telegram's "message is not modified" counts as success."""
    try:
        await query.edit_message_text(text, reply_markup=markup)
    except BadRequest as err:
        if "not modified" not in str(err).lower():  # Telegram: same text and buttons; that is success
            raise
