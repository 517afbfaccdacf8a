"""Telegram commands and buttons: parse -> call the core -> render -> send."""

from __future__ import annotations

from telegram import Update
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.handlers.core import (
    chat_member_update,
    gate,
    help_command,
    on_error,
    start_command,
    stats_command,
    unknown_command,
)
from bot.handlers.counters import counters_button, counters_command
from bot.handlers.linking import forget_command, link_command, text_message, unlink_command, verify_command
from bot.handlers.projects import project_button, project_command
from bot.handlers.settings import (
    alerts_command,
    digest_command,
    language_command,
    pause_command,
    quiet_command,
    resume_command,
    settings_button,
    settings_command,
    snooze_button,
    timezone_command,
)
from bot.handlers.tasks import tasks_button, tasks_command, tasks_new_button
from bot.handlers.team import team_button, team_command


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
    app.add_handler(CommandHandler("tasks", tasks_command))
    app.add_handler(CommandHandler("team", team_command))
    app.add_handler(CommandHandler("settings", settings_command))
    app.add_handler(CommandHandler("digest", digest_command))
    app.add_handler(CommandHandler("alerts", alerts_command))
    app.add_handler(CommandHandler("quiet", quiet_command))
    app.add_handler(CommandHandler("timezone", timezone_command))
    app.add_handler(CommandHandler("language", language_command))
    app.add_handler(CommandHandler("pause", pause_command))
    app.add_handler(CommandHandler("resume", resume_command))
    app.add_handler(CallbackQueryHandler(counters_button, pattern=r"^c:"))
    app.add_handler(CallbackQueryHandler(tasks_button, pattern=r"^tr?:"))
    app.add_handler(CallbackQueryHandler(tasks_new_button, pattern=r"^tn:"))
    app.add_handler(CallbackQueryHandler(team_button, pattern=r"^tm:"))
    app.add_handler(CallbackQueryHandler(settings_button, pattern=r"^s:"))
    app.add_handler(CallbackQueryHandler(snooze_button, pattern=r"^z:"))
    app.add_handler(CommandHandler("project", project_command))
    app.add_handler(CallbackQueryHandler(project_button, pattern=r"^pj:"))
    app.add_handler(CommandHandler("stats", stats_command))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND & filters.ChatType.PRIVATE, text_message))
    app.add_handler(MessageHandler(filters.COMMAND & filters.ChatType.PRIVATE, unknown_command))
    app.add_handler(ChatMemberHandler(chat_member_update, ChatMemberHandler.MY_CHAT_MEMBER))
    app.add_error_handler(on_error)
