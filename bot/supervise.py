"""Supervision of the background work: errors logged and counted, backoff, /healthz reports, bounded stop."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

FAILING_AFTER_SECONDS = 60.0
FAILING_MIN_ERRORS = 3
CANCEL_GRACE_SECONDS = 1.0  # how long a cancelled job may take to roll back before shutdown moves on


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class Outcome(enum.Enum):
    """How one guarded run ended."""

    OK = "ok"
    FAILED = "failed"
    STOPPED = "stopped"  # cut short (or never started) because the bot is stopping


@dataclass(frozen=True)
class Backoff:
    """Delays between retries of failing work: `first` seconds, doubling up to `cap`."""

    first: float = 1.0
    cap: float = 30.0


class WorkerHealth:
    """One worker's or job's state: errors logged with their traceback and counted, backoff, failing since."""

    def __init__(
        self,
        name: str,
        errors: Any = None,
        *,
        backoff: Backoff = Backoff(),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._errors = errors  # prometheus Counter with a "worker" label, or None
        self._backoff = backoff
        self._monotonic = monotonic
        self.failing_since: float | None = None
        self.consecutive = 0
        self.last_error: str | None = None
        self.retry_in = backoff.first  # the delay the caller should wait after the latest failure
        self._next_delay = backoff.first
        self.dead = False

    def failed(self, err: BaseException) -> float:
        """Record a failure; returns how long to wait before trying again (1 s doubling to 30 s)."""
        kind = type(err).__name__
        if self._errors is not None:
            self._errors.labels(self.name).inc()
        self.retry_in = self._next_delay
        self._next_delay = min(self._next_delay * 2, self._backoff.cap)
        if self.failing_since is None or kind != self.last_error:
            # The first failure of a streak, or a different one: with its traceback.
            log.error("%s failed (%s); retrying in %.3g s", self.name, kind, self.retry_in, exc_info=err)
        else:
            log.warning(
                "%s still failing (%s, %d times in a row); retrying in %.3g s",
                self.name, kind, self.consecutive + 1, self.retry_in,
            )
        if self.failing_since is None:
            self.failing_since = self._monotonic()
        self.consecutive += 1
        self.last_error = kind
        return self.retry_in

    def succeeded(self) -> None:
        """Record a run that worked: the streak (if any) ends, logged once."""
        if self.failing_since is not None:
            log.info(
                "%s recovered after %d failures in %.0f s",
                self.name, self.consecutive, self._monotonic() - self.failing_since,
            )
        self.failing_since = None
        self.consecutive = 0
        self.last_error = None
        self._next_delay = self._backoff.first
        self.retry_in = self._backoff.first

    def failing_for(self) -> float:
        """Seconds since the current streak of failures began (0 when healthy)."""
        return 0.0 if self.failing_since is None else self._monotonic() - self.failing_since

    def problem(self, after: float, min_errors: int) -> str | None:
        """Why /healthz should answer 503 for this worker, or None."""
        if self.dead:
            return f"{self.name} is not running (its task ended)"
        if self.failing_since is not None and self.consecutive >= min_errors and self.failing_for() > after:
            return f"{self.name} has been failing for {self.failing_for():.0f} s ({self.last_error})"
        return None

    def report(self) -> dict[str, object]:
        """The figures /healthz shows for a worker that is not healthy."""
        return {
            "running": not self.dead,
            "failing_for_seconds": round(self.failing_for()),
            "errors_in_a_row": self.consecutive,
            "last_error": self.last_error,
        }


class Supervisor:
    """Runs the bot's background tasks and jobs under one set of rules, and stops them on shutdown.

    A job's work is raced against `stopping`, so shutdown cancels it instead of waiting for a slow
    Bitrix24; the storage layer rolls a cancelled transaction back.
    """

    def __init__(
        self,
        errors: Any = None,
        *,
        backoff: Backoff = Backoff(),
        monotonic: Callable[[], float] = time.monotonic,
        failing_after: float = FAILING_AFTER_SECONDS,
        min_errors: int = FAILING_MIN_ERRORS,
    ) -> None:
        self.stopping = asyncio.Event()
        self._errors = errors
        self._backoff = backoff
        self._monotonic = monotonic
        self._failing_after = failing_after
        self._min_errors = min_errors
        self._workers: dict[str, WorkerHealth] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def worker(self, name: str) -> WorkerHealth:
        """The health record of a worker or job, created on first use."""
        if name not in self._workers:
            self._workers[name] = WorkerHealth(name, self._errors, backoff=self._backoff, monotonic=self._monotonic)
        return self._workers[name]

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a long-lived worker; if its task ends before shutdown, /healthz says so."""
        health = self.worker(name)
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task

        def ended(done: asyncio.Task[None]) -> None:
            """A worker's task is over: expected only once stopping."""
            if self.stopping.is_set():
                return
            health.dead = True
            err = None if done.cancelled() else done.exception()
            log.error("%s stopped unexpectedly", name, exc_info=err)
            if err is not None and self._errors is not None:
                self._errors.labels(name).inc()

        task.add_done_callback(ended)
        return task

    def on_stop(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run `closer` at the end of stop() (e.g. close the health endpoint)."""
        self._closers.append(closer)

    async def guard(self, name: str, work: Callable[[], Awaitable[Any]]) -> Outcome:
        """Run one job's work: errors are logged and counted, and shutdown cancels it."""
        health = self.worker(name)
        if self.stopping.is_set():
            return Outcome.STOPPED
        task = asyncio.ensure_future(work())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            stop.cancel()
        if not task.done():
            task.add_done_callback(_retrieve)  # whatever it raises while cancelled is not news
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_GRACE_SECONDS)  # let it roll back; shutdown cuts the rest
            log.warning("%s was cut short by shutdown", name)
            return Outcome.STOPPED
        try:
            task.result()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the top of a job: log, count, back off; never kill the schedule
            health.failed(err)
            return Outcome.FAILED
        health.succeeded()
        return Outcome.OK

    def problems(self) -> list[str]:
        """Workers and jobs that are dead or have failed persistently, for /healthz."""
        found = (w.problem(self._failing_after, self._min_errors) for w in self._workers.values())
        return [p for p in found if p is not None]

    def unhealthy(self) -> dict[str, dict[str, object]]:
        """Each worker that is failing or dead, with its figures."""
        return {n: w.report() for n, w in sorted(self._workers.items()) if w.dead or w.failing_since is not None}

    async def stop(self, timeout: float) -> None:
        """Tell everything to stop; wait up to `timeout` for the workers, cancel the rest; never raises."""
        self.stopping.set()
        tasks = {t for t in self._tasks.values() if not t.done()}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                log.warning("%s did not stop within %.1f s; cancelled", task.get_name(), timeout)
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for task in self._tasks.values():
            if task.done() and not task.cancelled() and task.exception() is not None:
                # Already logged when it ended; retrieved here so shutdown never re-raises it.
                log.debug("%s had ended with %s", task.get_name(), type(task.exception()).__name__)
        self._tasks.clear()
        for closer in self._closers:
            try:
                await closer()
            except Exception:  # the top of a shutdown step: the others still run
                log.warning("closing a background service failed", exc_info=True)
        self._closers.clear()


