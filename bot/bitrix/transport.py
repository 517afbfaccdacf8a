"""HTTP to one Bitrix24 webhook: URL, envelope check, leaky bucket, retries, stats."""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from bot.errors import (
    BitrixAuthError,
    BitrixBadAnswerError,
    BitrixError,
    BitrixPermissionError,
    BitrixPlanError,
    BitrixPortalGoneError,
    BitrixRateLimitedError,
    BitrixScopeError,
    BitrixTimeBudgetError,
    BitrixTransientError,
    error_from_envelope,
)
from bot.redact import RedactFilter, redact

__all__ = [
    "BitrixStats",
    "Priority",
    "CircuitBreaker",
    "LeakyBucket",
    "RedactFilter",
    "Transport",
    "build_http_client",
    "normalize_webhook_url",
    "php_query",
    "redact",
]

log = logging.getLogger("bot.bitrix")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_BACKOFF_BASE = 1.0
_BACKOFF_CAP = 30.0

_WEBHOOK_PATH = re.compile(r"^/rest/(\d+)/([A-Za-z0-9_-]+)(?:/([A-Za-z0-9_.]*))?/?$")

_RETRYABLE: tuple[type[BitrixError], ...] = (BitrixTransientError, BitrixRateLimitedError, BitrixBadAnswerError)


# -- URLs ----------------------------------------------------------------


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


_HTTPX_FILTER = RedactFilter()


def install_log_redaction() -> None:
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


