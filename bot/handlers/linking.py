"""/link, /verify, /unlink and /forget (SPEC section 4)."""

from __future__ import annotations

import logging

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from bot import parsing, render
from bot.errors import BitrixError
from bot.handlers.core import bitrix_failed, language_of, message_of, parse_error_answer, reply, sender
from bot.handlers.counters import send_counters
from bot.linking import LinkResult, Outcome
from bot.model import UserSettings
from bot.services import BotContext
from bot.texts import Html, t

log = logging.getLogger(__name__)


def account_label(update: Update) -> str:
    """How the code notification names the Telegram account that asked."""
    user = sender(update)
    return f"@{user.username} (ID {user.id})" if user.username else f"ID {user.id}"


async def link_command(update: Update, context: BotContext) -> None:
    """Starts linking: resolves the account and sends it a one-time code through Bitrix24."""
    lang = await language_of(update, context)
    services = context.services
    if not context.args:
        await reply(update, t(lang, "link_usage"))
        return
    hosts = {services.settings.webhook_host, services.settings.portal_host}
    try:
        target = parsing.parse_link_target(" ".join(context.args), hosts)
    except parsing.ParseError as err:
        await parse_error_answer(update, lang, err)
        return
    try:
        result = await services.linker.request(sender(update).id, account_label(update), target)
    except BitrixError as err:
        await bitrix_failed(update, lang, err)
        return
    await _link_outcome(update, context, lang, result)


async def verify_command(update: Update, context: BotContext) -> None:
    """Checks the code from the Bitrix24 notification."""
    lang = await language_of(update, context)
    code = parsing.parse_code(" ".join(context.args or []))
    if code is None:
        await reply(update, t(lang, "verify_usage"))
        return
    await _verify(update, context, lang, code)


async def text_message(update: Update, context: BotContext) -> None:
    """A bare six-digit message is a code; anything else gets a pointer to /help."""
    lang = await language_of(update, context)
    code = parsing.parse_code(message_of(update).text or "")
    if code is not None:
        await _verify(update, context, lang, code)
    else:
        await reply(update, t(lang, "help"))


async def _verify(update: Update, context: BotContext, lang: str, code: str) -> None:
    try:
        result = await context.services.linker.verify(sender(update).id, code)
    except BitrixError as err:
        await bitrix_failed(update, lang, err)
        return
    await _link_outcome(update, context, lang, result)


async def _link_outcome(update: Update, context: BotContext, lang: str, result: LinkResult) -> None:
    simple = {
        Outcome.CODE_SENT: "link_code_sent",
        Outcome.NOT_FOUND: "link_not_found",
        Outcome.TOO_MANY_LOOKUPS: "link_too_many_lookups",
        Outcome.TOO_MANY_CODES: "link_too_many_codes",
        Outcome.TAKEN: "link_taken",
        Outcome.ALREADY_YOURS: "link_already_yours",
        Outcome.NO_CODE: "verify_no_code",
        Outcome.EXPIRED: "verify_expired",
        Outcome.DEAD: "verify_dead",
    }
    if result.outcome in simple:
        await reply(update, t(lang, simple[result.outcome]))
        return
    if result.outcome is Outcome.WRONG:
        await reply(update, t(lang, "verify_wrong", left=result.tries_left))
        return
    settings: UserSettings | None = result.settings
    assert settings is not None and result.bitrix_user_id is not None and result.full_name is not None
    lang = context.services.accounts.language(settings.language, sender(update).language_code)
    if settings.digest_enabled:
        text = t(
            lang,
            "linked",
            name=result.full_name,
            time=settings.digest_time.strftime("%H:%M"),
            days=Html(render.days_label(lang, settings.digest_days)),
            zone=settings.timezone,
        )
    else:
        text = t(lang, "linked_digest_off", name=result.full_name, zone=settings.timezone)
    button = InlineKeyboardMarkup([[InlineKeyboardButton(t(lang, "button_settings"), callback_data="s:show")]])
    await reply(update, text, button)
    # The old holder (if the link moved) was told in the same transaction that moved it.
    await send_counters(update, context, lang, sender(update).id, result.bitrix_user_id, result.full_name, render.EVERY_ROLE)


async def unlink_command(update: Update, context: BotContext) -> None:
    """Ends the user's link; an admin may give a Bitrix24 user ID to free someone else's."""
    services = context.services
    lang = await language_of(update, context)
    if context.args:
        if sender(update).id not in services.settings.admin_telegram_user_ids:
            await reply(update, t(lang, "admins_only"))
            return
        try:
            target = parsing.parse_link_target(context.args[0], ())
        except parsing.ParseError:
            target = None
        if target is None or target.kind != "id" or len(context.args) != 1:
            await reply(update, t(lang, "admin_unlink_usage"))
            return
        holder = await services.accounts.unlink_bitrix_user(
            int(target.value), notice="unlinked_by_admin", unless=sender(update).id
        )
        if holder is None:
            await reply(update, t(lang, "admin_not_linked", bitrix_user_id=target.value))
            return
        log.info("admin telegram_user_id=%d unlinked bitrix_user_id=%s", sender(update).id, target.value)
        await reply(update, t(lang, "admin_unlinked", bitrix_user_id=target.value))
        return
    if await services.accounts.unlink(sender(update).id):
        log.info("telegram_user_id=%d unlinked", sender(update).id)
        await reply(update, t(lang, "unlinked"))
    else:
        await reply(update, t(lang, "not_linked"))


async def forget_command(update: Update, context: BotContext) -> None:
    """Deletes every row about the user except limit records."""
    lang = await language_of(update, context)
    await context.services.accounts.forget(sender(update).id)
    log.info("telegram_user_id=%d forgotten", sender(update).id)
    await reply(update, t(lang, "forgotten"))
