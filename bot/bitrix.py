"""BitrixClient: the only code that knows Bitrix24 URLs, envelopes, batch and limits."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence
from urllib.parse import urlencode, urlsplit

import httpx

from bot.errors import (
    BitrixAuthError,
    BitrixBadAnswerError,
    BitrixError,
    BitrixMethodError,
    BitrixPermissionError,
    BitrixPlanError,
    BitrixPortalGoneError,
    BitrixRateLimitedError,
    BitrixScopeError,
    BitrixTimeBudgetError,
    BitrixTransientError,
    error_from_envelope,
)
from bot.model import ROLES

__all__ = [
    "NO_ACCESS",
    "BatchResult",
    "BitrixClient",
    "BitrixStats",
    "BitrixUser",
    "CounterResult",
    "Counters",
    "LeakyBucket",
    "NoAccess",
    "Operating",
    "RedactFilter",
    "build_http_client",
    "normalize_webhook_url",
    "php_query",
    "redact",
]

log = logging.getLogger("bot.bitrix")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

BATCH_SIZE = 50  # batch.md: at most 50 commands per request
COUNTERS_METHOD = "tasks.task.counters.get"
# How many counter batches may be in flight at once. The bucket sets the rate; a little
# overlap only hides round trips (limits.md asks not to run parallel series, so keep it small).
COUNTERS_IN_FLIGHT = 3
# Bitrix24 sums execution time over ten one-minute baskets (limits.md).
BUDGET_WINDOW = 600.0
DEFAULT_BLOCK = 600.0  # OPERATION_TIME_LIMIT lifts "automatically after 10 minutes" (system-errors.ru.md)
_BACKOFF_BASE = 1.0
INTERACTIVE_DEADLINE = 15.0  # temporary: replaced by the bitrix package
_BACKOFF_CAP = 30.0

_WEBHOOK_PATH = re.compile(r"^/rest/(\d+)/([A-Za-z0-9_-]+)(?:/([A-Za-z0-9_.]*))?/?$")
_METHOD_NAME = re.compile(r"^[a-z0-9_.]+$", re.IGNORECASE)
_REDACT = re.compile(r"(/rest/\d+/)[^/\s?#\"'<>]+")

# A whole-request failure of this kind will fail every other batch the same way.
_STOPS_CYCLE: tuple[type[BitrixError], ...] = (
    BitrixAuthError,
    BitrixScopeError,
    BitrixPlanError,
    BitrixPortalGoneError,
    BitrixTimeBudgetError,
    BitrixPermissionError,
)
_RETRYABLE: tuple[type[BitrixError], ...] = (BitrixTransientError, BitrixRateLimitedError, BitrixBadAnswerError)


# -- URLs and redaction ----------------------------------------------------------------


def normalize_webhook_url(raw: str) -> str:
    """Return the canonical webhook base `scheme://host[:port]/rest/<id>/<code>/`; ValueError if malformed."""
    text = (raw or "").strip()
    hint = "expected http(s)://<portal>/rest/<user id>/<webhook code>/"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"not a valid URL; {hint}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"must start with https:// (or http://); {hint}")
    if not parts.hostname:
        raise ValueError(f"has no host; {hint}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"must not contain a user name or password; {hint}")
    if parts.query or parts.fragment:
        raise ValueError(f"must not contain ?query or #fragment; {hint}")
    match = _WEBHOOK_PATH.match(parts.path)
    if not match:
        raise ValueError(f"path is not /rest/<user id>/<webhook code>/; {hint}")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{scheme}://{netloc}/rest/{match.group(1)}/{match.group(2)}/"


def redact(text: str) -> str:
    """Replace every `/rest/<digits>/<code>` with `/rest/<digits>/<redacted>`."""
    return _REDACT.sub(r"\1<redacted>", text)


class RedactFilter(logging.Filter):
    """A logging filter that redacts webhook codes from a record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drop it."""
        try:
            message = record.getMessage()
        except Exception:  # a broken record must not break logging; leave it alone
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_HTTPX_FILTER = RedactFilter()


def _install_log_redaction() -> None:
    """httpx logs every request URL at INFO: make sure the code never reaches a handler."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if _HTTPX_FILTER not in logger.filters:
            logger.addFilter(_HTTPX_FILTER)


