"""/settings, its buttons and the settings commands; snooze buttons under alerts (SPEC section 6)."""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from telegram import Update

from bot import alerts as alert_rules
from bot import parsing, preferences, render
from bot.app import BotContext
from bot.handlers.core import language_of, linked_user, parse_error_answer, reply, show
from bot.handlers.counters import edit_in_place
from bot.model import UserSettings
from bot.schedule import local_today
from bot.storage import User
from bot.texts import Html, pick_language, t

log = logging.getLogger(__name__)


async def _settings_of(update: Update, context: BotContext) -> tuple[str, User | None, UserSettings | None]:
    lang, user = await linked_user(update, context)
    if user is None:
        return lang, None, None
    return lang, user, await context.services.storage.get_settings(user.telegram_user_id)


DIGEST_FIELDS = ("digest_enabled", "digest_time", "digest_days", "timezone", "pause_until")


async def _save(context: BotContext, telegram_user_id: int, change: preferences.Change) -> None:
    storage = context.services.storage
    before = await storage.get_settings(telegram_user_id)
    if before is not None and any(getattr(before, f) != getattr(change.settings, f) for f in DIGEST_FIELDS):
        await storage.drop_pending_digests(telegram_user_id, context.services.clock.timestamp())
    await context.services.storage.save_settings(
        telegram_user_id,
        change.settings,
        now=context.services.clock.timestamp(),
        digest_changed=change.digest_changed,
        rebaseline=change.rebaseline,
    )


async def settings_command(update: Update, context: BotContext) -> None:
    """Shows every setting, with buttons for the toggles."""
    lang, user, settings = await _settings_of(update, context)
    if settings is None:
        return
    await reply(
        update,
        render.render_settings(lang, settings, full_name=user.full_name),
        render.settings_keyboard(lang, settings),
    )


async def settings_button(update: Update, context: BotContext) -> None:
    """Settings buttons: apply the toggle and edit the settings message in place."""
    query = update.callback_query
    action = (query.data or "").partition(":")[2]
    lang = await language_of(update, context)
    user = await context.services.storage.get_user(update.effective_user.id)
    settings = await context.services.storage.get_settings(update.effective_user.id) if user else None
    if settings is None or user.bitrix_user_id is None or (action not in preferences.BUTTONS and action != "show"):
        await query.answer(t(lang, "not_linked") if settings is None else None)
        return
    await query.answer()
    if action == "show":
        await reply(
            update,
            render.render_settings(lang, settings, full_name=user.full_name),
            render.settings_keyboard(lang, settings),
        )
        return
    change = preferences.BUTTONS[action](settings)
    await _save(context, user.telegram_user_id, change)
    settings = change.settings
    lang = pick_language(
        settings.language, update.effective_user.language_code, context.services.settings.default_language
    )
    await edit_in_place(
        query,
        render.render_settings(lang, settings, full_name=user.full_name),
        render.settings_keyboard(lang, settings),
    )


SettingsCommand = Callable[[Update, BotContext, str, User, UserSettings], Awaitable[None]]


def _settings_command(body: SettingsCommand) -> Callable[[Update, BotContext], Awaitable[None]]:
    """Wrap a settings command: linked users only; a ParseError becomes a one-line answer."""

    async def handler(update: Update, context: BotContext) -> None:
        lang, user, settings = await _settings_of(update, context)
        if settings is None:
            return
        try:
            await body(update, context, lang, user, settings)
        except parsing.ParseError as err:
            await parse_error_answer(update, lang, err)

    handler.__doc__ = body.__doc__
    handler.__name__ = body.__name__
    return handler


async def _saved(update: Update, context: BotContext, user: User, change: preferences.Change, text: str) -> None:
    await _save(context, user.telegram_user_id, change)
    await reply(update, text)


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
    change = preferences.apply_digest(settings, command)
    if isinstance(command, parsing.DigestEmpty):
        text = t(
            lang,
            "settings_empty",
            value=t(lang, "settings_empty_send") if command.send_empty else t(lang, "settings_empty_skip"),
        )
    else:
        text = t(lang, "saved_digest", value=Html(render.digest_value(lang, change.settings)))
    await _saved(update, context, user, change, text)


async def _digest_now(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """The digest as it would look now, compared with the last scheduled one; changes nothing."""
    services = context.services
    reading = await services.reader.read(user.bitrix_user_id)
    previous = await services.storage.last_sent_digest(user.telegram_user_id)
    text = render.render_digest(
        lang,
        reading.results,
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
    change = preferences.apply_alerts(settings, command)
    await _saved(
        update,
        context,
        user,
        change,
        t(lang, "current_alerts", value=Html(render.alerts_value(lang, change.settings))),
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
    change = preferences.apply_quiet(settings, command)
    await _saved(
        update, context, user, change, t(lang, "current_quiet", value=render.quiet_value(lang, change.settings))
    )


@_settings_command
async def timezone_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/timezone <IANA name | UTC±H[:MM]>."""
    name = parsing.parse_timezone(context.args or [])
    if isinstance(name, parsing.Show):
        await show(update, lang, t(lang, "current_zone", value=settings.timezone), parsing.EXAMPLE_TIMEZONE)
        return
    change = preferences.apply_timezone(settings, name)
    await _saved(update, context, user, change, t(lang, "current_zone", value=name))


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
    settings = await services.storage.get_settings(update.effective_user.id) or UserSettings(
        timezone=services.settings.default_timezone, digest_time=services.settings.default_digest_time
    )
    await _save(context, update.effective_user.id, preferences.apply_language(settings, choice))
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
        update,
        context,
        user,
        preferences.apply_pause(settings, until),
        t(lang, "saved_pause", date=until.isoformat()),
    )


@_settings_command
async def resume_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/resume: ends the pause now."""
    if settings.pause_until is None:
        await reply(update, t(lang, "not_paused"))
        return
    await _saved(update, context, user, preferences.apply_resume(settings), t(lang, "resumed"))


async def snooze_button(update: Update, context: BotContext) -> None:
    """Snooze buttons under an alert: 1 h, or until tomorrow's digest time."""
    query = update.callback_query
    _, counter, kind = ((query.data or "") + "::").split(":")[:3]
    services = context.services
    lang = await language_of(update, context)
    settings = await services.storage.get_settings(update.effective_user.id)
    user = await services.storage.get_user(update.effective_user.id)
    if (
        settings is None
        or user is None
        or user.bitrix_user_id is None
        or kind not in ("h", "t")
        or counter not in settings.thresholds
    ):
        await query.answer()
        return
    now = services.clock.now()
    until = alert_rules.snooze_until(
        settings, now, "hour" if kind == "h" else "tomorrow", default_digest_time=services.settings.default_digest_time
    )
    await services.storage.set_snooze(update.effective_user.id, counter, until)
    local = until.astimezone(settings.tz())
    stamp = (
        local.strftime("%H:%M")
        if local.date() == now.astimezone(settings.tz()).date()
        else local.strftime("%Y-%m-%d %H:%M")
    )
    await query.answer(t(lang, "snoozed", time=stamp))
