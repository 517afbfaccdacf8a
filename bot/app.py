"""build_application(): wires settings, storage and clients into a PTB Application; run() drives it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from telegram import BotCommand, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import Application, ApplicationBuilder, ContextTypes, Defaults
from telegram.request import BaseRequest, HTTPXRequest

from bot import handlers, jobs
from bot.delivery import DeliveryLimiter
from bot.services import BotContext, Services
from bot.texts import COMMANDS

log = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]
SHUTDOWN_BUDGET_SECONDS = 20.0
CONCURRENT_UPDATES = 16


class FatalStartupError(Exception):
    """Start-up cannot go on (token rejected, database unusable): exit status 1."""


def build_application(
    services: Services,
    *,
    request: BaseRequest | None = None,
    get_updates_request: BaseRequest | None = None,
    limiter: DeliveryLimiter | None = None,
) -> Application:
    """A configured Application: handlers, jobs' defaults, HTML by default; nothing started."""
    settings = services.settings
    root = settings.telegram_api_base_url
    builder = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token)
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .context_types(ContextTypes(context=BotContext))
        .defaults(Defaults(parse_mode=ParseMode.HTML, link_preview_options=LinkPreviewOptions(is_disabled=True)))
        .request(request or HTTPXRequest(connection_pool_size=64, read_timeout=15.0, connect_timeout=10.0))
        .get_updates_request(get_updates_request or HTTPXRequest(read_timeout=15.0, connect_timeout=10.0))
        .rate_limiter(limiter or DeliveryLimiter())
        # One user's slow Bitrix24 read (retries can take a minute) must not hold everyone else's
        # updates; state is per user and every transaction is serialised in Storage.
        .concurrent_updates(CONCURRENT_UPDATES)
    )
    app = builder.build()
    app.bot_data["services"] = services
    services.projects.member_check = _member_check(app)
    # APScheduler 3 skips a run that starts more than 1 s late; a busy loop must not lose a poll.
    job_queue = jobs.job_queue_of(app)
    job_queue.scheduler.configure(
        job_defaults={"misfire_grace_time": 120, "coalesce": True, "max_instances": 1},
        **job_queue.scheduler_configuration,
    )
    handlers.register(app)
    return app


def _member_check(app: Application) -> Any:
    """getChatMember as the project re-check asks it: in the chat, not in it, or None when Telegram did not say."""

    async def check(chat_id: int, telegram_user_id: int) -> bool | None:
        try:
            member = await app.bot.get_chat_member(chat_id, telegram_user_id)
        except BadRequest:
            return False  # "user not found", "chat not found": not a member there
        except Forbidden:
            return False  # the bot is no longer in the chat
        except TelegramError as err:
            log.warning("getChatMember for chat_id=%d failed (%s); re-checked later", chat_id, type(err).__name__)
            return None
        if member.status in ("creator", "administrator", "member"):
            return True
        return member.status == "restricted" and bool(getattr(member, "is_member", False))

    return check


async def initialize_with_retry(app: Application, stop: asyncio.Event) -> bool:
    """initialize() (getMe) until it works: a rejected token is fatal, an unreachable Telegram is not."""
    delay = 1.0
    while not stop.is_set():
        try:
            await app.initialize()
            return True
        except InvalidToken as err:
            raise FatalStartupError("Telegram rejected TELEGRAM_BOT_TOKEN") from err
        except (NetworkError, TimedOut, RetryAfter) as err:
            log.warning("Telegram is not reachable yet (%s); retrying in %.0f s", type(err).__name__, delay)
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            pass
        delay = min(delay * 2, 60.0)
    return False


async def set_commands(app: Application) -> None:
    """Register the command menu in English (default) and Russian."""
    for lang, commands in COMMANDS.items():
        bot_commands = [BotCommand(name, description) for name, description in commands]
        await app.bot.set_my_commands(bot_commands, language_code=None if lang == "en" else lang)


async def run(app: Application, stop: asyncio.Event) -> None:
    """Run until `stop` is set: polling, jobs, background services; then shut down within SHUTDOWN_BUDGET_SECONDS."""
    services: Services = app.bot_data["services"]
    services.started_at = services.clock.timestamp()
    if not await initialize_with_retry(app, stop):
        return
    # Tasks started from here on are the bot's own: shutdown may cancel those still running at its deadline.
    before = asyncio.all_tasks()
    try:
        try:
            await set_commands(app)
        except (NetworkError, TimedOut, RetryAfter) as err:
            log.warning("could not register the command menu (%s); continuing", type(err).__name__)
        if app.updater is None:
            raise FatalStartupError("the Application was built without an Updater")
        await app.updater.start_polling(
            allowed_updates=ALLOWED_UPDATES, bootstrap_retries=-1, timeout=10, poll_interval=0.0
        )
        await app.start()
        await jobs.start(app)
        log.info("bot started")
        await stop.wait()
        log.info("stopping")
    finally:
        await _shutdown(app, before)


async def _shutdown(app: Application, before: set[asyncio.Task[Any]]) -> None:
    """Stop within SHUTDOWN_BUDGET_SECONDS (docker kills at 30 s): cut what still runs at the deadline. Never raises.

    Application.stop() waits for every running handler and job; one waiting on a slow Bitrix24 would
    hold it for minutes. Jobs are cut at once (their work races the supervisor's stop event); handlers
    get most of the budget to finish, then are cancelled so stop() can complete.
    """
    from bot.supervise import cut_stragglers, within

    budget = SHUTDOWN_BUDGET_SECONDS
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget

    def left(reserve: float = 0.0) -> float:
        """Seconds until the deadline, keeping `reserve` of the budget for the steps after."""
        return max(0.0, deadline - reserve * budget - loop.time())

    jobs.begin_stop(app)  # running jobs are cancelled now; nothing is scheduled again
    background = asyncio.create_task(jobs.stop(app, timeout=0.4 * budget), name="shutdown:background")
    if app.updater and app.updater.running:
        # Its last getUpdates only confirms the offset; a Telegram that does not answer must not hold us.
        await within("stopping telegram polling", app.updater.stop(), 0.25 * budget)
    if app.running:
        stopping = asyncio.create_task(app.stop(), name="shutdown:application")
        await asyncio.wait({stopping}, timeout=left(0.25))
        if not stopping.done():
            await cut_stragglers(before, {stopping, background}, grace=left(0.2))
            await asyncio.wait({stopping}, timeout=left(0.15))
        if not stopping.done():
            log.warning("shutdown: the application did not stop within the budget; cut short")
            stopping.cancel()
            await asyncio.wait({stopping}, timeout=left(0.1))
        if stopping.done() and not stopping.cancelled() and stopping.exception() is not None:
            log.error("shutdown: stopping the application failed", exc_info=stopping.exception())
    await within("background work", background, left(0.1))
    # Closes the Bot API connections; quick, so it gets its second even past the deadline.
    await within("Application.shutdown", app.shutdown(), max(left(), 1.0))
    log.info("stopped")
