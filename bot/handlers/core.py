"""Handlers every chat meets: the gate, /start, /help, blocking, errors, unknown commands, /stats."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from telegram import CallbackQuery, Chat, InlineKeyboardMarkup, Message, Update
from telegram import User as TgUser
from telegram.constants import ChatType
from telegram.ext import ApplicationHandlerStop

from bot import parsing
from bot.errors import BitrixError
from bot.services import BotContext, Services
from bot.storage import User, links, meta, outbox, users
from bot.texts import Html, t

log = logging.getLogger(__name__)


PUBLIC_IN_GROUPS = frozenset({"start", "help", "project"})
GROUP_BUTTONS = "pj:"  # Connect, Cancel and the project refresh: the only buttons that work in groups


def sender(update: Update) -> TgUser:
    """The Telegram user behind an update that reached a handler (the gate stops updates without one)."""
    if update.effective_user is None:
        raise ValueError("an update without a user reached a handler")
    return update.effective_user


def message_of(update: Update) -> Message:
    """The message a command handler answers."""
    if update.effective_message is None:
        raise ValueError("a command without a message reached a handler")
    return update.effective_message


def chat_of(update: Update) -> Chat:
    """The chat of an update that reached a handler."""
    if update.effective_chat is None:
        raise ValueError("an update without a chat reached a handler")
    return update.effective_chat


def query_of(update: Update) -> CallbackQuery:
    """The button press a button handler answers."""
    if update.callback_query is None:
        raise ValueError("a button handler got no callback query")
    return update.callback_query


@dataclass(frozen=True)
class Caller:
    """Who sent this update, as the bot knows them: the one opening of every handler and button."""

    telegram_user_id: int
    lang: str
    user: User | None

    @property
    def linked(self) -> bool:
        """Whether the caller has a Bitrix24 link."""
        return self.user is not None and self.user.bitrix_user_id is not None


async def caller(update: Update, context: BotContext) -> Caller:
    """Read the caller once: their stored record and the language to answer in."""
    tg_user = update.effective_user
    assert tg_user is not None  # the gate lets no update without a user reach a handler
    user = await users.get(context.services.storage.db, tg_user.id)
    return Caller(tg_user.id, context.services.accounts.language_of(user, tg_user.language_code), user)


async def language_of(update: Update, context: BotContext) -> str:
    """The language to answer this update's user in."""
    if update.effective_user is None:
        return context.services.settings.default_language
    return (await caller(update, context)).lang


def _command_name(update: Update) -> str | None:
    message = update.effective_message
    if message is None or not message.text or not message.text.startswith("/"):
        return None
    return message.text.split()[0][1:].split("@")[0].lower()


def _addressed_elsewhere(update: Update, bot_username: str | None) -> bool:
    """A command addressed to another bot (`/project@other_bot`): not ours to answer."""
    message = update.effective_message
    if message is None or not message.text or not message.text.startswith("/"):
        return False
    head = message.text.split()[0]
    if "@" not in head:
        return False
    return head.split("@", 1)[1].lower() != (bot_username or "").lower()


async def _migrated(update: Update, context: BotContext) -> bool:
    """The service messages of a group that became a supergroup move its binding (SPEC 13)."""
    message = update.effective_message
    chat = update.effective_chat
    if message is None or chat is None:
        return False
    if message.migrate_to_chat_id:
        await context.services.projects.migrate(chat.id, message.migrate_to_chat_id)
        return True
    if message.migrate_from_chat_id:
        await context.services.projects.migrate(message.migrate_from_chat_id, chat.id)
        return True
    return False


