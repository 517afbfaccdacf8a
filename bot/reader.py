"""On-demand reads of one user (SPEC 5, 11): a window per kind of read, one request in flight per read,
and at most 6 Bitrix24 requests a minute for all of one user's reads together."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from bot.bitrix import INTERACTIVE_DEADLINE, BitrixClient, CounterResult
from bot.model import ROLES

WINDOW_SECONDS = 10.0  # one read of a kind per user per 10 s (SPEC 5)
REQUESTS_PER_MINUTE = 6  # all of one user's on-demand reads together (SPEC 11)

T = TypeVar("T")


class TooManyReads(Exception):
    """The user's reads used their Bitrix24 requests for this minute; `retry_in` seconds until one is free."""

    def __init__(self, retry_in: float) -> None:
        super().__init__(f"too many reads; retry in {retry_in:.0f} s")
        self.retry_in = retry_in


@dataclass(frozen=True)
class Read(Generic[T]):
    """What one read returned, when it was taken, and whether this answer came from the window."""

    value: T
    read_at: float
    cached: bool = False

    def read_at_utc(self) -> datetime:
        """read_at as an aware UTC datetime."""
        return datetime.fromtimestamp(self.read_at, UTC)


class SharedReads:
    """Reads keyed by (user, kind, ...): answered from the last read inside its window, shared while in flight.

    Requests that arrive while a read of the same key is in flight await that read instead of
    starting their own (eight /counters at once make one Bitrix24 request). A read that needs a
    request is refused with TooManyReads once the user made REQUESTS_PER_MINUTE in the last minute.
    """

    def __init__(self, clock: Any, *, per_minute: int = REQUESTS_PER_MINUTE) -> None:
        self._clock = clock
        self._per_minute = per_minute
        self._last: dict[Hashable, Read[Any]] = {}
        self._in_flight: dict[Hashable, asyncio.Task[Read[Any]]] = {}
        self._requests: dict[int, deque[float]] = {}

    async def read(
        self, bitrix_user_id: int, key: Hashable, window: float, fetch: Callable[[], Awaitable[T]], *, requests: int = 1
    ) -> Read[T]:
        """The value for `key`: from the window, from a read in flight, or from `fetch` (costing `requests`)."""
        full_key = (bitrix_user_id, key)
        now = self._clock.timestamp()
        last = self._last.get(full_key)
        if last is not None and now - last.read_at < window:
            return replace(last, cached=True)
        task = self._in_flight.get(full_key)
        if task is None:
            self._spend(bitrix_user_id, now, requests)
            task = asyncio.ensure_future(self._fetch(full_key, now, fetch))
            self._in_flight[full_key] = task
            task.add_done_callback(lambda done: self._finished(full_key, done))
        # shield: one impatient caller that is cancelled must not cancel the read the others await.
        return await asyncio.shield(task)

    def last(self, bitrix_user_id: int, key: Hashable) -> Read[Any] | None:
        """The last read of `key` kept (the cache keeps a minute), whatever its window."""
        return self._last.get((bitrix_user_id, key))

    def refused(self, bitrix_user_id: int, key: Hashable, window: float, *, requests: int = 1) -> float | None:
        """Seconds until a read of `key` could be made, when it would need a request past the cap; else None.

        Buttons ask first, so that a refusal is the toast of the press (SPEC 11) and the message stays.
        """
        full_key = (bitrix_user_id, key)
        now = self._clock.timestamp()
        last = self._last.get(full_key)
        if (last is not None and now - last.read_at < window) or full_key in self._in_flight:
            return None
        recent = [at for at in self._requests.get(bitrix_user_id, ()) if now - at < 60.0]
        if len(recent) + requests <= self._per_minute:
            return None
        return max(1.0, 60.0 - (now - recent[0]))

    def _spend(self, bitrix_user_id: int, now: float, requests: int) -> None:
        recent = self._requests.setdefault(bitrix_user_id, deque())
        while recent and now - recent[0] >= 60.0:
            recent.popleft()
        if len(recent) + requests > self._per_minute:
            raise TooManyReads(max(1.0, 60.0 - (now - recent[0])) if recent else 60.0)
        recent.extend([now] * requests)

    @property
    def entries(self) -> int:
        """Reads and per-user request records kept: only those of about the last minute."""
        return len(self._last) + len(self._requests)

    async def _fetch(self, full_key: Hashable, now: float, fetch: Callable[[], Awaitable[T]]) -> Read[T]:
        reading = Read(await fetch(), read_at=now)
        horizon = 60.0  # the longest window any kind uses, and the per-minute cap's
        # What only served the last minute is dropped here, so that with 30,000 users the process
        # keeps the readers of about the last minute, not everyone who ever read.
        self._last = {k: v for k, v in self._last.items() if now - v.read_at < horizon}
        self._requests = {k: d for k, d in self._requests.items() if d and now - d[-1] < horizon}
        self._last[full_key] = reading
        return reading

    def _finished(self, full_key: Hashable, task: asyncio.Task[Read[Any]]) -> None:
        self._in_flight.pop(full_key, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have been cancelled


Reading = Read[dict[str, CounterResult]]


class CounterReader:
    """A user's counters for every role, all five in one batch request, through SharedReads."""

    def __init__(self, bitrix: BitrixClient, clock: Any, reads: SharedReads | None = None) -> None:
        self._bitrix = bitrix
        self.reads = reads or SharedReads(clock)

    async def read(self, bitrix_user_id: int) -> Reading:
        """The user's counters for every role (raises TooManyReads past the per-minute cap)."""

        async def fetch() -> dict[str, CounterResult]:
            read = await self._bitrix.counters([bitrix_user_id], ROLES, deadline=INTERACTIVE_DEADLINE)
            return dict(read.get(bitrix_user_id, {}))

        return await self.reads.read(bitrix_user_id, "counters", WINDOW_SECONDS, fetch)

    def last(self, bitrix_user_id: int) -> dict[str, CounterResult] | None:
        """The counters of the user's last on-demand read (within the last minute), if any."""
        found = self.reads.last(bitrix_user_id, "counters")
        return found.value if found is not None else None

    def refused(self, bitrix_user_id: int) -> float | None:
        """Seconds until a counters read is possible again, when the per-minute cap would refuse it now."""
        return self.reads.refused(bitrix_user_id, "counters", WINDOW_SECONDS)
