"""On-demand reads of one user's counters: one Bitrix24 read per user per 10 s, shared while in flight (SPEC 5)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from bot.bitrix import INTERACTIVE_DEADLINE, BitrixClient, CounterResult
from bot.model import ROLES

WINDOW_SECONDS = 10.0


@dataclass(frozen=True)
class Reading:
    """All five roles of one user, when they were read, and whether this answer came from the window."""

    results: dict[str, CounterResult]
    read_at: float
    cached: bool = False

    def read_at_utc(self) -> datetime:
        """read_at as an aware UTC datetime."""
        return datetime.fromtimestamp(self.read_at, UTC)


class CounterReader:
    """Reads all five roles in one batch; inside the window, answers from the last read.

    Requests for the same user that arrive while a read is in flight await that read instead of
    starting their own (eight /counters at once make one Bitrix24 request).
    """

    def __init__(self, bitrix: BitrixClient, clock: Any) -> None:
        self._bitrix = bitrix
        self._clock = clock
        self._last: dict[int, Reading] = {}
        self._in_flight: dict[int, asyncio.Task[Reading]] = {}

    async def read(self, bitrix_user_id: int) -> Reading:
        """The user's counters for every role."""
        now = self._clock.timestamp()
        last = self._last.get(bitrix_user_id)
        if last is not None and now - last.read_at < WINDOW_SECONDS:
            return replace(last, cached=True)
        task = self._in_flight.get(bitrix_user_id)
        if task is None:
            task = asyncio.ensure_future(self._read(bitrix_user_id, now))
            self._in_flight[bitrix_user_id] = task
            task.add_done_callback(lambda done: self._finished(bitrix_user_id, done))
        # shield: one impatient caller that is cancelled must not cancel the read the others await.
        return await asyncio.shield(task)

    def _finished(self, bitrix_user_id: int, task: asyncio.Task[Reading]) -> None:
        self._in_flight.pop(bitrix_user_id, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have been cancelled

    async def _read(self, bitrix_user_id: int, now: float) -> Reading:
        read = await self._bitrix.counters([bitrix_user_id], ROLES, deadline=INTERACTIVE_DEADLINE)
        reading = Reading(results=dict(read.get(bitrix_user_id, {})), read_at=now)
        self._last = {k: v for k, v in self._last.items() if now - v.read_at < WINDOW_SECONDS}
        self._last[bitrix_user_id] = reading
        return reading
