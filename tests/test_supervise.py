"""Supervision: workers and jobs outlive their errors, count them, back off, and /healthz says when they persist.

The bot runs in-process (real Application, JobQueue and outbox worker against the fakes); only the
supervisor's clock and backoff are injected, so "failing for over 60 s" takes no minute.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.app import run
from bot.health import health_status
from bot.metrics import Metrics
from bot.storage import OutgoingMessage, outbox
from bot.supervise import Backoff, Supervisor
from tests import db as tdb
from tests.harness import Harness


class Ticks:
    """The supervisor's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


QUICK = Backoff(first=0.01, cap=0.04)


def supervised(h: Harness, ticks: Ticks, backoff: Backoff = QUICK) -> Supervisor:
    """Give the bot a supervisor with a hand-moved clock and a short backoff (jobs.start uses it)."""
    supervisor = Supervisor(h.services.metrics.worker_errors, backoff=backoff, monotonic=ticks)
    h.services.supervisor = supervisor
    return supervisor


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Poll predicate() every 10 ms; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def running(h: Harness) -> AsyncIterator[None]:
    """bot.app.run() with polling, jobs and the outbox worker, stopped at the end."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(h.app, stop))
    try:
        # jobs.start() sets the outbox worker before it schedules the jobs: wait for both.
        await wait_until(
            lambda: h.services.outbox is not None and h.app.updater.running and bool(h.app.job_queue.get_jobs_by_name("digests"))
            or task.done()
        )
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def errors(h: Harness, worker: str) -> float:
    """bot_worker_errors_total{worker=...} as /metrics shows it."""
    return h.services.metrics.registry.get_sample_value("bot_worker_errors_total", {"worker": worker}) or 0.0


def failing_until(released: asyncio.Event, failures: list[float], real: Callable[..., Any]) -> Callable[..., Any]:
    """A stand-in for a method: sqlite3.OperationalError until `released` is set, then the real one."""

    async def method(*args: Any, **kwargs: Any) -> Any:
        """Fail, or pass the call on once released."""
        if not released.is_set():
            failures.append(time.monotonic())
            raise sqlite3.OperationalError("disk I/O error")
        return await real(*args, **kwargs)

    return method


async def test_healthz_names_the_outbox_worker_while_the_database_fails_and_is_ok_again_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ticks = Ticks()
    async with Harness(tmp_path) as h:
        supervised(h, ticks)
        await tdb.seen(h.storage, 30, h.clock.timestamp())
        async with h.storage.transaction() as db:
            await outbox.enqueue(db, [OutgoingMessage(30, 30, "digest", "the digest")], h.clock.timestamp())
        released, failures = asyncio.Event(), []
        monkeypatch.setattr(outbox, "due", failing_until(released, failures, outbox.due))
        async with running(h):
            await wait_until(lambda: len(failures) >= 3)
            ok, body = health_status(h.app)
            assert ok  # failing, but not for long yet
            assert body["workers"]["outbox"]["last_error"] == "OperationalError"

            ticks.now += 61
            ok, body = health_status(h.app)
            assert not ok
            assert [p for p in body["problems"] if p.startswith("outbox has been failing for 61 s")]
            assert h.tg.texts(30) == []

            released.set()
            await wait_until(lambda: h.tg.texts(30))
            await wait_until(lambda: health_status(h.app)[0])
            assert "workers" not in health_status(h.app)[1]
            assert errors(h, "outbox") == len(failures) >= 3

        assert h.tg.attempts(30) == ["the digest"]  # exactly once
        (row,) = await tdb.outbox_rows(h.storage)
        assert (row["status"], row["attempts"]) == ("sent", 1)
    tracebacks = [r for r in caplog.records if r.name == "bot.supervise" and r.exc_info]
    assert tracebacks and all(r.levelno == logging.ERROR for r in tracebacks)
    assert "the digest" not in caplog.text


async def test_a_failing_poll_is_retried_with_backoff_counted_and_shown_in_healthz_until_it_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = Ticks()
    async with Harness(tmp_path) as h:
        supervised(h, ticks, Backoff(first=0.05, cap=0.2))
        coordinator = h.services.coordinator
        released, failures = asyncio.Event(), []
        monkeypatch.setattr(coordinator, "poll_cycle", failing_until(released, failures, coordinator.poll_cycle))
        async with running(h):
            await wait_until(lambda: len(failures) >= 5)  # the first at 1 s, then 0.05, 0.1, 0.2, 0.2 s later
            gaps = [b - a for a, b in zip(failures, failures[1:], strict=False)]
            assert gaps[0] >= 0.04 and gaps[2] >= 0.18 and max(gaps) < 1.0  # backoff, not the 300 s interval
            ticks.now += 61
            ok, body = health_status(h.app)
            assert not ok and [p for p in body["problems"] if p.startswith("poll has been failing")]

            released.set()
            await wait_until(lambda: coordinator.last_success_at is not None)
            await wait_until(lambda: health_status(h.app)[0])
            (job,) = h.app.job_queue.get_jobs_by_name("poll")  # the chain goes on, at the normal interval
            assert job.next_t.timestamp() - time.time() > 250
            assert errors(h, "poll") == len(failures)


async def test_a_digest_job_that_keeps_failing_stays_scheduled_and_shows_in_healthz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = Ticks()
    async with Harness(tmp_path) as h:
        supervised(h, ticks)
        coordinator = h.services.coordinator
        released, failures = asyncio.Event(), []
        monkeypatch.setattr(coordinator, "digest_tick", failing_until(released, failures, coordinator.digest_tick))
        async with running(h):
            (job,) = h.app.job_queue.get_jobs_by_name("digests")
            for _ in range(3):
                await job.run(h.app)  # as the scheduler runs it, each minute
                ticks.now += 30
            ok, body = health_status(h.app)
            assert not ok and [p for p in body["problems"] if p.startswith("digests has been failing for 90 s")]
            assert h.app.job_queue.get_jobs_by_name("digests")  # still scheduled
            assert errors(h, "digests") == 3

            released.set()
            await job.run(h.app)
            assert health_status(h.app)[0]


async def test_a_worker_whose_task_ended_turns_healthz_503_and_stopping_does_not_reraise_its_error(
    tmp_path: Path,
) -> None:
    async def crashes() -> None:
        raise RuntimeError("a bug")

    async with Harness(tmp_path) as h:
        supervisor = Supervisor(h.services.metrics.worker_errors)
        h.services.supervisor = supervisor
        supervisor.spawn("outbox", crashes())
        await asyncio.sleep(0.01)
        ok, body = health_status(h.app)
        assert not ok and "outbox is not running (its task ended)" in body["problems"]
        assert body["workers"]["outbox"]["running"] is False
        assert errors(h, "outbox") == 1
        await supervisor.stop(timeout=1.0)  # returns; the error was logged when the task ended


async def test_a_job_cut_short_by_shutdown_is_cancelled_and_not_counted_as_an_error() -> None:
    supervisor = Supervisor(Metrics().worker_errors)
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    guarded = asyncio.create_task(supervisor.guard("poll", hangs))
    await asyncio.sleep(0.01)
    supervisor.stopping.set()
    assert (await asyncio.wait_for(guarded, 1.0)).value == "stopped"
    assert cancelled.is_set()
    assert supervisor.worker("poll").consecutive == 0