async def gate(update: Update, context: BotContext) -> None:
    """Runs before every handler: records the user, refuses strangers and personal data in groups."""
    tg_user = update.effective_user
    chat = update.effective_chat
    if update.my_chat_member is not None:
        return
    if chat is not None and chat.type != ChatType.PRIVATE and await _migrated(update, context):
        raise ApplicationHandlerStop
    if tg_user is None or chat is None:
        return
    services = context.services
    if not services.settings.is_allowed(tg_user.id):
        log.info("refused telegram_user_id=%d: not on the allow-list", tg_user.id)
        if update.callback_query:
            await update.callback_query.answer()
        if chat.type == ChatType.PRIVATE and update.effective_message is not None:
            lang = services.accounts.language(None, tg_user.language_code)
            await message_of(update).reply_text(t(lang, "private_bot"))
        raise ApplicationHandlerStop
    if chat.type != ChatType.PRIVATE:
        if update.callback_query:
            if (update.callback_query.data or "").startswith(GROUP_BUTTONS):
                return
            await update.callback_query.answer()
            raise ApplicationHandlerStop
        if _addressed_elsewhere(update, context.bot.username):
            raise ApplicationHandlerStop
        name = _command_name(update)
        message = update.effective_message
        if name is not None and message is not None and message.sender_chat is not None:
            # Sent on behalf of a chat (an anonymous admin): nobody can be held accountable for it.
            lang = services.accounts.language(None, tg_user.language_code)
            await message_of(update).reply_text(t(lang, "project_anonymous"))
            raise ApplicationHandlerStop
        if name is not None and name not in PUBLIC_IN_GROUPS:
            lang = services.accounts.language(None, tg_user.language_code)
            await message_of(update).reply_text(t(lang, "group_refusal"))
        if name not in PUBLIC_IN_GROUPS:
            raise ApplicationHandlerStop
        return
    was_blocked = await services.accounts.seen(tg_user.id, chat.id, tg_user.language_code)
    if was_blocked:
        log.info("telegram_user_id=%d wrote again: active", tg_user.id)


async def start_command(update: Update, context: BotContext) -> None:
    """Greets the user and says how to link an account."""
    who = await caller(update, context)
    if who.user is not None and who.linked and chat_of(update).type == ChatType.PRIVATE:
        await message_of(update).reply_text(t(who.lang, "start_linked", name=who.user.full_name))
    else:
        await message_of(update).reply_text(t(who.lang, "start"))


async def help_command(update: Update, context: BotContext) -> None:
    """Lists the commands."""
    lang = await language_of(update, context)
    await message_of(update).reply_text(t(lang, "help"))


async def chat_member_update(update: Update, context: BotContext) -> None:
    """Marks a user inactive when they block the bot and active when they unblock it; a group's binding follows the bot."""
    member = update.my_chat_member
    if member is None:
        return
    if member.chat.type in (ChatType.GROUP, ChatType.SUPERGROUP):
        new = member.new_chat_member
        present = new.status in ("member", "administrator") or (new.status == "restricted" and bool(getattr(new, "is_member", False)))
        await context.services.projects.chat_membership(member.chat.id, present)
        return
    if member.chat.type != ChatType.PRIVATE:
        return
    blocked = member.new_chat_member.status in ("kicked", "left")
    if await context.services.accounts.set_blocked(member.chat.id, blocked):
        log.info("telegram_user_id=%d %s the bot", member.chat.id, "blocked" if blocked else "unblocked")


async def on_error(update: object, context: BotContext) -> None:
    """Logs the failure and gives the user an honest, short answer."""
    log.error("error while handling an update", exc_info=context.error)
    if isinstance(update, Update) and update.effective_message and chat_of(update).type == ChatType.PRIVATE:
        lang = await language_of(update, context)
        try:
            await message_of(update).reply_text(t(lang, "internal_error"))
        except Exception:  # the answer itself failed: nothing more to do than log it
            log.warning("could not send the error answer", exc_info=True)


