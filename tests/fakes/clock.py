"""A clock tests set and move by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    """Same interface as bot.clock.Clock; starts at a fixed instant."""

    def __init__(self, start: datetime = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)) -> None:
        self._now = start

    def now(self) -> datetime:
        """The current fake time."""
        return self._now

    def timestamp(self) -> float:
        """The current fake time as Unix seconds."""
        return self._now.timestamp()

    def set(self, when: datetime) -> None:
        """Jump to an instant."""
        self._now = when

    def advance(self, **delta: float) -> None:
        """Move forward by timedelta(**delta)."""
        self._now += timedelta(**delta)