# ---- shutdown helpers --------------------------------------------------------------------------

# PTB's own loops, which end by themselves once Application.stop() has queued its stop signal;
# cancelling them would abort stop() half-way (the JobQueue would never be shut down).
_LEFT_TO_PTB = (":update_fetcher", ":persistence_updater")


async def within(what: str, step: Awaitable[Any], timeout: float) -> bool:
    """One shutdown step, cancelled after `timeout` seconds; False (logged) when it was cut or failed. Never raises."""
    try:
        await asyncio.wait_for(step, timeout=max(0.0, timeout))
        return True
    except TimeoutError:
        log.warning("shutdown: %s did not finish within %.1f s; cut short", what, timeout)
    except Exception:  # the top of a shutdown step: the next steps must still run
        log.error("shutdown: %s failed", what, exc_info=True)
    return False


def _describe(task: asyncio.Task[Any]) -> str:
    name = task.get_name()
    if name.startswith("Task-"):
        coro = task.get_coro()
        return getattr(coro, "__qualname__", name)
    return name.rsplit(":", 1)[-1]  # PTB's names carry the bot's id; the kind of task is enough


async def cut_stragglers(before: set[asyncio.Task[Any]], keep: set[asyncio.Task[Any]], grace: float) -> list[str]:
    """Cancel the tasks started since `before` that still run (handlers, jobs); log and return what was cut."""
    current = asyncio.current_task()
    cut = [
        t for t in asyncio.all_tasks()
        if t not in before and t not in keep and t is not current and not t.done()
        and not t.get_name().endswith(_LEFT_TO_PTB)
    ]
    for task in cut:
        task.add_done_callback(_retrieve)
        task.cancel()
    names = sorted(_describe(t) for t in cut)
    if cut:
        log.warning("shutdown budget spent: cancelled %d tasks still running: %s", len(cut), ", ".join(names))
        await asyncio.wait(cut, timeout=max(0.0, grace))
    return names
