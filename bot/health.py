"""GET /healthz and GET /metrics on HEALTH_PORT (SPEC sections 10 and 14), served by aiohttp."""

from __future__ import annotations

import logging

from aiohttp import web
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
    if services.events is not None and not (services.events_server is not None and services.events_server.running):
        problems.append("the Bitrix24 events listener is not running")
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


class HealthServer:
    """`GET /healthz` and `GET /metrics` served by aiohttp in the bot's own event loop."""

    def __init__(self, runner: web.AppRunner) -> None:
        self._runner = runner

    @property
    def port(self) -> int:
        """The port it listens on (useful when it was asked for port 0)."""
        addresses = self._runner.addresses
        if not addresses:
            raise RuntimeError("the health server is not listening")
        return int(addresses[0][1])

    async def close(self) -> None:
        """Stop listening and close open connections."""
        await self._runner.cleanup()


async def serve(app: Application, port: int, host: str = "0.0.0.0") -> HealthServer:
    """Start the endpoint; the caller closes the returned server."""

    async def healthz(request: web.Request) -> web.Response:
        ok, info = health_status(app)
        return web.json_response(info, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        body = app.bot_data["services"].metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    web_app = web.Application()
    web_app.router.add_get("/healthz", healthz, allow_head=False)
    web_app.router.add_get("/metrics", metrics, allow_head=False)
    # No access log: one line per health probe every minute would bury the events that matter.
    runner = web.AppRunner(web_app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("health endpoint on port %d", port)
    return HealthServer(runner)
