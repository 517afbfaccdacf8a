"""Telegram commands and buttons: parse -> call the core -> render -> send."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatType
from telegram.error import BadRequest
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot import alerts as alert_rules
from bot import parsing, preferences, render
from bot.app import BotContext
from bot.errors import BitrixError
from bot.linking import Outcome
from bot.model import ROLE_ALIASES, ROLES, UserSettings
from bot.schedule import local_today
from bot.storage import User
from bot.texts import Html, pick_language, t

log = logging.getLogger(__name__)

PUBLIC_IN_GROUPS = frozenset({"start", "help"})


async def language_of(update: Update, context: BotContext) -> str:
    """The language to answer this update's user in."""
    services = context.services
    tg_user = update.effective_user
    if tg_user is None:
        return services.settings.default_language
    user = await services.storage.get_user(tg_user.id)
    return pick_language(user.language if user else None, tg_user.language_code, services.settings.default_language)


def _command_name(update: Update) -> str | None:
    message = update.effective_message
    if message is None or not message.text or not message.text.startswith("/"):
        return None
    return message.text.split()[0][1:].split("@")[0].lower()


async def gate(update: Update, context: BotContext) -> None:
    """Runs before every handler: records the user, refuses strangers and personal data in groups."""
    tg_user = update.effective_user
    chat = update.effective_chat
    if tg_user is None or chat is None or update.my_chat_member is not None:
        return
    services = context.services
    if not services.settings.is_allowed(tg_user.id):
        log.info("refused telegram_user_id=%d: not on the allow-list", tg_user.id)
        if update.callback_query:
            await update.callback_query.answer()
        if chat.type == ChatType.PRIVATE and update.effective_message is not None:
            lang = pick_language(None, tg_user.language_code, services.settings.default_language)
            await update.effective_message.reply_text(t(lang, "private_bot"))
        raise ApplicationHandlerStop
    if chat.type != ChatType.PRIVATE:
        if update.callback_query:
            await update.callback_query.answer()
            raise ApplicationHandlerStop
        name = _command_name(update)
        if name is not None and name not in PUBLIC_IN_GROUPS:
            lang = pick_language(None, tg_user.language_code, services.settings.default_language)
            await update.effective_message.reply_text(t(lang, "group_refusal"))
        if name not in PUBLIC_IN_GROUPS:
            raise ApplicationHandlerStop
        return
    was_blocked = await services.storage.touch_user(
        tg_user.id, chat.id, tg_user.language_code, services.clock.timestamp()
    )
    if was_blocked:
        log.info("telegram_user_id=%d wrote again: active", tg_user.id)


async def start_command(update: Update, context: BotContext) -> None:
    """Greets the user and says how to link an account."""
    lang = await language_of(update, context)
    user = await context.services.storage.get_user(update.effective_user.id)
    if user and user.bitrix_user_id and update.effective_chat.type == ChatType.PRIVATE:
        await update.effective_message.reply_text(t(lang, "start_linked", name=user.full_name))
    else:
        await update.effective_message.reply_text(t(lang, "start"))


async def help_command(update: Update, context: BotContext) -> None:
    """Lists the commands."""
    lang = await language_of(update, context)
    await update.effective_message.reply_text(t(lang, "help"))


async def chat_member_update(update: Update, context: BotContext) -> None:
    """Marks a user inactive when they block the bot and active when they unblock it."""
    member = update.my_chat_member
    if member.chat.type != ChatType.PRIVATE:
        return
    blocked = member.new_chat_member.status in ("kicked", "left")
    if await context.services.storage.set_blocked(member.chat.id, blocked):
        log.info("telegram_user_id=%d %s the bot", member.chat.id, "blocked" if blocked else "unblocked")


async def on_error(update: object, context: BotContext) -> None:
    """Logs the failure and gives the user an honest, short answer."""
    log.error("error while handling an update", exc_info=context.error)
    if isinstance(update, Update) and update.effective_message and update.effective_chat.type == ChatType.PRIVATE:
        lang = await language_of(update, context)
        try:
            await update.effective_message.reply_text(t(lang, "internal_error"))
        except Exception:  # the answer itself failed: nothing more to do than log it
            log.warning("could not send the error answer", exc_info=True)


