"""/project and the three group buttons (SPEC 13): bind a group to a Bitrix24 project, its view and digest settings."""

from __future__ import annotations

import logging

from telegram import Chat, Message, Update
from telegram.constants import ChatType

from bot import parsing, preferences
from bot.errors import BitrixError, BitrixScopeError
from bot.handlers.core import bitrix_failed, caller, chat_of, parse_error_answer, query_of, reply, show
from bot.handlers.counters import edit_in_place
from bot.project_view import parse_offer_callback
from bot.projects import FilterIgnored, Said
from bot.render import digest_value
from bot.services import BotContext
from bot.storage import projects as store
from bot.texts import Html, t

log = logging.getLogger(__name__)

GROUP_CHATS = (ChatType.GROUP, ChatType.SUPERGROUP)


def topic_of(message: Message | None) -> int | None:
    """The forum topic a message is in (None outside forums)."""
    if message is None or not message.is_topic_message:
        return None
    return message.message_thread_id


def _group_chat(chat: Chat) -> bool:
    """Groups and supergroups without a public @username (a public group is readable by anyone)."""
    return chat.type in GROUP_CHATS and not chat.username


async def _answer(update: Update, said: Said) -> None:
    await reply(update, said.text, said.markup)


async def project_command(update: Update, context: BotContext) -> None:
    """Binds this group to a Bitrix24 project, shows its overdue tasks, or changes its digest."""
    services = context.services
    projects = services.projects
    who = await caller(update, context)
    lang = who.lang
    chat = chat_of(update)
    if chat.type == ChatType.PRIVATE:
        await _private(update, context, lang)
        return
    if not projects.enabled:
        await reply(update, t(lang, "project_disabled"))
        return
    if not _group_chat(chat):
        await reply(update, t(lang, "project_wrong_chat"))
        return
    hosts = {services.settings.webhook_host, services.settings.portal_host}
    try:
        command = parsing.parse_project(context.args or [], hosts)
    except parsing.ParseError as err:
        await parse_error_answer(update, lang, err)
        return
    binding = await store.get(services.storage.db, chat.id)
    try:
        if isinstance(command, parsing.ProjectBind):
            said = await projects.offer(chat.id, topic_of(update.effective_message), who.telegram_user_id, command.group_id, lang)
            await _answer(update, said)
            return
        if binding is None:
            await reply(update, t(lang, "project_usage"))
            return
        if isinstance(command, parsing.ProjectView):
            if not binding.live:
                await reply(update, t(binding.lang, "project_suspended_view", project=binding.group_name))
                return
            await _answer(update, await projects.view(binding))
            return
        if not await projects.may_manage(binding, who.telegram_user_id):
            await reply(update, t(lang, "project_who_may"))
            return
        if isinstance(command, parsing.ProjectOff):
            await _answer(update, await projects.end(chat.id, lang))
            return
        await _setting(update, context, chat.id, command, binding.lang)
    except BitrixScopeError:
        await reply(update, t(lang, "project_scope"))
    except FilterIgnored:
        await reply(update, t(lang, "tasks_unavailable"))
    except BitrixError as err:
        await bitrix_failed(update, lang, err)


async def _setting(update: Update, context: BotContext, chat_id: int, command: parsing.ProjectSetting, lang: str) -> None:
    """`/project digest …`, `/project timezone …`, `/project language …`: the chat's own digest settings."""
    projects = context.services.projects
    example = f"/project {command.what} " + {"digest": "9:30 mon-fri", "timezone": "Europe/Moscow", "language": "ru"}[command.what]
    try:
        if command.what == "digest":
            parsed = parsing.parse_digest(list(command.args))
            if isinstance(parsed, (parsing.Show, parsing.DigestNow, parsing.DigestTasks)):
                binding = await store.get(context.services.storage.db, chat_id)
                assert binding is not None
                await show(update, lang, t(lang, "current_digest", value=Html(digest_value(lang, binding.settings))), example)
                return
            digest_command = parsed
            after = await projects.change(chat_id, lambda s: preferences.apply_digest(s, digest_command))
        elif command.what == "timezone":
            zone = parsing.parse_timezone(list(command.args))
            if isinstance(zone, parsing.Show):
                await show(update, lang, t(lang, "project_current_zone"), example)
                return
            zone_name = zone
            after = await projects.change(chat_id, lambda s: preferences.apply_timezone(s, zone_name))
        else:
            language = parsing.parse_language(list(command.args))
            if isinstance(language, parsing.Show):
                await show(update, lang, t(lang, "project_current_language"), example)
                return
            chosen = language
            after = await projects.change(chat_id, lambda s: preferences.apply_language(s, chosen))
    except parsing.ParseError as err:
        await parse_error_answer(update, lang, err)
        return
    if after is None:
        await reply(update, t(lang, "project_usage"))
        return
    s = after.settings
    await reply(
        update,
        t(after.lang, "project_saved", digest=Html(digest_value(after.lang, s)), zone=s.timezone,
          empty=t(after.lang, "settings_empty_send") if s.digest_empty else t(after.lang, "settings_empty_skip"),
          language=s.language or "en"),
    )


async def _private(update: Update, context: BotContext, lang: str) -> None:
    """In a private chat /project explains itself; a bot admin may end a binding by chat id: /project off <chat id>."""
    args = context.args or []
    user = update.effective_user
    if user is not None and context.services.projects.is_admin(user.id) and len(args) == 2 and args[0].lower() == "off":
        raw = args[1]
        if raw.lstrip("-").isdigit() and len(raw) <= 20:
            await _answer(update, await context.services.projects.end(int(raw), lang))
            return
    await reply(update, t(lang, "project_private"))


async def project_button(update: Update, context: BotContext) -> None:
    """Connect, Cancel and the project refresh: the only buttons that work in groups."""
    query = query_of(update)
    services = context.services
    who = await caller(update, context)
    data = query.data or ""
    message = query.message if isinstance(query.message, Message) else None
    chat = message.chat if message is not None else None
    if chat is None or not _group_chat(chat) or not services.projects.enabled:
        await query.answer()
        return
    if data == "pj:r":
        binding = await store.get(services.storage.db, chat.id)
        if binding is None or not binding.live:
            await query.answer()
            return
        try:
            said = await services.projects.view(binding)
        except (BitrixError, FilterIgnored) as err:
            log.warning("project refresh for chat_id=%d failed: %s", chat.id, err)
            await query.answer(t(binding.lang, "project_refresh_failed"))
            return
        await query.answer()
        await edit_in_place(query, said.text, said.markup)
        return
    parsed = parse_offer_callback(data)
    if parsed is None:
        await query.answer()
        return
    action, offer_id = parsed
    try:
        pressed = await services.projects.press(action, offer_id, who.telegram_user_id, topic_of(message), who.lang)
    except BitrixScopeError:
        await query.answer()
        await edit_in_place(query, t(who.lang, "project_scope"), None)
        return
    except BitrixError as err:
        await query.answer(err.text(who.lang)[:190])
        return
    if pressed is None:
        await query.answer(t(who.lang, "project_not_yours"))
        return
    await query.answer()
    await edit_in_place(query, pressed.text, pressed.markup)
