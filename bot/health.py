"""GET /healthz and GET /metrics on HEALTH_PORT (SPEC section 10), on a tiny asyncio server."""

from __future__ import annotations

import asyncio
import json
import logging

from prometheus_client import CONTENT_TYPE_LATEST
from telegram.ext import Application

log = logging.getLogger(__name__)


def health_status(app: Application) -> tuple[bool, dict[str, object]]:
    """Whether the bot is healthy, with the reasons: polling, scheduler, last good poll cycle, workers and jobs."""
    services = app.bot_data["services"]
    now = services.clock.timestamp()
    problems = []
    if not (app.updater and app.updater.running):
        problems.append("telegram polling is not running")
    if not (app.job_queue and app.job_queue.scheduler.running):
        problems.append("the scheduler is not running")
    last_ok = services.coordinator.last_success_at or services.started_at
    limit = 2 * services.settings.poll_interval_seconds + 60
    age = now - last_ok
    if age > limit:
        problems.append(f"no successful poll cycle for {age:.0f} s (limit {limit} s)")
    supervisor = services.supervisor
    unhealthy: dict[str, dict[str, object]] = {}
    if supervisor is not None:
        problems += supervisor.problems()
        unhealthy = supervisor.unhealthy()
    body: dict[str, object] = {"status": "ok" if not problems else "unhealthy", "last_poll_ok_age_seconds": round(age)}
    if unhealthy:
        body["workers"] = unhealthy  # failing (not yet for long) or dead workers and jobs
    if problems:
        body["problems"] = problems
    return not problems, body


async def serve(app: Application, port: int, host: str = "0.0.0.0") -> asyncio.base_events.Server:
    """Start the endpoint; the caller closes the returned server."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] != "GET":
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            elif path == "/healthz":
                ok, info = health_status(app)
                status, ctype, body = (200 if ok else 503), "application/json", json.dumps(info).encode()
            elif path == "/metrics":
                services = app.bot_data["services"]
                status, ctype, body = 200, CONTENT_TYPE_LATEST, services.metrics.render()
            else:
                status, ctype, body = 404, "text/plain", b"not found\n"
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
            head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    log.info("health endpoint on port %d", port)
    return server
