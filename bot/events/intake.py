"""POST /bitrix24/events: Bitrix24's outbound webhook, checked in the order of SPEC 14, served by aiohttp.

Hostile input is the point of this port: every request is judged by `judge` (pure) and gets
its status within milliseconds; only a valid task event reaches the work queue. Bodies are
never logged, the token is never echoed, and each kind of rejection is logged at most once a
minute.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

log = logging.getLogger(__name__)

PATH = "/bitrix24/events"
EVENT_NAMES: tuple[str, ...] = (
    "ONTASKADD",
    "ONTASKUPDATE",
    "ONTASKDELETE",
    "ONTASKCOMMENTADD",
    "ONTASKCOMMENTUPDATE",
    "ONTASKCOMMENTDELETE",
)
COMMENT_EVENTS = frozenset({"ONTASKCOMMENTADD", "ONTASKCOMMENTUPDATE", "ONTASKCOMMENTDELETE"})
MAX_BODY = 64 * 1024
MAX_CONNECTIONS = 32
HEADER_SECONDS = 5.0  # an idle or slow connection must finish its headers this soon (aiohttp's keep-alive timer)
BODY_SECONDS = 5.0  # and then its body: 10 s for headers and body together
LINGER_SECONDS = 1.0  # how long a refused request's unread body is drained before the connection closes
MAX_FIELDS = 200  # a real event has about a dozen
STALE_SECONDS = 3600.0
LOG_EVERY_SECONDS = 60.0
FORM = "application/x-www-form-urlencoded"
_MAX_TASK_ID = 10**15

Clock = Callable[[], float]


@dataclass(frozen=True)
class TaskEvent:
    """A valid event about one task."""

    name: str
    task_id: int
    received_at: float

    @property
    def comment(self) -> bool:
        """A comment was added, edited or deleted (the task's members did not change)."""
        return self.name in COMMENT_EVENTS

    @property
    def deleted(self) -> bool:
        """The task is gone: its members can only come from the cache."""
        return self.name == "ONTASKDELETE"


@dataclass(frozen=True)
class Verdict:
    """How a request is answered: its HTTP status and the reason it is counted under."""

    status: int
    reason: str  # "ok" for a task event; else why it was rejected or ignored
    event: TaskEvent | None = None
    name: str | None = None  # the event name, once the request is trusted
    domain: str | None = None  # the domain a trusted-token request named (for the 403 notice)


def _form(body: bytes) -> dict[str, str] | None:
    """The form's fields, or None for a body that is not one (not UTF-8, too many fields, a field twice)."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            return None  # ambiguous: which token, which ID?
        fields[key] = value
    return fields


def _task_id(value: str | None) -> int | None:
    """A positive task ID, or None for a missing, `undefined` or non-numeric value."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if 0 < number < _MAX_TASK_ID else None


def judge(
    content_type: str, body: bytes, *, token: str, domains: frozenset[str], now: float
) -> Verdict:
    """The checks after method and size, in SPEC 14's order: form (415), token (401), domain (403), event.

    Returns 200 for every trusted request; only a known task event with a usable task ID and
    a fresh `ts` carries a TaskEvent.
    """
    if content_type.split(";", 1)[0].strip().lower() != FORM:
        return Verdict(415, "content_type")
    fields = _form(body)
    if fields is None:
        return Verdict(415, "not_a_form")
    given = fields.get("auth[application_token]", "")
    if not given or not hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8")):
        return Verdict(401, "token")
    domain = fields.get("auth[domain]", "").strip().lower()
    if domain not in domains:
        return Verdict(403, "domain", domain=domain[:100])
    name = fields.get("event", "").strip().upper()
    if name not in EVENT_NAMES:
        return Verdict(200, "other_event", name="other")
    ts = fields.get("ts")
    if ts is not None:
        try:
            sent_at = float(ts)
        except ValueError:
            return Verdict(200, "bad_ts", name=name)
        if now - sent_at > STALE_SECONDS:
            return Verdict(200, "stale", name=name)
    key = "TASK_ID" if name in COMMENT_EVENTS else "ID"
    task_id = _task_id(fields.get(f"data[FIELDS_AFTER][{key}]"))
    if task_id is None:
        task_id = _task_id(fields.get(f"data[FIELDS_BEFORE][{key}]"))
    if task_id is None:
        return Verdict(200, "no_task_id", name=name)
    return Verdict(200, "ok", event=TaskEvent(name, task_id, now), name=name)


class ThrottledLog:
    """One warning per kind of trouble per minute, with how many more were seen meanwhile."""

    def __init__(self, monotonic: Clock = time.monotonic, every: float = LOG_EVERY_SECONDS) -> None:
        self._monotonic = monotonic
        self._every = every
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def warn(self, kind: str, message: str, *args: Any) -> bool:
        """Log `message` unless `kind` was logged less than a minute ago; True when it was logged."""
        now = self._monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._every:
            self._since[kind] = self._since.get(kind, 0) + 1
            return False
        more = self._since.pop(kind, 0)
        self._last[kind] = now
        log.warning(message + (f" ({more} more like it in the last minute)" if more else ""), *args)
        return True


class _Refusal(asyncio.Protocol):
    """The answer to a connection past the limit: 503, closed at once, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        transport.close()


class EventsServer:
    """The events listener: aiohttp in the bot's loop, at most MAX_CONNECTIONS connections at once."""

    def __init__(
        self,
        *,
        token: str,
        domains: frozenset[str],
        accept: Callable[[TaskEvent], object],
        count: Callable[[Verdict], None],
        domain_mismatch: Callable[[str], Awaitable[None]],
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self._token = token
        self._domains = domains
        self._accept = accept
        self._count = count
        self._domain_mismatch = domain_mismatch
        self._clock = clock
        self._throttle = ThrottledLog(monotonic)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.base_events.Server | None = None
        self._told_domain = False
        self._notices: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"EventsServer(port={self.port if self.running else None})"

    @property
    def running(self) -> bool:
        """Whether it is listening."""
        return self._server is not None and self._server.is_serving()

    @property
    def port(self) -> int:
        """The port it listens on (useful when it was asked for port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the events listener is not running")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port; OSError when the port is taken."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", PATH, self._handle)
        # No access log (every line would name a hostile client's request); the keep-alive timer
        # is also aiohttp's header timeout: a connection that has not sent a whole request head
        # within HEADER_SECONDS is closed.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0, keepalive_timeout=HEADER_SECONDS,
            max_line_size=4096, max_field_size=4096, max_headers=64,
            # After a 408 or 413 aiohttp reads and drops the unread body before closing ("lingering"):
            # a hostile client would keep its connection slot for aiohttp's default 10 s.
            lingering_time=LINGER_SECONDS,
        )
        await runner.setup()
        handler_factory = runner.server
        assert handler_factory is not None

        def protocol() -> asyncio.BaseProtocol:
            if len(handler_factory.connections) >= MAX_CONNECTIONS:
                self._count(Verdict(503, "connections"))
                self._throttle.warn("connections", "events: more than %d connections at once; refused", MAX_CONNECTIONS)
                return _Refusal()
            return handler_factory()

        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._server = await loop.create_server(protocol, host, port, family=family, reuse_address=True, backlog=128)
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("events listener on %s port %d", host, self.port)

    async def close(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._server = None
        self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return self._reject(Verdict(405, "method"), {"Allow": "POST", "Connection": "close"})
        if request.content_length is not None and request.content_length > MAX_BODY:
            return self._reject(Verdict(413, "too_large"), {"Connection": "close"})
        try:
            async with asyncio.timeout(BODY_SECONDS):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reject(Verdict(413, "too_large"), {"Connection": "close"})
        except TimeoutError:
            return self._reject(Verdict(408, "too_slow"), {"Connection": "close"})
        verdict = judge(
            request.headers.get("Content-Type", ""), body, token=self._token, domains=self._domains, now=self._clock()
        )
        if verdict.status != 200:
            if verdict.reason == "domain":
                self._on_domain(verdict.domain or "")
            return self._reject(verdict)
        self._count(verdict)
        if verdict.event is not None:
            self._accept(verdict.event)
        return web.Response(status=200, text="ok")

    def _reject(self, verdict: Verdict, headers: dict[str, str] | None = None) -> web.Response:
        self._count(verdict)
        if verdict.reason != "domain":
            self._throttle.warn(verdict.reason, "events: rejected a request (%s, HTTP %d)", verdict.reason, verdict.status)
        # A body left unread (or a method with none) ends the connection; a read one may keep it.
        return web.Response(status=verdict.status, headers=headers)

    async def _tell(self, domain: str) -> None:
        try:
            await self._domain_mismatch(domain)
        except Exception:  # the top of a background notice: logged, the listener goes on
            log.error("events: telling admins about the domain mismatch failed", exc_info=True)

    def _on_domain(self, domain: str) -> None:
        if not self._told_domain:
            self._told_domain = True
            log.warning(
                "events: a request with the right token named the domain %r, not this portal's; rejected (HTTP 403)", domain
            )
            task = asyncio.get_running_loop().create_task(self._tell(domain), name="events:domain-notice")
            self._notices.add(task)
            task.add_done_callback(self._notices.discard)
        else:
            self._throttle.warn("domain", "events: rejected a request (domain, HTTP 403)")
