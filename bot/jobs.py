"""Scheduled and background work, started after the Application: thin wrappers over the core."""

from __future__ import annotations

import logging

from telegram.ext import Application

from bot import health

log = logging.getLogger(__name__)


async def start(app: Application) -> None:
    """Start the health endpoint and the scheduled jobs."""
    services = app.bot_data["services"]
    if services.settings.health_port:
        services.extras["health_server"] = await health.serve(app, services.settings.health_port)


async def stop(app: Application) -> None:
    """Stop background work started by start()."""
    services = app.bot_data["services"]
    server = services.extras.pop("health_server", None)
    if server is not None:
        server.close()
        await server.wait_closed()
