"""Scheduled and background work on PTB's JobQueue, started after the Application: thin wrappers."""

from __future__ import annotations

import asyncio
import logging

from telegram.ext import Application, ContextTypes

from bot import health
from bot.delivery import OutboxWorker

log = logging.getLogger(__name__)

DIGEST_TICK_SECONDS = 60
RECHECK_SECONDS = 3600  # hourly: each link is re-read once its last check is a day old
HOUSEKEEPING_SECONDS = 6 * 3600
MIN_GAP_SECONDS = 1.0


async def poll_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """One poll cycle, then the next one after the (possibly stretched) interval."""
    services = context.application.bot_data["services"]
    started = services.clock.timestamp()
    try:
        await services.coordinator.poll_cycle()
    finally:
        elapsed = services.clock.timestamp() - started
        delay = max(MIN_GAP_SECONDS, services.coordinator.effective_interval - elapsed)
        context.job_queue.run_once(poll_job, delay, name="poll")


async def digest_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Queue the digests that fall due."""
    await context.application.bot_data["services"].coordinator.digest_tick()


async def recheck_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Daily: unlink users no longer active in Bitrix24."""
    await context.application.bot_data["services"].coordinator.recheck_links()


async def housekeeping_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Delete rows whose window has ended (old outbox rows, digest logs, codes, limit records)."""
    await context.application.bot_data["services"].coordinator.housekeeping()


async def start(app: Application) -> None:
    """Start the outbox worker, the jobs and the health endpoint."""
    services = app.bot_data["services"]
    worker = OutboxWorker(services.storage, app.bot, services.clock, services.metrics, services.accounts)
    services.outbox = worker
    await worker.recover()
    await services.coordinator.restore()
    services.outbox_task = asyncio.create_task(worker.run(), name="outbox")
    jq = app.job_queue
    jq.run_once(poll_job, 1.0, name="poll")
    jq.run_repeating(digest_job, DIGEST_TICK_SECONDS, first=5.0, name="digests")
    jq.run_repeating(recheck_job, RECHECK_SECONDS, first=600.0, name="recheck")
    jq.run_repeating(housekeeping_job, HOUSEKEEPING_SECONDS, first=300.0, name="housekeeping")
    if services.settings.health_port:
        services.health_server = await health.serve(app, services.settings.health_port)


async def stop(app: Application) -> None:
    """Stop taking work; let in-flight sends finish; close the health endpoint."""
    services = app.bot_data["services"]
    for job in app.job_queue.jobs():
        job.schedule_removal()
    if services.outbox is not None:
        await services.outbox.stop(timeout=8.0)
    task, services.outbox_task = services.outbox_task, None
    if task is not None:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    server, services.health_server = services.health_server, None
    if server is not None:
        server.close()
        await server.wait_closed()
