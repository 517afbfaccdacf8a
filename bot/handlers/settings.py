"""/settings, its buttons and the settings commands; snooze buttons under alerts (SPEC section 6)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from telegram import Update

from bot import parsing, preferences, render
from bot.errors import BitrixError
from bot.handlers.core import (
    Caller,
    bitrix_failed,
    caller,
    language_of,
    linked_caller,
    parse_error_answer,
    query_of,
    reply,
    sender,
    show,
)
from bot.handlers.counters import edit_in_place
from bot.model import UserSettings
from bot.reader import TooManyReads
from bot.schedule import local_today
from bot.services import BotContext
from bot.storage import User, digests
from bot.storage import settings as user_settings
from bot.texts import Html, t

log = logging.getLogger(__name__)


async def _settings_of(update: Update, context: BotContext) -> tuple[Caller | None, UserSettings | None]:
    who = await linked_caller(update, context)
    if who is None:
        return None, None
    return who, await user_settings.get(context.services.storage.db, who.telegram_user_id)


async def _save(context: BotContext, telegram_user_id: int, change: preferences.Command) -> UserSettings | None:
    """Apply the change to the settings as stored now (one unit of work); the new settings, or None if gone."""
    return await context.services.accounts.change_settings(telegram_user_id, change)


async def settings_command(update: Update, context: BotContext) -> None:
    """Shows every setting, with buttons for the toggles."""
    who, settings = await _settings_of(update, context)
    if who is None or who.user is None or settings is None:
        return
    await reply(
        update,
        render.render_settings(who.lang, settings, full_name=who.user.full_name),
        render.settings_keyboard(who.lang, settings),
    )


async def settings_button(update: Update, context: BotContext) -> None:
    """Settings buttons: apply the toggle and edit the settings message in place."""
    query = query_of(update)
    action = (query.data or "").partition(":")[2]
    who = await caller(update, context)
    user = who.user
    if user is None or not who.linked or (action not in preferences.BUTTONS and action != "show"):
        await query.answer(t(who.lang, "not_linked") if not who.linked else None)
        return
    if action == "show":
        settings = await user_settings.get(context.services.storage.db, who.telegram_user_id)
    else:
        settings = await _save(context, who.telegram_user_id, preferences.BUTTONS[action])
    if settings is None:
        await query.answer(t(who.lang, "not_linked"))
        return
    await query.answer()
    lang = context.services.accounts.language(settings.language, sender(update).language_code)
    text, markup = render.render_settings(lang, settings, full_name=user.full_name), render.settings_keyboard(lang, settings)
    if action == "show":
        await reply(update, text, markup)
    else:
        await edit_in_place(query, text, markup)


SettingsCommand = Callable[[Update, BotContext, str, User, UserSettings], Awaitable[None]]


def _settings_command(body: SettingsCommand) -> Callable[[Update, BotContext], Coroutine[Any, Any, None]]:
    """Wrap a settings command: linked users only; a ParseError becomes a one-line answer."""

    async def handler(update: Update, context: BotContext) -> None:
        who, settings = await _settings_of(update, context)
        if who is None or who.user is None or settings is None:
            return
        try:
            await body(update, context, who.lang, who.user, settings)
        except parsing.ParseError as err:
            await parse_error_answer(update, who.lang, err)

    handler.__doc__ = body.__doc__
    handler.__name__ = body.__name__
    return handler


async def _saved(
    update: Update, context: BotContext, user: User, change: preferences.Command, text: Callable[[UserSettings], str]
) -> None:
    """Apply the change in one unit of work and confirm with what was stored."""
    after = await _save(context, user.telegram_user_id, change)
    lang = context.services.accounts.language_of(user, sender(update).language_code)
    await reply(update, text(after) if after is not None else t(lang, "not_linked"))


@_settings_command
async def digest_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/digest H:MM [days] | off | on | now | empty on|off; without arguments shows the current value."""
    command = parsing.parse_digest(context.args or [])
    if isinstance(command, parsing.Show):
        await show(
            update,
            lang,
            t(lang, "current_digest", value=Html(render.digest_value(lang, settings))),
            parsing.EXAMPLE_DIGEST,
        )
        return
    if isinstance(command, parsing.DigestNow):
        await _digest_now(update, context, lang, user, settings)
        return
    if isinstance(command, parsing.DigestTasks):
        value = t(lang, "settings_on") if command.show_tasks else t(lang, "settings_off")
        tasks = t(lang, "settings_tasks", value=value)
        await _saved(update, context, user, lambda s: preferences.apply_digest(s, command), lambda after: tasks)
        return
    if isinstance(command, parsing.DigestTeam):
        team = t(lang, "settings_team", value=t(lang, "settings_on") if command.show_team else t(lang, "settings_off"))
        await _saved(update, context, user, lambda s: preferences.apply_digest(s, command), lambda after: team)
        return
    if isinstance(command, parsing.DigestEmpty):
        empty = t(lang, "settings_empty", value=t(lang, "settings_empty_send") if command.send_empty else t(lang, "settings_empty_skip"))
        await _saved(update, context, user, lambda s: preferences.apply_digest(s, command), lambda after: empty)
        return
    await _saved(
        update, context, user, lambda s: preferences.apply_digest(s, command),
        lambda after: t(lang, "saved_digest", value=Html(render.digest_value(lang, after))),
    )


