"""Bitrix24's per-method time budget: execution seconds summed over a sliding 10 minutes."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from bot.bitrix.results import Operating, to_float
from bot.errors import BitrixTimeBudgetError

__all__ = ["BUDGET_WINDOW", "DEFAULT_BLOCK", "TimeBudget"]

log = logging.getLogger("bot.bitrix")

Clock = Callable[[], float]

# Bitrix24 sums execution time over ten one-minute baskets (limits.md).
BUDGET_WINDOW = 600.0
DEFAULT_BLOCK = 600.0  # OPERATION_TIME_LIMIT lifts "automatically after 10 minutes" (system-errors.ru.md)


class TimeBudget:
    """What each method has cost over the last 10 minutes, and which methods are blocked."""

    def __init__(self, *, wall: Clock = time.time) -> None:
        self._wall = wall
        self._operating: dict[str, Operating] = {}
        self._durations: dict[str, deque[tuple[float, float]]] = {}
        self._blocked_until: dict[str, float] = {}

    def used(self, method: str, now: float | None = None) -> float:
        """Seconds of `method` execution reported over the last 10 minutes (sliding)."""
        wall = self._wall()
        now = wall if now is None else now
        entries = self._durations.get(method)
        if not entries:
            return 0.0
        while entries and entries[0][0] <= wall - BUDGET_WINDOW:
            entries.popleft()
        return sum(duration for at, duration in entries if now - BUDGET_WINDOW < at <= now)

    def last_operating(self, method: str) -> Operating | None:
        """The last `time.operating` / `operating_reset_at` seen for `method`, if any."""
        return self._operating.get(method)

    def blocked_until(self, method: str) -> float | None:
        """Wall time until which `method` is refused after OPERATION_TIME_LIMIT, if blocked."""
        until = self._blocked_until.get(method)
        if until is None or until <= self._wall():
            return None
        return until

    def record(self, method: str, block: Any, *, count_duration: bool = True) -> float | None:
        """Remember duration and operating figures of one `time` block; return the duration."""
        if not isinstance(block, dict):
            return None
        now = self._wall()
        duration = to_float(block.get("duration"))
        if duration is None:
            start, finish = to_float(block.get("start")), to_float(block.get("finish"))
            if start is not None and finish is not None and finish >= start:
                duration = finish - start
        if duration is not None and count_duration:
            self._durations.setdefault(method, deque()).append((now, duration))
        operating = to_float(block.get("operating"))
        if operating is not None:
            self._operating[method] = Operating(operating, to_float(block.get("operating_reset_at")), now)
        return duration

    def check_blocked(self, methods: Sequence[str]) -> None:
        """Refuse, without a request, a call that would use a method still time-blocked."""
        now = self._wall()
        for method in methods:
            until = self._blocked_until.get(method)
            if until is not None and until > now:
                raise BitrixTimeBudgetError("OPERATION_TIME_LIMIT", retry_after=until - now, method=method)

    def block(self, method: str) -> float:
        """Block `method` until its last known operating_reset_at (else 10 min); return seconds."""
        now = self._wall()
        last = self._operating.get(method)
        retry_after = DEFAULT_BLOCK
        if last is not None and last.reset_at is not None and last.reset_at > now:
            retry_after = last.reset_at - now
        previous = self._blocked_until.get(method)
        self._blocked_until[method] = now + retry_after
        if previous is None or previous <= now:
            log.warning("bitrix %s blocked by OPERATION_TIME_LIMIT for %.0f s", method, retry_after)
        return retry_after