async def reply(update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Answer in the update's chat (interactive: it goes before bulk messages)."""
    await message_of(update).reply_text(text, reply_markup=markup)


async def show(update: Update, lang: str, current: str, example: str) -> None:
    """A command without its argument: the current value and one example."""
    await reply(update, current + "\n" + t(lang, "example", example=example))


async def parse_error_answer(update: Update, lang: str, err: parsing.ParseError) -> None:
    """One line saying what is wrong, and one example; nothing changes."""
    await show(update, lang, t(lang, err.key, **dict(err.params)), err.example)


async def bitrix_failed(update: Update, lang: str, err: BitrixError) -> None:
    """Explain a Bitrix24 failure in the user's language; the log gets the kind and code."""
    log.warning("bitrix24 failed for telegram_user_id=%d: %s %s", sender(update).id, err.kind, err.code)
    await reply(update, t(lang, "bitrix_error", reason=err.text(lang)))


async def linked_caller(update: Update, context: BotContext) -> Caller | None:
    """The caller if linked; otherwise says "not linked" and returns None."""
    who = await caller(update, context)
    if not who.linked:
        await reply(update, t(who.lang, "not_linked"))
        return None
    return who


async def stats_command(update: Update, context: BotContext) -> None:
    """Admins: the figures /metrics exports, in a readable message."""
    services = context.services
    lang = await language_of(update, context)
    if sender(update).id not in services.settings.admin_telegram_user_ids:
        await reply(update, t(lang, "admins_only"))
        return
    coordinator = services.coordinator
    linked, active = await links.counts(services.storage.db)
    result = coordinator.last_result
    stamp = datetime.fromtimestamp(result.finished_at, UTC).strftime("%Y-%m-%d %H:%M") if result else ""
    if result is None:
        last_poll = t(lang, "stats_never")
    elif result.cause is None:
        last_poll = t(lang, "stats_poll_ok", time=stamp, ok=result.ok, users=result.users)
    else:
        last_poll = t(lang, "stats_poll_failed", time=stamp, cause=result.cause)
    requests, failed = coordinator.requests_last_hour()
    outcomes = await outbox.outcomes(services.storage.db, services.clock.timestamp() - 3600)
    from bot.coordinator import COUNTERS_METHOD

    text = t(
        lang,
        "stats",
        linked=linked,
        active=active,
        last_poll=Html(last_poll),
        interval=round(coordinator.effective_interval),
        requests=requests,
        failed=failed,
        budget=round(services.bitrix.method_time_used(COUNTERS_METHOD), 1),
        budget_limit=round(services.bitrix.budget.limit),
        sent=outcomes.get("sent", 0),
        msg_failed=outcomes.get("failed", 0),
        queued=await outbox.queued_count(services.storage.db),
        no_access=len(coordinator.no_access_users),
    )
    if services.events is not None:
        text = Html(text + await _events_line(services, lang))
    text = Html(text + await _project_lines(services, lang))
    await reply(update, text)


STATS_BINDINGS_SHOWN = 20


async def _project_lines(services: Services, lang: str) -> Html:
    """/stats' project chats (SPEC 13): how many, and each chat with its project, binder and state."""
    from bot.storage import projects as project_store

    bindings = await project_store.all_bindings(services.storage.db)
    if not bindings:
        return Html("")
    lines = [t(lang, "stats_projects", n=len(bindings))]
    for b in bindings[:STATS_BINDINGS_SHOWN]:
        state = "removed" if b.removed else "suspended" if b.suspended else "archived" if b.archived else "active"
        lines.append(t(
            lang, "stats_project_line", chat_id=b.chat_id, project=b.group_name, group_id=b.group_id,
            binder=b.binder_bitrix_user_id, state=t(lang, f"stats_project_{state}"),
        ))
    if len(bindings) > STATS_BINDINGS_SHOWN:
        lines.append(t(lang, "stats_more", n=len(bindings) - STATS_BINDINGS_SHOWN))
    return Html("\n" + "\n".join(lines))


async def _events_line(services: Services, lang: str) -> Html:
    """/stats' line about Bitrix24 events (SPEC 14): counts since start and the last valid event's age."""
    from bot.events import LAST_EVENT_KEY

    metrics = services.metrics
    work = services.events
    last_at = work.last_valid_at if work is not None else None
    if last_at is None:
        stored = await meta.get_json(services.storage.db, LAST_EVENT_KEY)
        last_at = float(stored) if isinstance(stored, (int, float)) else None
    last = t(lang, "stats_never") if last_at is None else t(
        lang, "stats_ago", age=f"{max(0.0, services.clock.timestamp() - last_at):.0f} s"
    )
    return t(
        lang,
        "stats_events",
        received=metrics.total(metrics.events_received),
        rejected=metrics.total(metrics.events_rejected),
        refreshes=metrics.total(metrics.event_refreshes),
        last=last,
    )


async def unknown_command(update: Update, context: BotContext) -> None:
    """Any other command: a pointer to /help."""
    lang = await language_of(update, context)
    await reply(update, t(lang, "unknown_command"))
