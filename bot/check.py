"""python -m bot check: one OK / WARN / FAIL line per check of the configuration (SPEC section 3)."""

from __future__ import annotations

import ipaddress
import socket
import sqlite3
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
from telegram import Bot
from telegram.error import InvalidToken, TelegramError
from telegram.request import HTTPXRequest

from bot.bitrix import BitrixClient, LeakyBucket, build_http_client
from bot.bitrix.client import NO_SUCH_DEPARTMENT
from bot.config import Settings
from bot.errors import BitrixError, BitrixPlanError
from bot.events import EVENT_NAMES, LAST_EVENT_KEY
from bot.events import PATH as EVENTS_PATH

Print = Callable[[str], None]


def admins_who_wrote(settings: Settings) -> set[int]:
    """Admins found in the database (read-only; a missing database means nobody wrote yet)."""
    if not settings.admin_telegram_user_ids:
        return set()
    marks = ",".join("?" * len(settings.admin_telegram_user_ids))
    rows = _read_only(
        settings,
        f"SELECT telegram_user_id FROM users WHERE blocked = 0 AND telegram_user_id IN ({marks})",
        tuple(settings.admin_telegram_user_ids),
    )
    return {int(str(r[0])) for r in rows}


def _read_only(settings: Settings, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
    """Rows of one query on the bot's database, opened read-only; none when it is missing or unreadable."""
    path = settings.database_path
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute(sql, params).fetchall()
    except sqlite3.Error:
        return []


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
    if settings.events_on:
        await _check_events(settings, line)
    return 1 if failed else 0


async def _check_events(settings: Settings, line: Callable[[str, str, str], None]) -> None:
    """SPEC 14: the listener's port, the address and events to give Bitrix24, the last event seen."""
    port = settings.events_port
    host = settings.events_bind_address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
        line("OK", "events", f"port {port} on {host} is free: the bot will listen on {port}")
    except OSError:
        # Taken: the running bot answers a POST without a token with 401; anything else is another program.
        target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        url = f"http://{f'[{target}]' if ':' in target else target}:{port}{EVENTS_PATH}"
        try:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
                answer = await http.post(url, content=b"", headers={"Content-Type": "application/x-www-form-urlencoded"})
            if answer.status_code == 401:
                line("OK", "events", f"listening on {port}")
            else:
                line("FAIL", "events", f"port {port} on {host} is used by another program (it answered HTTP {answer.status_code})")
        except httpx.HTTPError as err:
            line("FAIL", "events", f"port {port} on {host} is taken and does not answer HTTP ({type(err).__name__})")
    names = ", ".join(EVENT_NAMES)
    public = settings.events_public_url
    problem = _public_url_problem(public)
    if problem:
        line("WARN", "events url", f"{problem}; Bitrix24 posts only to a public https:// address. Then tick: {names}")
    else:
        line("OK", "events url", f"in the outbound webhook, set the handler address {public} and tick: {names}")
    last = _last_event_at(settings)
    if last is None:
        line("WARN", "events last", "no valid event received yet")
    else:
        line("OK", "events last", f"the last valid event arrived {_age(time.time() - last)} ago")


def _public_url_problem(url: str) -> str | None:
    """Why Bitrix24 could not post to EVENTS_PUBLIC_URL, or None."""
    if not url:
        return "EVENTS_PUBLIC_URL is empty"
    parts = urlsplit(url)
    if parts.scheme != "https":
        return "EVENTS_PUBLIC_URL uses http://"
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
        return f"EVENTS_PUBLIC_URL names {host}, which Bitrix24 cannot reach"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not address.is_global:
        return f"EVENTS_PUBLIC_URL names the private address {host}"
    return None


def _last_event_at(settings: Settings) -> float | None:
    rows = _read_only(settings, "SELECT value FROM meta WHERE key = ?", (LAST_EVENT_KEY,))
    try:
        return float(str(rows[0][0])) if rows else None
    except ValueError:
        return None


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


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


async def _check_team(
    settings: Settings, client: BitrixClient, scopes: set[str] | None, line: Callable[[str, str, str], None]
) -> None:
    """SPEC 3, 12: team views need LINK_VERIFICATION=code, the `department` scope and a portal that applies UF_DEPARTMENT."""
    if settings.link_verification == "none":
        line("WARN", "team view", "off: with LINK_VERIFICATION=none a false claim would open a whole department")
        return
    if scopes is not None and "department" not in scopes:
        line("WARN", "team view", "the webhook lacks the scope department: team views stay off until it is added")
        return
    try:
        # user.get drops a filter it does not apply and then returns the whole company (facts 4).
        result = await client.call("user.get", {"FILTER": {"UF_DEPARTMENT": [NO_SUCH_DEPARTMENT], "ACTIVE": True}})
    except BitrixError as err:
        line("WARN", "team view", f"could not try the department filter: {err.text('en')}")
        return
    if result:
        line("FAIL", "team view", "department filter ignored")
    else:
        line("OK", "team view", "the portal applies the department filter")


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
    scopes: set[str] | None = None
    try:
        scopes = await client.scopes()
        missing = sorted({"task", "user", "im"} - scopes)
        if missing:
            line("FAIL", "scope", "the webhook lacks scopes: " + ", ".join(missing))
        else:
            line("OK", "scope", "task, user and im are granted")
        if settings.link_verification == "none":
            line("WARN", "projects", "project chats are off with LINK_VERIFICATION=none")
        elif "sonet_group" not in scopes:
            line("WARN", "projects", "the webhook lacks the optional scope sonet_group: project chats stay off")
    except BitrixError as err:
        line("FAIL", "scope", err.text("en"))
    await _check_task_filter(client, line)
    await _check_team(settings, client, scopes, line)
    try:
        profile = await client.profile()
        if profile.get("ADMIN") in (True, "Y", "1", 1):
            line("OK", "admin", "the webhook belongs to a portal administrator")
        else:
            line("FAIL", "admin", "the webhook's owner is not an administrator: other users' counters will read as no access")
    except BitrixError as err:
        line("FAIL", "admin", err.text("en"))
