"""On-demand reads of one user's counters, at most one Bitrix24 read per user per 10 s (SPEC section 5)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone

from bot.bitrix import BitrixClient, CounterResult
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
        return datetime.fromtimestamp(self.read_at, timezone.utc)


class CounterReader:
    """Reads all five roles in one batch; inside the window, answers from the last read."""

    def __init__(self, bitrix: BitrixClient, clock) -> None:
        self._bitrix = bitrix
        self._clock = clock
        self._last: dict[int, Reading] = {}

    async def read(self, bitrix_user_id: int) -> Reading:
        """The user's counters for every role."""
        now = self._clock.timestamp()
        last = self._last.get(bitrix_user_id)
        if last is not None and now - last.read_at < WINDOW_SECONDS:
            return replace(last, cached=True)
        results = (await self._bitrix.counters([bitrix_user_id], ROLES)).get(bitrix_user_id, {})
        reading = Reading(results=dict(results), read_at=now)
        self._last = {k: v for k, v in self._last.items() if now - v.read_at < WINDOW_SECONDS}
        self._last[bitrix_user_id] = reading
        return reading
