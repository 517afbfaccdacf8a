"""Settings from the environment and `.env`: the only reader of os.environ (SPEC section 3)."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from bot.bitrix import normalize_webhook_url
from bot.model import zone

DEFAULT_TELEGRAM_API = "https://api.telegram.org"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_TOKEN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,100}$")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_EVENTS_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


class SettingsError(Exception):
    """Raised with one line per bad setting; never carries a secret's value."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    """Every setting of SPEC section 3, validated; secrets are kept out of repr."""

    telegram_bot_token: str = field(repr=False)
    bitrix24_webhook_url: str = field(repr=False)
    telegram_api_base_url: str = DEFAULT_TELEGRAM_API
    bitrix24_portal_url: str = ""
    bitrix24_ca_file: str | None = None
    database_path: Path = Path("data/bot.sqlite3")
    poll_interval_seconds: int = 300
    bitrix24_requests_per_second: float = 2.0
    bitrix24_burst: int = 50
    default_timezone: str = "UTC"
    default_digest_time: time = time(9, 0)
    default_language: str = "en"
    link_verification: str = "code"
    allowed_telegram_user_ids: frozenset[int] = frozenset()
    admin_telegram_user_ids: frozenset[int] = frozenset()
    log_level: str = "INFO"
    health_port: int | None = None
    bitrix24_events_token: str = field(default="", repr=False)
    events_port: int = 8090
    events_bind_address: str = "127.0.0.1"
    events_public_url: str = ""

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never reach a log line: the bot token, the webhook code and the events token."""
        code = self.bitrix24_webhook_url.rstrip("/").rsplit("/", 1)[-1]
        return (self.telegram_bot_token, code) + ((self.bitrix24_events_token,) if self.bitrix24_events_token else ())

    @property
    def events_on(self) -> bool:
        """Whether Bitrix24 events are accepted (SPEC 14): the outbound webhook's token is set."""
        return bool(self.bitrix24_events_token)

    @property
    def portal_domains(self) -> frozenset[str]:
        """The hosts an event's auth[domain] may name: the webhook's and the portal's, with and without port."""
        out = set()
        for url in (self.bitrix24_webhook_url, self.bitrix24_portal_url):
            parts = urlsplit(url)
            if parts.hostname:
                out.add(parts.hostname.lower())
                out.add(parts.netloc.lower())
        return frozenset(out)

    @property
    def webhook_host(self) -> str:
        """host[:port] of the webhook."""
        return urlsplit(self.bitrix24_webhook_url).netloc.lower()

    @property
    def portal_host(self) -> str:
        """host[:port] of the portal users open."""
        return urlsplit(self.bitrix24_portal_url).netloc.lower()

    def is_allowed(self, telegram_user_id: int) -> bool:
        """Whether this Telegram user may use the bot at all."""
        if telegram_user_id in self.admin_telegram_user_ids:
            return True
        return not self.allowed_telegram_user_ids or telegram_user_id in self.allowed_telegram_user_ids


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a .env file with python-dotenv: KEY=value lines, `#` comments, quotes, `export`.

    Values are taken literally (no ${VAR} expansion: a `$` in a secret stays); a missing file
    is empty and a key without `=` is left out.
    """
    values = dotenv_values(path, interpolate=False, encoding="utf-8")
    return {key: value for key, value in values.items() if value is not None}


def merged_environment(environ: Mapping[str, str], dotenv: Path | None = Path(".env")) -> dict[str, str]:
    """The environment with `.env` filling only variables that are unset or empty."""
    merged = {k: v for k, v in environ.items() if v != ""}
    if dotenv is not None:
        for key, value in read_dotenv(dotenv).items():
            if key not in merged and value != "":
                merged[key] = value
    return merged


def is_bitrix24_cloud(host: str) -> bool:
    """Whether a host is a Bitrix24 cloud portal (*.bitrix24.<tld>)."""
    return re.search(r"(^|\.)bitrix24\.[a-z.]+$", host.split(":")[0].lower()) is not None


def _id_list(raw: str) -> frozenset[int]:
    ids = set()
    for part in re.split(r"[,\s]+", raw.strip()):
        if not part:
            continue
        if not part.isascii() or not part.isdigit() or int(part) <= 0:
            raise ValueError(f"{part[:20]!r} is not a positive integer Telegram user ID")
        ids.add(int(part))
    return frozenset(ids)


def _int(raw: str, low: int, high: int) -> int:
    if not raw.isascii() or not raw.lstrip("-").isdigit():
        raise ValueError(f"must be a whole number from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise ValueError(f"must be a whole number from {low} to {high}")
    return value


def load_settings(environ: Mapping[str, str], dotenv: Path | None = Path(".env")) -> Settings:
    """Validate every setting at once; raise SettingsError listing each problem by variable."""
    env = merged_environment(environ, dotenv)
    problems: list[str] = []
    values: dict[str, object] = {}

    def take(name: str, attr: str, convert, default: object = None, required: bool = False) -> None:
        raw = env.get(name)
        if raw is None:
            if required:
                problems.append(f"{name}: required but not set")
            elif default is not None:
                values[attr] = default
            return
        try:
            values[attr] = convert(raw)
        except ValueError as err:
            problems.append(f"{name}: {err}")

    def token(raw: str) -> str:
        if not _TOKEN.match(raw.strip()):
            raise ValueError("does not look like a token from @BotFather (digits, a colon, then letters)")
        return raw.strip()

    def api_base(raw: str) -> str:
        url = raw.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://api.telegram.org")
        if url.endswith("/bot"):
            raise ValueError("give the server root without /bot: the bot adds /bot<token>/<method> itself")
        return url

    def webhook(raw: str) -> str:
        url = normalize_webhook_url(raw)
        parts = urlsplit(url)
        if parts.scheme == "http" and is_bitrix24_cloud(parts.netloc):
            raise ValueError("Bitrix24 cloud portals need https://")
        return url

    def portal(raw: str) -> str:
        parts = urlsplit(raw.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://corp.bitrix24.com")
        return f"{parts.scheme}://{parts.netloc}"

    def ca_file(raw: str) -> str:
        if not Path(raw).is_file():
            raise ValueError("file not found or not readable")
        try:
            ssl.create_default_context().load_verify_locations(raw)
        except (ssl.SSLError, OSError, ValueError):
            raise ValueError("is not a PEM bundle of CA certificates") from None
        return raw

    def rate(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("must be a number from 0.1 to 100") from None
        if not 0.1 <= value <= 100:
            raise ValueError("must be a number from 0.1 to 100")
        return value

    def tz(raw: str) -> str:
        try:
            zone(raw)
        except ValueError:
            raise ValueError("must be an IANA time zone name such as Europe/Moscow") from None
        if "/" not in raw and raw != "UTC":
            raise ValueError("must be an IANA time zone name such as Europe/Moscow")
        return raw

    def digest_time(raw: str) -> time:
        m = _TIME.match(raw.strip())
        if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
            raise ValueError("must be a time H:MM from 0:00 to 23:59, such as 09:00")
        return time(int(m.group(1)), int(m.group(2)))

    def one_of(*choices: str, lower: bool = True):
        def convert(raw: str) -> str:
            value = raw.strip().lower() if lower else raw.strip().upper()
            if value not in choices:
                raise ValueError("must be one of " + ", ".join(choices))
            return value

        return convert

    take("TELEGRAM_BOT_TOKEN", "telegram_bot_token", token, required=True)
    take("TELEGRAM_API_BASE_URL", "telegram_api_base_url", api_base)
    take("BITRIX24_WEBHOOK_URL", "bitrix24_webhook_url", webhook, required=True)
    take("BITRIX24_PORTAL_URL", "bitrix24_portal_url", portal)
    take("BITRIX24_CA_FILE", "bitrix24_ca_file", ca_file)
    take("DATABASE_PATH", "database_path", lambda raw: Path(raw))
    take("POLL_INTERVAL_SECONDS", "poll_interval_seconds", lambda raw: _int(raw, 1, 86400))
    take("BITRIX24_REQUESTS_PER_SECOND", "bitrix24_requests_per_second", rate)
    take("BITRIX24_BURST", "bitrix24_burst", lambda raw: _int(raw, 1, 10000))
    take("DEFAULT_TIMEZONE", "default_timezone", tz)
    take("DEFAULT_DIGEST_TIME", "default_digest_time", digest_time)
    take("DEFAULT_LANGUAGE", "default_language", one_of("en", "ru"))
    take("LINK_VERIFICATION", "link_verification", one_of("code", "none"))
    take("ALLOWED_TELEGRAM_USER_IDS", "allowed_telegram_user_ids", _id_list)
    take("ADMIN_TELEGRAM_USER_IDS", "admin_telegram_user_ids", _id_list)
    take("LOG_LEVEL", "log_level", one_of(*LOG_LEVELS, lower=False))
    take("HEALTH_PORT", "health_port", lambda raw: _int(raw, 1, 65535))

    def events_token(raw: str) -> str:
        if not _EVENTS_TOKEN.match(raw.strip()):
            raise ValueError("must be the application token shown in the outbound webhook (8 to 128 letters or digits)")
        return raw.strip()

    def bind_address(raw: str) -> str:
        try:
            return str(ipaddress.ip_address(raw.strip()))
        except ValueError:
            raise ValueError("must be an IP address such as 127.0.0.1 or 0.0.0.0") from None

    def public_url(raw: str) -> str:
        url = raw.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://bot.example.com/bitrix24/events")
        return url

    take("BITRIX24_EVENTS_TOKEN", "bitrix24_events_token", events_token)
    take("EVENTS_PORT", "events_port", lambda raw: _int(raw, 1, 65535))
    take("EVENTS_BIND_ADDRESS", "events_bind_address", bind_address)
    take("EVENTS_PUBLIC_URL", "events_public_url", public_url)
    if values.get("bitrix24_events_token") and values.get("events_port", 8090) == values.get("health_port"):
        problems.append("EVENTS_PORT: must differ from HEALTH_PORT (metrics must never face the internet)")

    if values.get("link_verification") == "none" and not values.get("allowed_telegram_user_ids"):
        if "ALLOWED_TELEGRAM_USER_IDS" not in [p.split(":")[0] for p in problems]:
            problems.append(
                "LINK_VERIFICATION: 'none' trusts whoever claims an account, so it needs ALLOWED_TELEGRAM_USER_IDS"
            )
    if problems:
        raise SettingsError(problems)
    if "bitrix24_portal_url" not in values:
        parts = urlsplit(str(values["bitrix24_webhook_url"]))
        values["bitrix24_portal_url"] = f"{parts.scheme}://{parts.netloc}"
    return Settings(**values)  # type: ignore[arg-type]


def load_from_os() -> Settings:
    """Settings from this process's environment and ./.env."""
    return load_settings(os.environ, Path(".env"))