async def _reply(update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    await update.effective_message.reply_text(text, reply_markup=markup)


async def _show(update: Update, lang: str, current: str, example: str) -> None:
    """A command without its argument: the current value and one example."""
    await _reply(update, current + "\n" + t(lang, "example", example=example))


async def _parse_error(update: Update, lang: str, err: parsing.ParseError) -> None:
    """One line saying what is wrong, and one example; nothing changes."""
    await _show(update, lang, t(lang, err.key, **dict(err.params)), err.example)


async def _bitrix_failed(update: Update, lang: str, err: BitrixError) -> None:
    log.warning("bitrix24 failed for telegram_user_id=%d: %s %s", update.effective_user.id, err.kind, err.code)
    await _reply(update, t(lang, "bitrix_error", reason=err.text(lang)))


def _account_label(update: Update) -> str:
    user = update.effective_user
    return f"@{user.username} (ID {user.id})" if user.username else f"ID {user.id}"


async def _linked(update: Update, context: BotContext) -> tuple[str, User | None]:
    """The user's language and record; says "not linked" and returns None when there is no link."""
    lang = await language_of(update, context)
    user = await context.services.storage.get_user(update.effective_user.id)
    if user is None or user.bitrix_user_id is None:
        await _reply(update, t(lang, "not_linked"))
        return lang, None
    return lang, user


# ---- linking ---------------------------------------------------------------------------------


async def link_command(update: Update, context: BotContext) -> None:
    """Starts linking: resolves the account and sends it a one-time code through Bitrix24."""
    lang = await language_of(update, context)
    services = context.services
    if not context.args:
        await _reply(update, t(lang, "link_usage"))
        return
    hosts = {services.settings.webhook_host, services.settings.portal_host}
    try:
        target = parsing.parse_link_target(" ".join(context.args), hosts)
    except parsing.ParseError as err:
        await _parse_error(update, lang, err)
        return
    try:
        result = await services.linker.request(update.effective_user.id, _account_label(update), target)
    except BitrixError as err:
        await _bitrix_failed(update, lang, err)
        return
    await _link_outcome(update, context, lang, result)


async def verify_command(update: Update, context: BotContext) -> None:
    """Checks the code from the Bitrix24 notification."""
    lang = await language_of(update, context)
    code = parsing.parse_code(" ".join(context.args or []))
    if code is None:
        await _reply(update, t(lang, "verify_usage"))
        return
    await _verify(update, context, lang, code)


async def text_message(update: Update, context: BotContext) -> None:
    """A bare six-digit message is a code; anything else gets a pointer to /help."""
    lang = await language_of(update, context)
    code = parsing.parse_code(update.effective_message.text or "")
    if code is not None:
        await _verify(update, context, lang, code)
    else:
        await _reply(update, t(lang, "help"))


async def _verify(update: Update, context: BotContext, lang: str, code: str) -> None:
    try:
        result = await context.services.linker.verify(update.effective_user.id, code)
    except BitrixError as err:
        await _bitrix_failed(update, lang, err)
        return
    await _link_outcome(update, context, lang, result)


async def _link_outcome(update: Update, context: BotContext, lang: str, result: Any) -> None:
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
        await _reply(update, t(lang, simple[result.outcome]))
        return
    if result.outcome is Outcome.WRONG:
        await _reply(update, t(lang, "verify_wrong", left=result.tries_left))
        return
    settings: UserSettings = result.settings
    lang = pick_language(settings.language, update.effective_user.language_code, context.services.settings.default_language)
    if settings.digest_enabled:
        text = t(
            lang,
            "linked",
            name=result.user.full_name,
            time=settings.digest_time.strftime("%H:%M"),
            days=Html(render.days_label(lang, settings.digest_days)),
            zone=settings.timezone,
        )
    else:
        text = t(lang, "linked_digest_off", name=result.user.full_name, zone=settings.timezone)
    button = InlineKeyboardMarkup([[InlineKeyboardButton(t(lang, "button_settings"), callback_data="s:show")]])
    await _reply(update, text, button)
    if result.moved_from is not None:
        await context.services.notify_user(result.moved_from, "link_moved_away")
    await _send_counters(update, context, lang, result.user.bitrix_user_id, result.user.full_name, render.EVERY_ROLE)


async def unlink_command(update: Update, context: BotContext) -> None:
    """Ends the user's link; an admin may give a Bitrix24 user ID to free someone else's."""
    services = context.services
    lang = await language_of(update, context)
    if context.args:
        if update.effective_user.id not in services.settings.admin_telegram_user_ids:
            await _reply(update, t(lang, "admins_only"))
            return
        try:
            target = parsing.parse_link_target(context.args[0], ())
        except parsing.ParseError:
            target = None
        if target is None or target.kind != "id" or len(context.args) != 1:
            await _reply(update, t(lang, "admin_unlink_usage"))
            return
        holder = await services.storage.telegram_user_of(int(target.value))
        if holder is None:
            await _reply(update, t(lang, "admin_not_linked", bitrix_user_id=target.value))
            return
        await services.storage.unlink(holder, services.clock.timestamp())
        log.info("admin telegram_user_id=%d unlinked bitrix_user_id=%s", update.effective_user.id, target.value)
        await _reply(update, t(lang, "admin_unlinked", bitrix_user_id=target.value))
        if holder != update.effective_user.id:
            await services.notify_user(holder, "unlinked_by_admin")
        return
    if await services.storage.unlink(update.effective_user.id, services.clock.timestamp()):
        log.info("telegram_user_id=%d unlinked", update.effective_user.id)
        await _reply(update, t(lang, "unlinked"))
    else:
        await _reply(update, t(lang, "not_linked"))


async def forget_command(update: Update, context: BotContext) -> None:
    """Deletes every row about the user except limit records."""
    lang = await language_of(update, context)
    await context.services.storage.forget(update.effective_user.id)
    log.info("telegram_user_id=%d forgotten", update.effective_user.id)
    await _reply(update, t(lang, "forgotten"))


# ---- counters --------------------------------------------------------------------------------


def _roles_for(short: str) -> tuple[str, ...]:
    return ROLES if short == render.EVERY_ROLE else (ROLE_ALIASES[short],)


async def _counters_message(
    context: BotContext, lang: str, user_tid: int, bitrix_user_id: int, full_name: str, short: str
) -> tuple[str, InlineKeyboardMarkup]:
    services = context.services
    reading = await services.reader.read(bitrix_user_id)
    settings = await services.storage.get_settings(user_tid) or UserSettings(timezone=services.settings.default_timezone)
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


async def _send_counters(
    update: Update, context: BotContext, lang: str, bitrix_user_id: int, full_name: str, short: str
) -> None:
    text, markup = await _counters_message(context, lang, update.effective_user.id, bitrix_user_id, full_name, short)
    await _reply(update, text, markup)


async def counters_command(update: Update, context: BotContext) -> None:
    """Shows every counter of every role (or one role) in one message, from one batch request."""
    lang, user = await _linked(update, context)
    if user is None:
        return
    try:
        role = parsing.parse_counters_role(context.args or [])
    except parsing.ParseError as err:
        await _parse_error(update, lang, err)
        return
    short = render.ROLE_SHORT[role] if role else render.EVERY_ROLE
    await _send_counters(update, context, lang, user.bitrix_user_id, user.full_name, short)


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
    await _edit(query, text, markup)


async def _edit(query: Any, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await query.edit_message_text(text, reply_markup=markup)
    except BadRequest as err:
        if "not modified" not in str(err).lower():  # Telegram: same text and buttons; that is success
            raise


# ---- settings --------------------------------------------------------------------------------


async def _settings_of(update: Update, context: BotContext) -> tuple[str, User | None, UserSettings | None]:
    lang, user = await _linked(update, context)
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
    await _reply(update, render.render_settings(lang, settings, full_name=user.full_name), render.settings_keyboard(lang, settings))


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
        await _reply(update, render.render_settings(lang, settings, full_name=user.full_name), render.settings_keyboard(lang, settings))
        return
    change = preferences.BUTTONS[action](settings)
    await _save(context, user.telegram_user_id, change)
    settings = change.settings
    lang = pick_language(settings.language, update.effective_user.language_code, context.services.settings.default_language)
    await _edit(query, render.render_settings(lang, settings, full_name=user.full_name), render.settings_keyboard(lang, settings))


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
            await _parse_error(update, lang, err)

    handler.__doc__ = body.__doc__
    handler.__name__ = body.__name__
    return handler


async def _saved(update: Update, context: BotContext, user: User, change: preferences.Change, lang: str, text: str) -> None:
    await _save(context, user.telegram_user_id, change)
    await _reply(update, text)


@_settings_command
async def digest_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/digest H:MM [days] | off | on | now | empty on|off; without arguments shows the current value."""
    command = parsing.parse_digest(context.args or [])
    if isinstance(command, parsing.Show):
        await _show(update, lang, t(lang, "current_digest", value=Html(render.digest_value(lang, settings))), parsing.EXAMPLE_DIGEST)
        return
    if isinstance(command, parsing.DigestNow):
        await _digest_now(update, context, lang, user, settings)
        return
    change = preferences.apply_digest(settings, command)
    if isinstance(command, parsing.DigestEmpty):
        text = t(lang, "settings_empty", value=t(lang, "settings_empty_send") if command.send_empty else t(lang, "settings_empty_skip"))
    else:
        text = t(lang, "saved_digest", value=Html(render.digest_value(lang, change.settings)))
    await _saved(update, context, user, change, lang, text)


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
    await _reply(update, text)


@_settings_command
async def alerts_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/alerts <counter> <threshold> | <counter> off | off | on."""
    command = parsing.parse_alerts(context.args or [])
    if isinstance(command, parsing.Show):
        await _show(update, lang, t(lang, "current_alerts", value=Html(render.alerts_value(lang, settings))), parsing.EXAMPLE_ALERTS)
        return
    change = preferences.apply_alerts(settings, command)
    await _saved(update, context, user, change, lang, t(lang, "current_alerts", value=Html(render.alerts_value(lang, change.settings))))


@_settings_command
async def quiet_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/quiet HH:MM-HH:MM | off."""
    command = parsing.parse_quiet(context.args or [])
    if isinstance(command, parsing.Show):
        await _show(update, lang, t(lang, "current_quiet", value=render.quiet_value(lang, settings)), parsing.EXAMPLE_QUIET)
        return
    change = preferences.apply_quiet(settings, command)
    await _saved(update, context, user, change, lang, t(lang, "current_quiet", value=render.quiet_value(lang, change.settings)))


@_settings_command
async def timezone_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/timezone <IANA name | UTC±H[:MM]>."""
    name = parsing.parse_timezone(context.args or [])
    if isinstance(name, parsing.Show):
        await _show(update, lang, t(lang, "current_zone", value=settings.timezone), parsing.EXAMPLE_TIMEZONE)
        return
    change = preferences.apply_timezone(settings, name)
    await _saved(update, context, user, change, lang, t(lang, "current_zone", value=name))


async def language_command(update: Update, context: BotContext) -> None:
    """/language en|ru: works before linking too."""
    lang = await language_of(update, context)
    try:
        choice = parsing.parse_language(context.args or [])
    except parsing.ParseError as err:
        await _parse_error(update, lang, err)
        return
    if isinstance(choice, parsing.Show):
        await _show(update, lang, t(lang, "current_language"), parsing.EXAMPLE_LANGUAGE)
        return
    services = context.services
    settings = await services.storage.get_settings(update.effective_user.id) or UserSettings(
        timezone=services.settings.default_timezone, digest_time=services.settings.default_digest_time
    )
    await _save(context, update.effective_user.id, preferences.apply_language(settings, choice))
    await _reply(update, t(choice, "current_language"))


@_settings_command
async def pause_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/pause N | YYYY-MM-DD: the day the user is back."""
    until = parsing.parse_pause(context.args or [], local_today(settings, context.services.clock.now()))
    if isinstance(until, parsing.Show):
        current = t(lang, "settings_pause", date=settings.pause_until.isoformat()) if settings.pause_until else t(lang, "current_pause")
        await _show(update, lang, current, parsing.EXAMPLE_PAUSE)
        return
    await _saved(update, context, user, preferences.apply_pause(settings, until), lang, t(lang, "saved_pause", date=until.isoformat()))


@_settings_command
async def resume_command(update: Update, context: BotContext, lang: str, user: User, settings: UserSettings) -> None:
    """/resume: ends the pause now."""
    if settings.pause_until is None:
        await _reply(update, t(lang, "not_paused"))
        return
    await _saved(update, context, user, preferences.apply_resume(settings), lang, t(lang, "resumed"))


async def snooze_button(update: Update, context: BotContext) -> None:
    """Snooze buttons under an alert: 1 h, or until tomorrow's digest time."""
    query = update.callback_query
    _, counter, kind = ((query.data or "") + "::").split(":")[:3]
    services = context.services
    lang = await language_of(update, context)
    settings = await services.storage.get_settings(update.effective_user.id)
    user = await services.storage.get_user(update.effective_user.id)
    if settings is None or user is None or user.bitrix_user_id is None or kind not in ("h", "t") or counter not in settings.thresholds:
        await query.answer()
        return
    now = services.clock.now()
    until = alert_rules.snooze_until(
        settings, now, "hour" if kind == "h" else "tomorrow", default_digest_time=services.settings.default_digest_time
    )
    await services.storage.set_snooze(update.effective_user.id, counter, until)
    local = until.astimezone(settings.tz())
    stamp = local.strftime("%H:%M") if local.date() == now.astimezone(settings.tz()).date() else local.strftime("%Y-%m-%d %H:%M")
    await query.answer(t(lang, "snoozed", time=stamp))


async def stats_command(update: Update, context: BotContext) -> None:
    """Admins: the figures /metrics exports, in a readable message."""
    services = context.services
    lang = await language_of(update, context)
    if update.effective_user.id not in services.settings.admin_telegram_user_ids:
        await _reply(update, t(lang, "admins_only"))
        return
    coordinator = services.coordinator
    linked, active = await services.storage.link_counts()
    result = coordinator.last_result
    stamp = services.clock.now().strftime("%Y-%m-%d %H:%M")
    if result is None:
        last_poll = t(lang, "stats_never")
    elif result.cause is None:
        last_poll = t(lang, "stats_poll_ok", time=stamp, ok=result.ok, users=result.users)
    else:
        last_poll = t(lang, "stats_poll_failed", time=stamp, cause=result.cause)
    requests, failed = coordinator.requests_last_hour()
    outcomes = await services.storage.outbox_outcomes(services.clock.timestamp() - 3600)
    from bot.coordinator import COUNTERS_METHOD, TIME_BUDGET_SECONDS

    await _reply(
        update,
        t(
            lang,
            "stats",
            linked=linked,
            active=active,
            last_poll=Html(last_poll),
            interval=round(coordinator.effective_interval),
            requests=requests,
            failed=failed,
            budget=round(services.bitrix.method_time_used(COUNTERS_METHOD), 1),
            budget_limit=round(TIME_BUDGET_SECONDS),
            sent=outcomes.get("sent", 0),
            msg_failed=outcomes.get("failed", 0),
            queued=await services.storage.outbox_queued_count(),
            no_access=len(coordinator.no_access_users),
        ),
    )


async def unknown_command(update: Update, context: BotContext) -> None:
    """Any other command: a pointer to /help."""
    lang = await language_of(update, context)
    await _reply(update, t(lang, "unknown_command"))


def register(app: Application) -> None:
    """Attach every handler to the application."""
    app.add_handler(TypeHandler(Update, gate), group=-1)
    app.add_handler(CommandHandler("start", start_command))
    app.add_handler(CommandHandler("help", help_command))
    app.add_handler(CommandHandler("link", link_command))
    app.add_handler(CommandHandler("verify", verify_command))
    app.add_handler(CommandHandler("unlink", unlink_command))
    app.add_handler(CommandHandler("forget", forget_command))
    app.add_handler(CommandHandler("counters", counters_command))
    app.add_handler(CommandHandler("settings", settings_command))
    app.add_handler(CommandHandler("digest", digest_command))
    app.add_handler(CommandHandler("alerts", alerts_command))
    app.add_handler(CommandHandler("quiet", quiet_command))
    app.add_handler(CommandHandler("timezone", timezone_command))
    app.add_handler(CommandHandler("language", language_command))
    app.add_handler(CommandHandler("pause", pause_command))
    app.add_handler(CommandHandler("resume", resume_command))
    app.add_handler(CallbackQueryHandler(counters_button, pattern=r"^c:"))
    app.add_handler(CallbackQueryHandler(settings_button, pattern=r"^s:"))
    app.add_handler(CallbackQueryHandler(snooze_button, pattern=r"^z:"))
    app.add_handler(CommandHandler("stats", stats_command))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND & filters.ChatType.PRIVATE, text_message))
    app.add_handler(MessageHandler(filters.COMMAND & filters.ChatType.PRIVATE, unknown_command))
    app.add_handler(ChatMemberHandler(chat_member_update, ChatMemberHandler.MY_CHAT_MEMBER))
    app.add_error_handler(on_error)
