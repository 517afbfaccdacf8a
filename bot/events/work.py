"""What a Bitrix24 event sets off (SPEC 14): gather task IDs, find their linked members, refresh them.

One worker, so event refreshes never overlap each other; a refresh goes through the
coordinator's own path (Coordinator.refresh -> apply_readings), where an event refresh and a
poll of the same user are ordered by when their reads began. Everything here waits behind
users' own reads, digests and polls (Priority.EVENT in the client's bucket) and is shed first
when the time budget runs short; what is shed, failed or overflowed is left to the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.bitrix import COUNTERS_METHOD, TASKS_METHOD, BitrixClient, Task
from bot.config import Settings
from bot.errors import BitrixError
from bot.events.intake import TaskEvent, ThrottledLog
from bot.storage import Storage, links, meta, task_members
from bot.supervise import WorkerHealth

log = logging.getLogger(__name__)

PENDING_LIMIT = 10_000  # task IDs waiting for their round
WINDOW_MIN = 1.0  # seconds task IDs are gathered before a round
WINDOW_MAX = 60.0  # while the bucket is busy the window doubles up to this
MIN_REREAD = 30.0  # a user refreshed this recently is read again only after it
RECHECK_AFTER = 20.0  # unchanged counters are read once more after this (Bitrix24 recounts asynchronously)
REFRESH_CHUNK = 500  # users per refresh call
ROUND_REQUESTS = 2  # a round's usual cost: the tasks' members, then the users' counters
LAST_EVENT_KEY = "events:last_valid"  # when the last valid event arrived (meta), for `check`

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class _Pending:
    """A task named by events since the last round."""

    received_at: float  # the first of them
    comment: bool  # only comment events: the members did not change
    deleted: bool  # the task is gone


@dataclass(frozen=True)
class _Due:
    """A user's refresh waiting for its time."""

    at: float
    bitrix_user_id: int
    caused_at: float  # receipt of the earliest event behind it
    recheck: bool  # the one re-read after unchanged counters


def people_on(task: Task) -> set[int]:
    """Everyone on a task in any role."""
    found = {task.responsible_id, task.created_by, *task.accomplices, *task.auditors}
    return {person for person in found if person}


