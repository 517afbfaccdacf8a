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
LISTEN_RETRY_SECONDS = 60


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


async def project_digest_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Queue the project digests that fall due (SPEC 13): its own job, beside the personal digests."""
    services = context.application.bot_data["services"]
    await _supervisor(services).guard("project_digests", services.projects.digest_tick)


async def recheck_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Daily: unlink users no longer active in Bitrix24."""
    services = context.application.bot_data["services"]
    await _supervisor(services).guard("recheck", services.coordinator.recheck_links)


async def project_recheck_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Daily per binding: the binder is still accountable and the project still there (SPEC 13)."""
    services = context.application.bot_data["services"]
    await _supervisor(services).guard("project_recheck", services.projects.recheck)


def job_queue_of(app: Application) -> JobQueue:
    """The application's JobQueue (built with the job-queue extra, so it is always there)."""
    if app.job_queue is None:
        raise RuntimeError("python-telegram-bot was installed without its job-queue extra")
    return app.job_queue


async def housekeeping_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Delete rows whose window has ended (old outbox rows, digest logs, codes, limit records)."""
    services = context.application.bot_data["services"]
    supervisor = _supervisor(services)
    await supervisor.guard("housekeeping", services.coordinator.housekeeping)
    await supervisor.guard("project_housekeeping", lambda: services.projects.housekeeping(services.clock.now()))


async def start(app: Application) -> None:
    """Start the supervised outbox worker, the jobs and the health endpoint."""
    services = app.bot_data["services"]
    supervisor = services.supervisor
    if supervisor is None:
        supervisor = Supervisor(services.metrics.worker_errors)
        services.supervisor = supervisor
    worker = OutboxWorker(
        services.storage, app.bot, services.clock, services.metrics, services.accounts, projects=services.projects,
        health=supervisor.worker("outbox"),
    )
    services.outbox = worker
    await worker.recover()
    await services.coordinator.restore()
    supervisor.spawn("outbox", worker.run())
    jq = job_queue_of(app)
    jq.run_once(poll_job, 1.0, name="poll")
    jq.run_repeating(digest_job, DIGEST_TICK_SECONDS, first=5.0, name="digests")
    jq.run_repeating(project_digest_job, DIGEST_TICK_SECONDS, first=7.0, name="project-digests")
    jq.run_repeating(recheck_job, RECHECK_SECONDS, first=600.0, name="recheck")
    jq.run_repeating(project_recheck_job, RECHECK_SECONDS, first=660.0, name="project-recheck")
    jq.run_repeating(housekeeping_job, HOUSEKEEPING_SECONDS, first=300.0, name="housekeeping")
    if services.settings.health_port:
        server = await health.serve(app, services.settings.health_port)
        supervisor.on_stop(server.close)
    if services.events is not None:
        await start_events(app)


async def start_events(app: Application) -> None:
    """Bitrix24 events (SPEC 14): the supervised event work and the listener; a taken port is logged, not fatal.

    /healthz reports a listener that is not running, and a job tries to start it again every minute.
    """
    services = app.bot_data["services"]
    supervisor = _supervisor(services)
    work = services.events
    work.health = supervisor.worker("events")
    work.poll_soon = lambda: bring_poll_forward(app)
    supervisor.spawn("events", work.run(supervisor.stopping))
    server = services.events_server_for()
    services.events_server = server
    supervisor.on_stop(server.close)
    if not await listen(services):
        job_queue_of(app).run_repeating(listen_job, LISTEN_RETRY_SECONDS, first=LISTEN_RETRY_SECONDS, name="events-listen")


async def listen(services: Services) -> bool:
    """Start the events listener if it is not running; False (logged) when its port cannot be bound."""
    server = services.events_server
    if server is None or server.running:
        return True
    settings = services.settings
    try:
        await server.start(settings.events_bind_address, settings.events_port)
    except OSError as err:
        log.error(
            "events listener cannot listen on %s port %d (%s); retrying every %d s",
            settings.events_bind_address, settings.events_port, err.strerror or type(err).__name__, LISTEN_RETRY_SECONDS,
        )
        return False
    return True


async def listen_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Try again to start the events listener; the job ends once it listens."""
    services = context.application.bot_data["services"]
    if await listen(services) and context.job is not None:
        context.job.schedule_removal()


def bring_poll_forward(app: Application) -> bool:
    """Run the next poll cycle now instead of at its time; False when none is waiting (one is running)."""
    jq = job_queue_of(app)
    waiting = jq.get_jobs_by_name("poll")
    if not waiting:
        return False
    for job in waiting:
        job.schedule_removal()
    jq.run_once(poll_job, 0.0, name="poll")
    return True


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
