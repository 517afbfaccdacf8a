"""/counters and its role and Refresh buttons (SPEC section 5)."""

from __future__ import annotations

import logging
from typing import Any

from telegram import InlineKeyboardMarkup, Update
from telegram.error import BadRequest

from bot import parsing, render
from bot.app import BotContext
from bot.handlers.core import language_of, linked_user, parse_error_answer, reply
from bot.model import ROLE_ALIASES, ROLES, UserSettings
from bot.texts import t

log = logging.getLogger(__name__)


def _roles_for(short: str) -> tuple[str, ...]:
    return ROLES if short == render.EVERY_ROLE else (ROLE_ALIASES[short],)


async def _counters_message(
    context: BotContext, lang: str, user_tid: int, bitrix_user_id: int, full_name: str, short: str
) -> tuple[str, InlineKeyboardMarkup]:
    services = context.services
    reading = await services.reader.read(bitrix_user_id)
    settings = await services.storage.get_settings(user_tid) or UserSettings(
        timezone=services.settings.default_timezone
    )
    text = render.render_counters(
        lang,
        reading.results,
        _roles_for(short),
        full_name=full_name,
        read_at=reading.read_at_utc().astimezone(settings.tz()),
        cached=reading.cached,
        portal_url=services.settings.bitrix24_portal_url,
        bitrix_user_id=bitrix_user_id,
    )
    return text, render.counters_keyboard(lang, short)


async def send_counters(
    update: Update, context: BotContext, lang: str, bitrix_user_id: int, full_name: str, short: str
) -> None:
    text, markup = await _counters_message(context, lang, update.effective_user.id, bitrix_user_id, full_name, short)
    await reply(update, text, markup)


async def counters_command(update: Update, context: BotContext) -> None:
    """Shows every counter of every role (or one role) in one message, from one batch request."""
    lang, user = await linked_user(update, context)
    if user is None:
        return
    try:
        role = parsing.parse_counters_role(context.args or [])
    except parsing.ParseError as err:
        await parse_error_answer(update, lang, err)
        return
    short = render.ROLE_SHORT[role] if role else render.EVERY_ROLE
    await send_counters(update, context, lang, user.bitrix_user_id, user.full_name, short)


async def counters_button(update: Update, context: BotContext) -> None:
    """Role and Refresh buttons: edit the counters message in place."""
    query = update.callback_query
    short = (query.data or "").partition(":")[2]
    lang = await language_of(update, context)
    user = await context.services.storage.get_user(update.effective_user.id)
    if short not in ROLE_ALIASES and short != render.EVERY_ROLE or user is None or user.bitrix_user_id is None:
        await query.answer(t(lang, "not_linked") if user is None or user.bitrix_user_id is None else None)
        return
    await query.answer()
    text, markup = await _counters_message(
        context, lang, update.effective_user.id, user.bitrix_user_id, user.full_name, short
    )
    await edit_in_place(query, text, markup)


async def edit_in_place(query: Any, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await query.edit_message_text(text, reply_markup=markup)
    except BadRequest as err:
        if "not modified" not in str(err).lower():  # Telegram: same text and buttons; that is success
            raise