class EventWork:
    """Pending task IDs in, refreshes out; bounded memory (PENDING_LIMIT tasks, one entry per user due)."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        bitrix: BitrixClient,
        refresh: Callable[[dict[int, int], dict[int, float]], Awaitable[dict[int, bool]]],
        clock: Any,
        metrics: Any,
        *,
        sleep: Sleep = asyncio.sleep,
        poll_idle: asyncio.Event | None = None,
    ) -> None:
        self._settings = settings
        self._poll_idle = poll_idle
        self._storage = storage
        self._bitrix = bitrix
        self._refresh = refresh
        self._clock = clock
        self._metrics = metrics
        self.sleep = sleep  # waits the gathering window and for due refreshes (tests move a fake clock)
        self.health = WorkerHealth("events", metrics.worker_errors)
        # Set by the jobs: bring the next poll forward; False when no poll could be moved.
        self.poll_soon: Callable[[], bool] | None = None
        self._pending: dict[int, _Pending] = {}
        self._due: dict[int, _Due] = {}
        self._last_read: dict[int, float] = {}
        self._window = WINDOW_MIN
        self._wake = asyncio.Event()
        self._throttle = ThrottledLog()
        self._brought_forward_at: float | None = None
        self.last_valid_at: float | None = None
        self._saved_last_valid: float | None = None
        self._working = False
        # Per-round figures for benchmarks/events.py: rounds, and the SPEC 8 bound summed over them.
        self.rounds = 0
        self.round_bound = 0

    @property
    def idle(self) -> bool:
        """Nothing pending, due or being worked on."""
        return not self._pending and not self._due and not self._working

    # ---- intake --------------------------------------------------------------------------------

    def add(self, event: TaskEvent) -> bool:
        """Queue a valid event's task; False (counted) when the pending work is full."""
        self.last_valid_at = event.received_at
        pending = self._pending.get(event.task_id)
        if pending is None:
            if len(self._pending) >= PENDING_LIMIT:
                self._overflow()
                return False
            self._pending[event.task_id] = _Pending(event.received_at, event.comment, event.deleted)
        else:
            pending.comment = pending.comment and event.comment
            pending.deleted = pending.deleted or event.deleted
        self._wake.set()
        return True

    def _overflow(self) -> None:
        self._metrics.event_overflow.inc()
        now = self._clock.timestamp()
        interval = float(self._settings.poll_interval_seconds)
        if self._brought_forward_at is None or now - self._brought_forward_at >= interval:
            if self.poll_soon is not None and self.poll_soon():
                self._brought_forward_at = now
                log.warning("events: more than %d tasks waiting; the next poll was brought forward", PENDING_LIMIT)
                return
        self._throttle.warn("overflow", "events: more than %d tasks waiting; events dropped, the next poll covers them", PENDING_LIMIT)

    @property
    def pending(self) -> int:
        """Task IDs waiting for their round."""
        return len(self._pending)

    @property
    def due(self) -> int:
        """Users waiting for their refresh."""
        return len(self._due)

    # ---- the worker ------------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Until `stopping` is set (or cancelled): gather, find members, refresh; a failed step is logged and the work goes on.

        What is still pending at shutdown is left to the next poll, as for a missed event.
        """
        self._stopping = stopping
        while stopping is None or not stopping.is_set():
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the top of the worker: an I/O error, a bug in one round
                await self.sleep(self.health.failed(err))
                continue
            self.health.succeeded()

    async def step(self) -> None:
        """One turn: a round for the gathered tasks, the refreshes that are due, or a wait for either."""
        self._working = True
        try:
            await self._turn()
        finally:
            self._working = False
        nxt = self._next_due()
        if not self._pending and (nxt is None or nxt > self._clock.timestamp()):
            await self._idle()

    async def _turn(self) -> None:
        if self._poll_idle is not None and not self._poll_idle.is_set():
            await self._poll_idle.wait()  # a poll cycle runs: event work never delays it; it reads everyone anyway
        if self._pending:
            # A round costs two requests (members, counters): while the bucket cannot take them yet,
            # gathering longer is free and makes the next round count for more tasks.
            self._window = min(WINDOW_MAX, max(WINDOW_MIN, self._bitrix.event_wait(ROUND_REQUESTS)))
            await self.sleep(self._window)
            await self.gather_round()
        nxt = self._next_due()
        if nxt is not None and nxt <= self._clock.timestamp():
            await self.refresh_due()

    def _next_due(self) -> float | None:
        return min((d.at for d in self._due.values()), default=None)

    async def _idle(self) -> None:
        """Wait for a new event or the next due refresh, whichever comes first."""
        self._wake.clear()
        nxt = self._next_due()
        waiter = asyncio.ensure_future(self._wake.wait())
        waits: set[asyncio.Future[Any]] = {waiter}
        if self._stopping is not None:
            waits.add(asyncio.ensure_future(self._stopping.wait()))
        if nxt is not None:
            waits.add(asyncio.ensure_future(self.sleep(max(0.0, nxt - self._clock.timestamp()))))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    # ---- a round -------------------------------------------------------------------------------

    async def gather_round(self) -> None:
        """The gathered tasks' members (the cache, and tasks.task.list for what changed) get their refresh scheduled."""
        batch, self._pending = self._pending, {}
        if not batch:
            return
        now = self._clock.timestamp()
        cached = await task_members.members_of(self._storage.db, list(batch))
        to_read = [task_id for task_id, p in batch.items() if not p.deleted and not (p.comment and task_id in cached)]
        fresh = await self._read_members(to_read) if to_read else {}
        self.rounds += 1
        self.round_bound += math.ceil(len(to_read) / 50)
        people: dict[int, float] = {}
        for task_id, p in batch.items():
            members = set(cached.get(task_id, ()))
            if fresh is not None and task_id in fresh:
                members |= people_on(fresh[task_id])
            for person in members:
                people[person] = min(people.get(person, math.inf), p.received_at)
        gone = [task_id for task_id, p in batch.items() if p.deleted]
        if fresh is not None:
            gone += [task_id for task_id in to_read if task_id not in fresh]  # deleted, or out of the webhook's sight
        async with self._storage.transaction() as db:
            # Who is linked is read in the transaction that writes the cache: someone who unlinks
            # during the task read is never cached (the cache keeps linked people only, SPEC 9).
            linked = await links.active_of(db, list(people))
            updates = {task_id: people_on(task) & linked.keys() for task_id, task in (fresh or {}).items()}
            await task_members.replace(db, updates, now)
            await task_members.delete_tasks(db, gone)
            if self.last_valid_at is not None and self.last_valid_at != self._saved_last_valid:
                await meta.put_json(db, LAST_EVENT_KEY, self.last_valid_at)
                self._saved_last_valid = self.last_valid_at
        for bitrix_user_id, link in linked.items():
            if self._settings.is_allowed(link.telegram_user_id):
                self._schedule(link.telegram_user_id, bitrix_user_id, people[bitrix_user_id], now)

    async def _read_members(self, task_ids: list[int]) -> dict[int, Task] | None:
        """The tasks' members from Bitrix24; None when the read was shed or failed (the cache alone is used)."""
        budget = self._bitrix.budget
        requests = math.ceil(len(task_ids) / 50)
        if budget.wait_needed(TASKS_METHOD, budget.estimate(TASKS_METHOD, requests), bulk=True) > 0:
            self._metrics.event_shed.inc(len(task_ids))
            self._throttle.warn("shed_tasks", "events: task reads shed, the tasks.task.list time budget runs short")
            return None
        try:
            return await self._bitrix.tasks_by_ids(task_ids)
        except BitrixError as err:
            self._metrics.event_failures.inc()
            if err.code == "FILTER_IGNORED":
                log.error("events: the portal ignores the tasks.task.list ID filter; only cached members are refreshed")
            else:
                self._throttle.warn("read_failed", "events: reading %d tasks failed: %s %s", len(task_ids), err.kind, err.code)
            return None

    def _schedule(self, telegram_user_id: int, bitrix_user_id: int, caused_at: float, now: float) -> None:
        last = self._last_read.get(telegram_user_id)
        at = now if last is None or now - last >= MIN_REREAD else last + MIN_REREAD
        current = self._due.get(telegram_user_id)
        if current is not None:
            at, caused_at = min(at, current.at), min(caused_at, current.caused_at)
        self._due[telegram_user_id] = _Due(at, bitrix_user_id, caused_at, recheck=False)

    # ---- refreshes -------------------------------------------------------------------------------

    async def refresh_due(self) -> int:
        """Refresh the users whose time has come (REFRESH_CHUNK at most); returns how many were read."""
        now = self._clock.timestamp()
        ready = sorted(((d.at, tid) for tid, d in self._due.items() if d.at <= now))[:REFRESH_CHUNK]
        if not ready:
            return 0
        taken = {tid: self._due.pop(tid) for _, tid in ready}
        budget = self._bitrix.budget
        requests = math.ceil(len(taken) / 50)
        if budget.wait_needed(COUNTERS_METHOD, budget.estimate(COUNTERS_METHOD, len(taken)), bulk=True) > 0:
            self._metrics.event_shed.inc(len(taken))
            self._throttle.warn("shed_refresh", "events: %d refreshes shed, the time budget runs short", len(taken))
            return 0
        self.round_bound += requests
        changed = await self._refresh(
            {tid: d.bitrix_user_id for tid, d in taken.items()}, {tid: d.caused_at for tid, d in taken.items()}
        )
        self._metrics.event_refreshes.inc(len(changed))
        log.debug("events: %d users refreshed in about %d requests", len(changed), requests)
        for tid, d in taken.items():
            self._last_read[tid] = now
            if tid in changed and not changed[tid] and not d.recheck and tid not in self._due:
                self._due[tid] = _Due(now + RECHECK_AFTER, d.bitrix_user_id, d.caused_at, recheck=True)
        self._last_read = {tid: at for tid, at in self._last_read.items() if now - at < MIN_REREAD}
        return len(changed)
