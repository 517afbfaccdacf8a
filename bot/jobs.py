"""Scheduled and background work on PTB's JobQueue, started after the Application: thin, supervised wrappers.

Every job runs through `Supervisor.guard`: an error is logged with its traceback and counted in
bot_worker_errors{worker=...}, and the job's work is cancelled as soon as shutdown begins (PTB
shields a running job from the scheduler's own cancellation, and Application.stop() waits for it).
"""

from __future__ import annotations

import logging

from telegram.ext import Application, ContextTypes, JobQueue

from bot import health
from bot.delivery import OutboxWorker
from bot.services import Services
from bot.supervise import Outcome, Supervisor

log = logging.getLogger(__name__)

DIGEST_TICK_SECONDS = 60
RECHECK_SECONDS = 3600  # hourly: each link is re-read once its last check is a day old
HOUSEKEEPING_SECONDS = 6 * 3600
MIN_GAP_SECONDS = 1.0


def _supervisor(services: Services) -> Supervisor:
    """The supervisor start() set up; the jobs run only after it."""
    supervisor = services.supervisor
    if supervisor is None:
        raise RuntimeError("jobs run only after jobs.start()")
    return supervisor


async def poll_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """One poll cycle, then the next one after the (possibly stretched) interval; sooner, with backoff, after an error."""
    services = context.application.bot_data["services"]
    supervisor = _supervisor(services)
    started = services.clock.timestamp()
    outcome = await supervisor.guard("poll", services.coordinator.poll_cycle)
    if outcome is Outcome.STOPPED or supervisor.stopping.is_set():
        return  # shutting down: the chain ends here
    elapsed = services.clock.timestamp() - started
    delay = max(MIN_GAP_SECONDS, services.coordinator.effective_interval - elapsed)
    if outcome is Outcome.FAILED:
        delay = min(delay, supervisor.worker("poll").retry_in)
    job_queue_of(context.application).run_once(poll_job, delay, name="poll")


async def digest_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Queue the digests that fall due."""
    services = context.application.bot_data["services"]
    await _supervisor(services).guard("digests", services.coordinator.digest_tick)


async def recheck_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Daily: unlink users no longer active in Bitrix24."""
    services = context.application.bot_data["services"]
    await _supervisor(services).guard("recheck", services.coordinator.recheck_links)


def job_queue_of(app: Application) -> JobQueue:
    """The application's JobQueue (built with the job-queue extra, so it is always there)."""
    if app.job_queue is None:
        raise RuntimeError("python-telegram-bot was installed without its job-queue extra")
    return app.job_queue


async def housekeeping_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Delete rows whose window has ended (old outbox rows, digest logs, codes, limit records)."""
    services = context.application.bot_data["services"]
    await _supervisor(services).guard("housekeeping", services.coordinator.housekeeping)


async def start(app: Application) -> None:
    """Start the supervised outbox worker, the jobs and the health endpoint."""
    services = app.bot_data["services"]
    supervisor = services.supervisor
    if supervisor is None:
        supervisor = Supervisor(services.metrics.worker_errors)
        services.supervisor = supervisor
    worker = OutboxWorker(
        services.storage, app.bot, services.clock, services.metrics, services.accounts, health=supervisor.worker("outbox")
    )
    services.outbox = worker
    await worker.recover()
    await services.coordinator.restore()
    supervisor.spawn("outbox", worker.run())
    jq = job_queue_of(app)
    jq.run_once(poll_job, 1.0, name="poll")
    jq.run_repeating(digest_job, DIGEST_TICK_SECONDS, first=5.0, name="digests")
    jq.run_repeating(recheck_job, RECHECK_SECONDS, first=600.0, name="recheck")
    jq.run_repeating(housekeeping_job, HOUSEKEEPING_SECONDS, first=300.0, name="housekeeping")
    if services.settings.health_port:
        server = await health.serve(app, services.settings.health_port)
        supervisor.on_stop(server.close)


def begin_stop(app: Application) -> None:
    """Shutdown begins: running jobs are cut short, none is scheduled again (synchronous, so nothing slips in)."""
    supervisor = app.bot_data["services"].supervisor
    if supervisor is not None:
        supervisor.stopping.set()
    if app.job_queue is not None:
        for job in app.job_queue.jobs():
            job.schedule_removal()


async def stop(app: Application, timeout: float = 8.0) -> None:
    """Stop taking work; let in-flight sends finish within `timeout`; close the health endpoint. Never raises."""
    begin_stop(app)
    services = app.bot_data["services"]
    if services.outbox is not None:
        await services.outbox.stop(timeout=timeout)
    supervisor = services.supervisor
    if supervisor is not None:
        await supervisor.stop(timeout=1.0)