async def _digest_now(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """The digest as it would look now, compared with the last scheduled one; changes nothing."""
    services = context.services
    assert user.bitrix_user_id is not None
    try:
        reading = await services.reader.read(user.bitrix_user_id)
    except BitrixError as err:
        await bitrix_failed(update, lang, err)
        return
    except TooManyReads as err:
        await reply(update, t(lang, "reads_too_many", seconds=round(err.retry_in)))
        return
    previous = await digests.last_sent(services.storage.db, user.telegram_user_id)
    text = render.render_digest(
        lang,
        reading.value,
        previous[1] if previous else None,
        previous[0] if previous else None,
        scheduled=False,
        read_at=reading.read_at_utc().astimezone(settings.tz()),
        portal_url=services.settings.bitrix24_portal_url,
        bitrix_user_id=user.bitrix_user_id,
    )
    await reply(update, text)


@_settings_command
async def alerts_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/alerts <counter> <threshold> | <counter> off | off | on."""
    command = parsing.parse_alerts(context.args or [])
    if isinstance(command, parsing.Show):
        await show(
            update,
            lang,
            t(lang, "current_alerts", value=Html(render.alerts_value(lang, settings))),
            parsing.EXAMPLE_ALERTS,
        )
        return
    await _saved(
        update, context, user, lambda s: preferences.apply_alerts(s, command),
        lambda after: t(lang, "current_alerts", value=Html(render.alerts_value(lang, after))),
    )


@_settings_command
async def quiet_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/quiet HH:MM-HH:MM | off."""
    command = parsing.parse_quiet(context.args or [])
    if isinstance(command, parsing.Show):
        await show(
            update, lang, t(lang, "current_quiet", value=render.quiet_value(lang, settings)), parsing.EXAMPLE_QUIET
        )
        return
    await _saved(
        update, context, user, lambda s: preferences.apply_quiet(s, command),
        lambda after: t(lang, "current_quiet", value=render.quiet_value(lang, after)),
    )


@_settings_command
async def timezone_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/timezone <IANA name | UTC±H[:MM]>."""
    name = parsing.parse_timezone(context.args or [])
    if isinstance(name, parsing.Show):
        await show(update, lang, t(lang, "current_zone", value=settings.timezone), parsing.EXAMPLE_TIMEZONE)
        return
    await _saved(
        update, context, user, lambda s: preferences.apply_timezone(s, name), lambda after: t(lang, "current_zone", value=name)
    )


async def language_command(update: Update, context: BotContext) -> None:
    """/language en|ru: works before linking too."""
    lang = await language_of(update, context)
    try:
        choice = parsing.parse_language(context.args or [])
    except parsing.ParseError as err:
        await parse_error_answer(update, lang, err)
        return
    if isinstance(choice, parsing.Show):
        await show(update, lang, t(lang, "current_language"), parsing.EXAMPLE_LANGUAGE)
        return
    services = context.services
    defaults = UserSettings(timezone=services.settings.default_timezone, digest_time=services.settings.default_digest_time)
    await services.accounts.change_settings(
        sender(update).id, lambda s: preferences.apply_language(s, choice), create=defaults
    )
    await reply(update, t(choice, "current_language"))


@_settings_command
async def pause_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/pause N | YYYY-MM-DD: the day the user is back."""
    until = parsing.parse_pause(context.args or [], local_today(settings, context.services.clock.now()))
    if isinstance(until, parsing.Show):
        current = (
            t(lang, "settings_pause", date=settings.pause_until.isoformat())
            if settings.pause_until
            else t(lang, "current_pause")
        )
        await show(update, lang, current, parsing.EXAMPLE_PAUSE)
        return
    await _saved(
        update, context, user, lambda s: preferences.apply_pause(s, until), lambda after: t(lang, "saved_pause", date=until.isoformat())
    )


@_settings_command
async def resume_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/resume: ends the pause now."""
    if settings.pause_until is None:
        await reply(update, t(lang, "not_paused"))
        return
    await _saved(update, context, user, preferences.apply_resume, lambda after: t(lang, "resumed"))


async def snooze_button(update: Update, context: BotContext) -> None:
    """Snooze buttons under an alert: 1 h, or until tomorrow's digest time."""
    query = query_of(update)
    _, counter, kind = ((query.data or "") + "::").split(":")[:3]
    services = context.services
    who = await caller(update, context)
    if not who.linked or kind not in ("h", "t"):
        await query.answer()
        return
    snoozed = await services.accounts.snooze(who.telegram_user_id, counter, "hour" if kind == "h" else "tomorrow")
    if snoozed is None:
        await query.answer()
        return
    until, settings = snoozed
    now = services.clock.now()
    local = until.astimezone(settings.tz())
    stamp = (
        local.strftime("%H:%M")
        if local.date() == now.astimezone(settings.tz()).date()
        else local.strftime("%Y-%m-%d %H:%M")
    )
    await query.answer(t(who.lang, "snoozed", time=stamp))