def build_http_client(
    ca_file: str | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An httpx client for Bitrix24: 10 s connect / 70 s read, no redirects, optional extra CA."""
    install_log_redaction()
    kwargs: dict[str, Any] = {"timeout": httpx.Timeout(70.0, connect=10.0), "follow_redirects": False}
    if ca_file:
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(ca_file)
        kwargs["verify"] = ctx
    if transport is not None:
        kwargs["transport"] = transport
    return httpx.AsyncClient(**kwargs)


# -- leaky bucket ------------------------------------------------------------------------


class Priority(enum.IntEnum):
    """Who a Bitrix24 request is for, most urgent first (SPEC 14: a user's own reads, digests, polls, events)."""

    USER = 0
    DIGEST = 1
    POLL = 2
    EVENT = 3


class _PriorityGate:
    """A lock handed on to the most urgent waiter (then the longest waiting), not to whoever asked first."""

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def waiting_before(self, priority: int) -> bool:
        """Whether someone more urgent than `priority` waits for the gate."""
        return any(p < priority and not f.done() for p, _, f in self._waiters)

    async def acquire(self, priority: int) -> None:
        if not self._held and not self._waiters:
            self._held = True
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (priority, next(self._seq), future)
        heapq.heappush(self._waiters, entry)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed over just as we were cancelled: pass it on
            else:
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)  # the gate stays held, by that waiter now
                return
        self._held = False


class LeakyBucket:
    """Client-side mirror of Bitrix24's leaky bucket: +1 per request, drains `rate` per second.

    Waiting requests go in priority order (Priority): a user's own read waits for at most
    the one request already waiting for its slot. Event work (Priority.EVENT) is held to a
    quarter of the rate and goes only while at least half of the bucket is free, and never
    while a more urgent request waits (SPEC 14).
    """

    # The server rejects a request once its counter would pass `burst`. We stay one request
    # and 2 % of the drain rate below it, so that requests reaching the server a little
    # later (or bunched) than we let them go never tip its bucket over.
    BURST_MARGIN = 1
    RATE_MARGIN = 0.98
    EVENT_SHARE = 0.25  # of the drain rate
    EVENT_FREE = 0.5  # of the bucket that must be free for an event request

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
        self._gate = _PriorityGate()
        # Event requests' own, slower bucket: a quarter of the burst, then a quarter of the rate.
        self._event_drain = self._drain * self.EVENT_SHARE
        self._event_capacity = float(max(2, burst // 4))
        self._event_level = 0.0

    def _leak(self) -> None:
        now = self._monotonic()
        elapsed = now - self._at
        self._level = max(0.0, self._level - elapsed * self._drain)
        self._event_level = max(0.0, self._event_level - elapsed * self._event_drain)
        self._at = now

    def _wait_for_slot(self, priority: int) -> float:
        """Seconds until a request of `priority` fits (0: it fits now); the caller has leaked."""
        if priority < Priority.EVENT:
            return max(0.0, (self._level + 1.0 - self._capacity) / self._drain)
        by_bucket = (self._level + 1.0 - self._capacity * (1 - self.EVENT_FREE)) / self._drain
        by_share = (self._event_level + 1.0 - self._event_capacity) / self._event_drain
        return max(0.0, by_bucket, by_share)

    async def acquire(self, deadline: float | None = None, priority: int = Priority.USER) -> None:
        """Wait until one more request of `priority` fits, then count it; TimeoutError if not by `deadline`."""
        while True:
            await self._gate.acquire(priority)
            try:
                while True:
                    self._leak()
                    # The tolerance and the minimum wait keep float rounding of large clock
                    # values from turning into an endless series of tiny sleeps.
                    wait = self._wait_for_slot(priority)
                    if wait <= 1e-6 / self._drain:
                        self._level += 1.0
                        if priority >= Priority.EVENT:
                            self._event_level += 1.0
                        return
                    wait = max(0.001, wait)
                    if deadline is not None and self._monotonic() + wait > deadline:
                        raise TimeoutError("no request slot before the deadline")
                    if priority >= Priority.EVENT:
                        break  # event work waits without the gate: nothing more urgent queues behind it
                    await self._sleep(wait)  # holding the gate: the next slot is this request's
            finally:
                self._gate.release()
            await self._sleep(wait)

    def saturate(self) -> None:
        """The server said the bucket is full (503): assume it is, so the next requests wait."""
        self._leak()
        self._level = max(self._level, self._capacity)

    @property
    def level(self) -> float:
        """The current counter value, after draining."""
        self._leak()
        return self._level

    def event_wait(self, requests: int = 1) -> float:
        """Seconds until `requests` event requests could go one after another (0: now), if nothing else came."""
        self._leak()
        by_bucket = (self._level + requests - self._capacity * (1 - self.EVENT_FREE)) / self._drain
        by_share = (self._event_level + requests - self._event_capacity) / self._event_drain
        return max(0.0, by_bucket, by_share)


# -- stats -----------------------------------------------------------------------------------


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


# -- fail fast ---------------------------------------------------------------------------------


class CircuitBreaker:
    """The fuse of one multi-request call: after a failure that would repeat, the rest fail fast."""

    # A whole request that failed this way (after its own retries) will fail every other
    # request of the same call the same way. Rate limiting is not among them: the bucket
    # drains, so the remaining requests are paced and retried and the cycle finishes (SPEC 8).
    TRIPS: tuple[type[BitrixError], ...] = (
        BitrixAuthError,
        BitrixScopeError,
        BitrixPlanError,
        BitrixPortalGoneError,
        BitrixTimeBudgetError,
        BitrixPermissionError,
        BitrixTransientError,
        BitrixBadAnswerError,
    )

    def __init__(self) -> None:
        self.error: BitrixError | None = None

    def trip(self, err: BitrixError) -> bool:
        """Remember the first error of a tripping kind; True when this one tripped the breaker."""
        if self.error is None and isinstance(err, self.TRIPS):
            self.error = err
            return True
        return False


# -- one webhook, with retries ----------------------------------------------------------------


def _cut(timeout: httpx.Timeout, left: float) -> httpx.Timeout:
    """Each phase's timeout, but none longer than the time left."""

    def one(value: float | None) -> float:
        return left if value is None else min(value, left)

    return httpx.Timeout(connect=one(timeout.connect), read=one(timeout.read), write=one(timeout.write), pool=one(timeout.pool))


def _timeout_error(method: str) -> BitrixTransientError:
    return BitrixTransientError("TIMEOUT", method=method)


class Transport:
    """POSTs to one webhook: each answer checked, transient failures retried with backoff."""

    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient,
        bucket: LeakyBucket,
        *,
        monotonic: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        max_attempts: int = 5,
        max_retry_seconds: float = 60.0,
    ) -> None:
        self._base = base_url
        self._http = http
        self.bucket = bucket
        self._monotonic = monotonic
        self._sleep = sleep
        self.rng = rng
        self._max_attempts = max(1, max_attempts)
        self._max_retry_seconds = max_retry_seconds
        self.stats = BitrixStats()

    async def _acquire(self, method: str, deadline_at: float | None, priority: int) -> None:
        """A slot in the bucket; a deadline that passes first is a TIMEOUT, and no request is made."""
        try:
            await self.bucket.acquire(deadline=deadline_at, priority=priority)
        except TimeoutError:
            raise _timeout_error(method) from None
        if deadline_at is not None and deadline_at - self._monotonic() <= 0:
            raise _timeout_error(method)

    async def _attempt(self, method: str, payload: Mapping[str, Any], deadline_at: float | None) -> dict[str, Any]:
        """One HTTP request: returns the envelope or raises a typed error."""
        started = self._monotonic()
        left = None if deadline_at is None else max(0.0, deadline_at - started)
        timeout = httpx.USE_CLIENT_DEFAULT if left is None else _cut(self._http.timeout, left)
        status: int | None = None
        try:
            try:
                # httpx's timeouts are per phase (a trickling answer resets the read timeout):
                # the deadline also caps the whole exchange.
                async with asyncio.timeout(left):
                    try:
                        response = await self._http.post(self._base + method, json=dict(payload), timeout=timeout)
                    except httpx.TimeoutException as err:
                        raise _timeout_error(method) from err
                    except httpx.ConnectError as err:
                        raise BitrixTransientError("CONNECT_ERROR", method=method) from err
                    except httpx.TransportError as err:
                        raise BitrixTransientError("NETWORK_ERROR", method=method) from err
                    except httpx.DecodingError as err:
                        raise BitrixBadAnswerError("UNDECODABLE_BODY", method=method) from err
                    except httpx.HTTPError as err:  # TooManyRedirects and anything httpx adds later
                        raise BitrixTransientError("HTTP_CLIENT_ERROR", method=method) from err
            except TimeoutError as err:
                raise _timeout_error(method) from err
            status = response.status_code
            envelope = check_envelope(response, method)
        except BitrixError as err:
            self.stats.count(err.kind, status)
            log.debug("bitrix %s -> %s %s", method, status, err.code)
            raise
        self.stats.count("ok", status)
        log.debug("bitrix %s -> %s in %.3f s", method, status, self._monotonic() - started)
        return envelope

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: base * 2^(n-1), times 0.5 .. 1.5."""
        return min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1)) * (0.5 + self.rng())

    async def request(
        self,
        method: str,
        payload: Mapping[str, Any],
        *,
        idempotent: bool = True,
        deadline_at: float | None = None,
        breaker: CircuitBreaker | None = None,
        priority: int = Priority.USER,
    ) -> dict[str, Any]:
        """Send with retries; return the checked envelope or raise the last typed error.

        Retries stop at max_attempts, when the next attempt would start more than
        max_retry_seconds after the first one started (attempts included), when it would
        start at or after `deadline_at` (monotonic), or once `breaker` has tripped.
        """
        first_started: float | None = None
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._acquire(method, deadline_at, priority)
                if first_started is None:
                    first_started = self._monotonic()
                return await self._attempt(method, payload, deadline_at)
            except BitrixTimeBudgetError:
                raise  # never retried; the caller blocks the method and logs that once
            except BitrixError as err:
                if isinstance(err, BitrixRateLimitedError):
                    self.bucket.saturate()
                if not should_retry(err, idempotent) or attempt >= self._max_attempts:
                    log.warning("bitrix %s failed: %s (HTTP %s), attempt %d", method, err.code, err.http_status, attempt)
                    raise
                now = self._monotonic()
                delay = self._backoff(attempt)
                why = None
                if now + delay - (first_started if first_started is not None else now) > self._max_retry_seconds:
                    why = "retry time used up"
                elif deadline_at is not None and now + delay >= deadline_at:
                    why = "deadline reached"
                elif breaker is not None and breaker.error is not None:
                    why = "another request of this call failed"
                if why is not None:
                    log.warning("bitrix %s failed: %s (HTTP %s), %s", method, err.code, err.http_status, why)
                    raise
                log.info("bitrix %s: %s (HTTP %s), retry %d in %.1f s", method, err.code, err.http_status, attempt, delay)
                self.stats.retries += 1
                await self._sleep(delay)


def should_retry(err: BitrixError, idempotent: bool) -> bool:
    """Whether a failed attempt may be repeated."""
    if not isinstance(err, _RETRYABLE):
        return False
    if idempotent:
        return True
    # A non-idempotent call (a notification) is repeated only when it certainly did not run.
    return isinstance(err, BitrixRateLimitedError) or err.code == "CONNECT_ERROR"


def check_envelope(response: httpx.Response, method: str) -> dict[str, Any]:
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