def php_query(params: Mapping[str, Any]) -> str:
    """Encode params like PHP's http_build_query (nested `a[b][0]=c`, booleans as 1/0, None skipped)."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}[{key}]", item)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(f"{prefix}[{index}]", item)
        elif isinstance(value, bool):
            pairs.append((prefix, "1" if value else "0"))
        else:
            pairs.append((prefix, str(value)))

    for key, value in params.items():
        walk(str(key), value)
    return urlencode(pairs)


# -- leaky bucket ------------------------------------------------------------------------


class LeakyBucket:
    """Client-side mirror of Bitrix24's leaky bucket: +1 per request, drains `rate` per second."""

    # The server rejects a request once its counter would pass `burst`. We stay one request
    # and 2 % of the drain rate below it, so that requests reaching the server a little
    # later (or bunched) than we let them go never tip its bucket over.
    BURST_MARGIN = 1
    RATE_MARGIN = 0.98

    def __init__(
        self,
        rate: float = 2.0,
        burst: int = 50,
        *,
        monotonic: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._drain = rate * self.RATE_MARGIN
        self._capacity = float(max(1, burst - self.BURST_MARGIN))
        self._monotonic = monotonic
        self._sleep = sleep
        self._level = 0.0
        self._at = monotonic()
        self._lock = asyncio.Lock()

    def _leak(self) -> None:
        now = self._monotonic()
        self._level = max(0.0, self._level - (now - self._at) * self._drain)
        self._at = now

    async def acquire(self) -> None:
        """Wait until one more request fits in the bucket, then count it."""
        async with self._lock:
            while True:
                self._leak()
                # The tolerance and the minimum wait keep float rounding of large clock
                # values from turning into an endless series of tiny sleeps.
                if self._level + 1.0 <= self._capacity + 1e-6:
                    self._level += 1.0
                    return
                await self._sleep(max(0.001, (self._level + 1.0 - self._capacity) / self._drain))

    def saturate(self) -> None:
        """The server said the bucket is full (503): assume it is, so the next requests wait."""
        self._leak()
        self._level = max(self._level, self._capacity)

    @property
    def level(self) -> float:
        """The current counter value, after draining."""
        self._leak()
        return self._level


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counters:
    """One user's counters for one role: every name Bitrix24 returned, as ints."""

    values: dict[str, int]

    def get(self, name: str, default: int = 0) -> int:
        """One counter's value, `default` when absent."""
        return self.values.get(name, default)


class NoAccess:
    """`result: []`: the user does not exist or the webhook may not read them."""

    _instance: "NoAccess | None" = None

    def __new__(cls) -> "NoAccess":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_ACCESS"

    def __bool__(self) -> bool:
        return False


NO_ACCESS = NoAccess()
CounterResult = Counters | NoAccess | BitrixError


@dataclass(frozen=True)
class BitrixUser:
    """A Bitrix24 user as user.get / user.current return them."""

    bitrix_user_id: int
    first_name: str
    last_name: str
    email: str
    active: bool
    time_zone: str
    is_admin: bool | None

    @property
    def full_name(self) -> str:
        """First and last name, or the ID when both are empty."""
        name = " ".join(part for part in (self.first_name, self.last_name) if part)
        return name or f"#{self.bitrix_user_id}"


@dataclass(frozen=True)
class BatchResult:
    """What one `batch()` returned, keyed by command key."""

    results: dict[str, Any]
    errors: dict[str, BitrixError]
    times: dict[str, float]


@dataclass(frozen=True)
class Operating:
    """The last `time.operating` block seen for a method (cloud only)."""

    operating: float
    reset_at: float | None
    seen_at: float


@dataclass
class BitrixStats:
    """Counts for metrics: HTTP requests by outcome ("ok" or an error kind)."""

    requests_total: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    http_503: int = 0
    http_429: int = 0
    retries: int = 0

    def count(self, outcome: str, http_status: int | None) -> None:
        """Count one finished HTTP request."""
        self.requests_total += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if http_status == 503:
            self.http_503 += 1
        elif http_status == 429:
            self.http_429 += 1


def build_http_client(
    ca_file: str | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An httpx client for Bitrix24: 10 s connect / 70 s read, no redirects, optional extra CA."""
    _install_log_redaction()
    kwargs: dict[str, Any] = {"timeout": httpx.Timeout(70.0, connect=10.0), "follow_redirects": False}
    if ca_file:
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(ca_file)
        kwargs["verify"] = ctx
    if transport is not None:
        kwargs["transport"] = transport
    return httpx.AsyncClient(**kwargs)


# -- parsing helpers ---------------------------------------------------------------------


def _as_map(value: Any) -> dict[str, Any]:
    """PHP sends an empty map as `[]` and a map with keys 0..n-1 as a list."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


def _to_int(value: Any) -> int | None:
    """Coerce a counter value to int; None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _flag(value: Any) -> bool:
    """Bitrix24 booleans: JSON true/false or "Y"/"N"."""
    if isinstance(value, str):
        return value.strip().upper() in ("Y", "1", "TRUE")
    return bool(value)


def _user_from(raw: Any) -> BitrixUser | None:
    """Build a BitrixUser from a user.get / user.current item; None when it has no ID."""
    if not isinstance(raw, dict):
        return None
    bitrix_user_id = _to_int(raw.get("ID"))
    if bitrix_user_id is None:
        return None
    admin = raw.get("ADMIN")
    return BitrixUser(
        bitrix_user_id=bitrix_user_id,
        first_name=str(raw.get("NAME") or ""),
        last_name=str(raw.get("LAST_NAME") or ""),
        email=str(raw.get("EMAIL") or ""),
        active=_flag(raw.get("ACTIVE", True)),
        time_zone=str(raw.get("TIME_ZONE") or ""),
        is_admin=None if admin is None else _flag(admin),
    )


def _parse_counters(result: Any, method: str) -> CounterResult:
    """`[]` is NO_ACCESS; a map becomes Counters (non-dict items and non-numbers skipped)."""
    if isinstance(result, list):
        if not result:
            return NO_ACCESS
        return BitrixBadAnswerError("UNEXPECTED_RESULT", method=method)
    if not isinstance(result, dict):
        return BitrixBadAnswerError("UNEXPECTED_RESULT", method=method)
    values: dict[str, int] = {}
    for name, item in result.items():
        if not isinstance(item, dict):
            continue
        value = _to_int(item.get("counter"))
        if value is not None:
            values[str(name)] = value
    return Counters(values)


# -- the client ----------------------------------------------------------------------------


class BitrixClient:
    """Calls one Bitrix24 inbound webhook: typed errors, retries, rate and time-budget limits."""

    def __init__(
        self,
        webhook_url: str,
        http: httpx.AsyncClient,
        bucket: LeakyBucket,
        *,
        monotonic: Clock = time.monotonic,
        wall: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        max_attempts: int = 5,
        max_retry_seconds: float = 60.0,
    ) -> None:
        self._base = normalize_webhook_url(webhook_url)
        self._http = http
        self._bucket = bucket
        self._monotonic = monotonic
        self._wall = wall
        self._sleep = sleep
        self._rng = rng
        self._max_attempts = max(1, max_attempts)
        self._max_retry_seconds = max_retry_seconds
        self._operating: dict[str, Operating] = {}
        self._durations: dict[str, deque[tuple[float, float]]] = {}
        self._blocked_until: dict[str, float] = {}
        self.stats = BitrixStats()
        _install_log_redaction()

    def __repr__(self) -> str:
        return f"BitrixClient({redact(self._base)!r})"

    # -- time budget ------------------------------------------------------------------

    def method_time_used(self, method: str, now: float | None = None) -> float:
        """Seconds of `method` execution reported over the last 10 minutes (sliding)."""
        wall = self._wall()
        now = wall if now is None else now
        entries = self._durations.get(method)
        if not entries:
            return 0.0
        while entries and entries[0][0] <= wall - BUDGET_WINDOW:
            entries.popleft()
        return sum(duration for at, duration in entries if now - BUDGET_WINDOW < at <= now)

    def last_operating(self, method: str) -> Operating | None:
        """The last `time.operating` / `operating_reset_at` seen for `method`, if any."""
        return self._operating.get(method)

    def blocked_until(self, method: str) -> float | None:
        """Wall time until which `method` is refused after OPERATION_TIME_LIMIT, if blocked."""
        until = self._blocked_until.get(method)
        if until is None or until <= self._wall():
            return None
        return until

    def _record_time(self, method: str, block: Any, *, count_duration: bool = True) -> float | None:
        """Remember duration and operating figures of one `time` block; return the duration."""
        if not isinstance(block, dict):
            return None
        now = self._wall()
        duration = _to_float(block.get("duration"))
        if duration is None:
            start, finish = _to_float(block.get("start")), _to_float(block.get("finish"))
            if start is not None and finish is not None and finish >= start:
                duration = finish - start
        if duration is not None and count_duration:
            self._durations.setdefault(method, deque()).append((now, duration))
        operating = _to_float(block.get("operating"))
        if operating is not None:
            self._operating[method] = Operating(operating, _to_float(block.get("operating_reset_at")), now)
        return duration

    def _check_blocked(self, methods: Sequence[str]) -> None:
        """Refuse, without a request, a call that would use a method still time-blocked."""
        now = self._wall()
        for method in methods:
            until = self._blocked_until.get(method)
            if until is not None and until > now:
                raise BitrixTimeBudgetError("OPERATION_TIME_LIMIT", retry_after=until - now, method=method)

    def _block(self, method: str) -> float:
        """Block `method` until its last known operating_reset_at (else 10 min); return seconds."""
        now = self._wall()
        last = self._operating.get(method)
        retry_after = DEFAULT_BLOCK
        if last is not None and last.reset_at is not None and last.reset_at > now:
            retry_after = last.reset_at - now
        previous = self._blocked_until.get(method)
        self._blocked_until[method] = now + retry_after
        if previous is None or previous <= now:
            log.warning("bitrix %s blocked by OPERATION_TIME_LIMIT for %.0f s", method, retry_after)
        return retry_after

    # -- HTTP ---------------------------------------------------------------------------

    async def _attempt(self, method: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """One HTTP request: returns the envelope or raises a typed error."""
        await self._bucket.acquire()
        started = self._monotonic()
        status: int | None = None
        try:
            try:
                response = await self._http.post(self._base + method, json=dict(payload))
            except httpx.TimeoutException as err:
                raise BitrixTransientError("TIMEOUT", method=method) from err
            except httpx.ConnectError as err:
                raise BitrixTransientError("CONNECT_ERROR", method=method) from err
            except httpx.TransportError as err:
                raise BitrixTransientError("NETWORK_ERROR", method=method) from err
            except httpx.DecodingError as err:
                raise BitrixBadAnswerError("UNDECODABLE_BODY", method=method) from err
            except httpx.HTTPError as err:  # TooManyRedirects and anything httpx adds later
                raise BitrixTransientError("HTTP_CLIENT_ERROR", method=method) from err
            status = response.status_code
            envelope = self._envelope(response, method)
        except BitrixError as err:
            self.stats.count(err.kind, status)
            log.debug("bitrix %s -> %s %s", method, status, err.code)
            raise
        self.stats.count("ok", status)
        log.debug("bitrix %s -> %s in %.3f s", method, status, self._monotonic() - started)
        return envelope

    def _envelope(self, response: httpx.Response, method: str) -> dict[str, Any]:
        """Check one answer: a JSON envelope with `result`, else a typed error."""
        status = response.status_code
        if response.is_redirect or 300 <= status < 400:
            # A blocked or moved portal (or http -> https); never follow it with the code in the URL.
            raise BitrixBadAnswerError("HTTP_REDIRECT", http_status=status, method=method)
        content = response.content
        data: Any = None
        if content.strip():
            try:
                data = response.json()
            except ValueError:
                data = None
        if not isinstance(data, dict):
            code = "EMPTY_BODY" if not content.strip() else ("NOT_A_JSON_OBJECT" if data is not None else "NON_JSON_BODY")
            if status >= 500:
                raise BitrixTransientError(f"HTTP_{status}", http_status=status, method=method)
            raise BitrixBadAnswerError(code, http_status=status, method=method)
        if "error" in data:
            raise error_from_envelope(data.get("error"), data.get("error_description"), status, method)
        if "result" not in data:
            if status >= 500:
                raise BitrixTransientError(f"HTTP_{status}", http_status=status, method=method)
            raise BitrixBadAnswerError("NO_RESULT", http_status=status, method=method)
        if not 200 <= status < 300:
            raise BitrixBadAnswerError(f"HTTP_{status}", http_status=status, method=method)
        return data

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: base * 2^(n-1), times 0.5 .. 1.5."""
        return min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1)) * (0.5 + self._rng())

    async def _request(
        self,
        method: str,
        payload: Mapping[str, Any],
        sub_methods: Sequence[str] = (),
        *,
        idempotent: bool = True,
    ) -> dict[str, Any]:
        """Send with retries; time-blocked methods are refused before any request."""
        budget_methods = list(sub_methods) or [method]
        self._check_blocked(budget_methods)
        slept = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                envelope = await self._attempt(method, payload)
            except BitrixTimeBudgetError as err:
                retry_after = max(self._block(m) for m in budget_methods)
                err.retry_after = retry_after
                err.args = (str(err),)
                raise
            except BitrixError as err:
                if isinstance(err, BitrixRateLimitedError):
                    self._bucket.saturate()
                if not self._should_retry(err, idempotent) or attempt >= self._max_attempts:
                    log.warning("bitrix %s failed: %s (HTTP %s), attempt %d", method, err.code, err.http_status, attempt)
                    raise
                delay = self._backoff(attempt)
                if slept + delay > self._max_retry_seconds:
                    log.warning("bitrix %s failed: %s (HTTP %s), retry time used up", method, err.code, err.http_status)
                    raise
                log.info("bitrix %s: %s (HTTP %s), retry %d in %.1f s", method, err.code, err.http_status, attempt, delay)
                self.stats.retries += 1
                await self._sleep(delay)
                slept += delay
                continue
            self._record_time(method, envelope.get("time"), count_duration=method != "batch")
            return envelope

    @staticmethod
    def _should_retry(err: BitrixError, idempotent: bool) -> bool:
        if not isinstance(err, _RETRYABLE):
            return False
        if idempotent:
            return True
        # A non-idempotent call (a notification) is repeated only when it certainly did not run.
        return isinstance(err, BitrixRateLimitedError) or err.code == "CONNECT_ERROR"

    # -- public calls ---------------------------------------------------------------------

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call one REST method and return its `result`."""
        return await self._call(method, params)

    async def _call(self, method: str, params: Mapping[str, Any] | None, *, idempotent: bool = True) -> Any:
        if not _METHOD_NAME.match(method):
            raise ValueError("not a Bitrix24 method name")
        envelope = await self._request(method, params or {}, idempotent=idempotent)
        return envelope["result"]

    async def batch(self, commands: Mapping[str, tuple[str, Mapping[str, Any]]]) -> BatchResult:
        """Run commands through `batch`, 50 per request (halt=0); per-command errors are typed."""
        for key, (method, _) in commands.items():
            if not _METHOD_NAME.match(method) or not key:
                raise ValueError("bad batch command")
        self._check_blocked(sorted({method for method, _ in commands.values()}))
        results: dict[str, Any] = {}
        errors: dict[str, BitrixError] = {}
        times: dict[str, float] = {}
        items = list(commands.items())
        for start in range(0, len(items), BATCH_SIZE):
            part = await self._batch_once(dict(items[start : start + BATCH_SIZE]))
            results.update(part.results)
            errors.update(part.errors)
            times.update(part.times)
        return BatchResult(results, errors, times)

    async def _batch_once(self, commands: Mapping[str, tuple[str, Mapping[str, Any]]]) -> BatchResult:
        cmd = {
            key: method + (f"?{php_query(params)}" if params else "") for key, (method, params) in commands.items()
        }
        sub_methods = sorted({method for method, _ in commands.values()})
        envelope = await self._request("batch", {"halt": 0, "cmd": cmd}, sub_methods)
        inner = envelope["result"]
        if isinstance(inner, list) and not inner:
            inner = {}
        if not isinstance(inner, dict):
            raise BitrixBadAnswerError("UNEXPECTED_RESULT", method="batch")
        raw_results = _as_map(inner.get("result"))
        raw_errors = _as_map(inner.get("result_error"))
        raw_times = _as_map(inner.get("result_time"))
        results: dict[str, Any] = {}
        errors: dict[str, BitrixError] = {}
        times: dict[str, float] = {}
        blocked: set[str] = set()
        for key, (method, _) in commands.items():
            if key in raw_errors:
                raw = raw_errors[key]
                code = raw.get("error") if isinstance(raw, dict) else raw
                description = raw.get("error_description") if isinstance(raw, dict) else None
                err = error_from_envelope(code, description, None, method)
                if isinstance(err, BitrixTimeBudgetError):
                    if method not in blocked:
                        blocked.add(method)
                        self._block(method)
                    err.retry_after = self._blocked_until[method] - self._wall()
                    err.args = (str(err),)
                errors[key] = err
            elif key in raw_results:
                results[key] = raw_results[key]
            if key in raw_times:
                duration = self._record_time(method, raw_times[key])
                if duration is not None:
                    times[key] = duration
        return BatchResult(results, errors, times)

    async def counters(
        self, bitrix_user_ids: Sequence[int], roles: Sequence[str] = ROLES, *, bulk: bool = False, deadline: float | None = None
    ) -> dict[int, dict[str, CounterResult]]:
        """Read counters per user and role, all roles of a user in one batch (50 // len(roles) users each)."""
        roles = tuple(roles)
        if not roles:
            raise ValueError("no roles")
        ids = list(dict.fromkeys(int(i) for i in bitrix_user_ids))
        out: dict[int, dict[str, CounterResult]] = {bitrix_user_id: {} for bitrix_user_id in ids}
        per_batch = max(1, BATCH_SIZE // len(roles))
        groups = [ids[i : i + per_batch] for i in range(0, len(ids), per_batch)]
        pending = iter(groups)
        stop: list[BitrixError] = []

        def fill(group: list[int], value: CounterResult) -> None:
            for bitrix_user_id in group:
                for role in roles:
                    out[bitrix_user_id][role] = value

        async def worker() -> None:
            for group in pending:
                if stop:
                    fill(group, stop[0])
                    continue
                keys = {
                    f"u{bitrix_user_id}_{index}": (bitrix_user_id, role)
                    for bitrix_user_id in group
                    for index, role in enumerate(roles)
                }
                commands = {
                    key: (COUNTERS_METHOD, {"userId": bitrix_user_id, "groupId": 0, "type": role})
                    for key, (bitrix_user_id, role) in keys.items()
                }
                try:
                    result = await self.batch(commands)
                except BitrixError as err:
                    fill(group, err)
                    if isinstance(err, _STOPS_CYCLE) and not stop:
                        stop.append(err)
                        log.warning("bitrix counters: %s stops the remaining batches", err.kind)
                    continue
                for key, (bitrix_user_id, role) in keys.items():
                    cell: CounterResult
                    if key in result.errors:
                        cell = result.errors[key]
                    elif key in result.results:
                        cell = _parse_counters(result.results[key], COUNTERS_METHOD)
                    else:
                        cell = BitrixBadAnswerError("MISSING_RESULT", method=COUNTERS_METHOD)
                    out[bitrix_user_id][role] = cell

        # gather, not a TaskGroup: a bug in one worker should surface as itself, not as an
        # ExceptionGroup; cancelling this call still cancels every worker.
        outcomes = await asyncio.gather(
            *(worker() for _ in range(min(COUNTERS_IN_FLIGHT, len(groups)))), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return out

    async def users_by_ids(self, bitrix_user_ids: Sequence[int], deadline: float | None = None) -> dict[int, BitrixUser]:
        """Active users among these IDs, 50 per user.get request; only IDs that were asked for."""
        ids = list(dict.fromkeys(int(i) for i in bitrix_user_ids))
        found: dict[int, BitrixUser] = {}
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start : start + BATCH_SIZE]
            result = await self.call("user.get", {"FILTER": {"ID": chunk, "ACTIVE": True}})
            asked = set(chunk)
            for raw in result if isinstance(result, list) else []:
                user = _user_from(raw)
                if user is not None and user.active and user.bitrix_user_id in asked:
                    found[user.bitrix_user_id] = user
        return found

    async def user_by_id(self, bitrix_user_id: int, deadline: float | None = None) -> BitrixUser | None:
        """One active user by ID, or None."""
        return (await self.users_by_ids([bitrix_user_id])).get(bitrix_user_id)

    async def user_by_email(self, email: str, deadline: float | None = None) -> BitrixUser | None:
        """The one active user with this e-mail (case-insensitive), or None (also when ambiguous)."""
        wanted = email.strip().lower()
        if not wanted:
            return None
        result = await self.call("user.get", {"FILTER": {"EMAIL": email.strip(), "ACTIVE": True}})
        # user.get silently drops a filter key the scope does not allow and then returns
        # everyone (facts section 4): trust only what came back.
        matches = [
            user
            for user in map(_user_from, result if isinstance(result, list) else [])
            if user is not None and user.active and user.email.strip().lower() == wanted
        ]
        return matches[0] if len(matches) == 1 else None

    async def user_current(self) -> BitrixUser:
        """The webhook's owner."""
        user = _user_from(await self.call("user.current"))
        if user is None:
            raise BitrixBadAnswerError("UNEXPECTED_RESULT", method="user.current")
        return user

    async def profile(self) -> dict[str, Any]:
        """The webhook owner's profile (with "ADMIN"); empty for an inactive owner."""
        result = await self.call("profile")
        return result if isinstance(result, dict) else {}

    async def scopes(self) -> set[str]:
        """The scopes granted to the webhook."""
        result = await self.call("scope")
        values = result.values() if isinstance(result, dict) else result if isinstance(result, list) else []
        return {str(scope) for scope in values}

    async def notify(self, bitrix_user_id: int, message: str, deadline: float | None = None) -> None:
        """Send a Bitrix24 system notification to one user (never retried once it may have run)."""
        result = await self._call(
            "im.notify.system.add", {"USER_ID": int(bitrix_user_id), "MESSAGE": message}, idempotent=False
        )
        if result is False or result is None:
            raise BitrixMethodError("NOT_CREATED", method="im.notify.system.add")
