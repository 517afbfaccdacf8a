"""python -m bot check: one OK / WARN / FAIL line per check of the configuration (SPEC section 3)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import httpx
from telegram import Bot
from telegram.error import InvalidToken, TelegramError
from telegram.request import HTTPXRequest

from bot.bitrix import BitrixClient, LeakyBucket, build_http_client
from bot.config import Settings
from bot.errors import BitrixError, BitrixPlanError

Print = Callable[[str], None]


def admins_who_wrote(settings: Settings) -> set[int]:
    """Admins found in the database (read-only; a missing database means nobody wrote yet)."""
    path = settings.database_path
    if not path.exists() or not settings.admin_telegram_user_ids:
        return set()
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            marks = ",".join("?" * len(settings.admin_telegram_user_ids))
            rows = db.execute(
                f"SELECT telegram_user_id FROM users WHERE blocked = 0 AND telegram_user_id IN ({marks})",
                tuple(settings.admin_telegram_user_ids),
            ).fetchall()
    except sqlite3.Error:
        return set()
    return {r[0] for r in rows}


async def run_check(
    settings: Settings,
    *,
    out: Print = print,
    telegram_request: HTTPXRequest | None = None,
    bitrix_transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """Run every check; exit status 1 if any FAILed, else 0."""
    failed = False

    def line(status: str, what: str, detail: str) -> None:
        nonlocal failed
        failed = failed or status == "FAIL"
        out(f"{status} {what}: {detail}")

    line("OK", "settings", "every variable is valid")

    bot = Bot(
        settings.telegram_bot_token,
        base_url=f"{settings.telegram_api_base_url}/bot",
        request=telegram_request or HTTPXRequest(connect_timeout=10.0, read_timeout=15.0),
    )
    try:
        me = await bot.get_me()
        line("OK", "telegram", f"the token belongs to @{me.username}")
    except InvalidToken:
        line("FAIL", "telegram", "Telegram rejected TELEGRAM_BOT_TOKEN")
    except TelegramError as err:
        line("FAIL", "telegram", f"Telegram is not reachable ({type(err).__name__})")
    finally:
        await bot.shutdown()

    http = build_http_client(settings.bitrix24_ca_file, transport=bitrix_transport)
    client = BitrixClient(
        settings.bitrix24_webhook_url,
        http,
        LeakyBucket(settings.bitrix24_requests_per_second, settings.bitrix24_burst),
        max_attempts=2,
        max_retry_seconds=10.0,
    )
    try:
        await _check_bitrix(settings, client, line)
    finally:
        await http.aclose()

    if settings.bitrix24_webhook_url.startswith("http://"):
        line("WARN", "http", "the webhook uses http://: the webhook code crosses the network unencrypted")
    else:
        line("OK", "http", "the webhook uses https://")
    if settings.default_timezone == "UTC":
        line("WARN", "timezone", "DEFAULT_TIMEZONE is UTC: users whose Bitrix24 profile has no zone get digests in UTC")
    else:
        line("OK", "timezone", f"DEFAULT_TIMEZONE is {settings.default_timezone}")
    if settings.admin_telegram_user_ids:
        silent = sorted(settings.admin_telegram_user_ids - admins_who_wrote(settings))
        if silent:
            line("WARN", "admins", "never wrote to the bot, so it cannot message them: " + ", ".join(map(str, silent)))
        else:
            line("OK", "admins", "every admin has written to the bot")
    else:
        line("WARN", "admins", "ADMIN_TELEGRAM_USER_IDS is empty: failures go to the log only")
    return 1 if failed else 0


# An ID no portal user has: a portal that applies the MEMBER filter returns no task for it.
SENTINEL_USER_ID = 2_147_483_000


async def _check_task_filter(client: BitrixClient, line: Callable[[str, str, str], None]) -> None:
    """SPEC 3: tasks.task.list with MEMBER = an ID that is no user must return no task, or lists stay off."""
    try:
        result = await client.call(
            "tasks.task.list", {"filter": {"MEMBER": SENTINEL_USER_ID}, "select": ["ID"], "start": -1}
        )
    except BitrixError as err:
        line("WARN", "task lists", f"could not try the member filter: {err.text('en')}")
        return
    tasks = result.get("tasks") if isinstance(result, dict) else None
    if tasks:
        line("FAIL", "task lists", "member filter ignored, lists off")
    else:
        line("OK", "task lists", "the portal applies the member filter")


async def _check_bitrix(settings: Settings, client: BitrixClient, line: Callable[[str, str, str], None]) -> None:
    try:
        owner = await client.user_current()
        line("OK", "bitrix24", f"the webhook answers as user {owner.bitrix_user_id} ({owner.full_name})")
    except BitrixPlanError as err:
        line("FAIL", "bitrix24", err.text("en"))
        line("FAIL", "plan", "the portal's plan has no REST API")
        return
    except BitrixError as err:
        line("FAIL", "bitrix24", err.text("en"))
        if err.kind in ("auth", "transient", "bad_answer", "portal_gone", "rate_limited"):
            return  # nothing else can be learned through this webhook now
    line("OK", "plan", "the portal's plan has the REST API")
    try:
        scopes = await client.scopes()
        missing = sorted({"task", "user", "im"} - scopes)
        if missing:
            line("FAIL", "scope", "the webhook lacks scopes: " + ", ".join(missing))
        else:
            line("OK", "scope", "task, user and im are granted")
    except BitrixError as err:
        line("FAIL", "scope", err.text("en"))
    await _check_task_filter(client, line)
    try:
        profile = await client.profile()
        if profile.get("ADMIN") in (True, "Y", "1", 1):
            line("OK", "admin", "the webhook belongs to a portal administrator")
        else:
            line("FAIL", "admin", "the webhook's owner is not an administrator: other users' counters will read as no access")
    except BitrixError as err:
        line("FAIL", "admin", err.text("en"))
