"""The clock every time-dependent decision reads, so tests can set the time."""

from __future__ import annotations

from datetime import UTC, datetime


class Clock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        """The current time, UTC-aware."""
        return datetime.now(UTC)

    def timestamp(self) -> float:
        """The current time as Unix seconds."""
        return self.now().timestamp()
