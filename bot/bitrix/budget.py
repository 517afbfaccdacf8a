"""Bitrix24's per-method time budget in one place: what each method cost, pacing, blocks, persistence.

Bitrix24 sums each method's execution time per webhook over ten one-minute baskets and
answers 429 OPERATION_TIME_LIMIT once the sum passes the limit (limits.md; the docs'
example limit is 480 s per 10 minutes). Baskets drop at most 10 minutes after their
calls, so a sliding 600 s window over our own records never forgets a call before the
server does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from bot.bitrix.results import Operating, to_float
from bot.errors import BitrixTimeBudgetError

__all__ = ["BUDGET_WINDOW", "BULK_SHARE", "DEFAULT_BLOCK", "DEFAULT_LIMIT", "TimeBudget"]

log = logging.getLogger("bot.bitrix")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

BUDGET_WINDOW = 600.0  # ten one-minute baskets (limits.md)
DEFAULT_LIMIT = 480.0  # seconds per method per 10 minutes: the docs' example; the cloud value is configured
# Bulk work (polls, digests) keeps under this share of the limit, so that a user's own
# /counters always finds budget left.
BULK_SHARE = 0.8
DEFAULT_BLOCK = 600.0  # OPERATION_TIME_LIMIT lifts "automatically after 10 minutes" (system-errors.ru.md)
EXPORT_VERSION = 1

Entry = tuple[float, float]  # (wall time, seconds)


class TimeBudget:
    """Per-method execution seconds over the last 10 minutes; reservations for bulk work; 429 blocks."""

    def __init__(
        self,
        *,
        wall: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        limit: float = DEFAULT_LIMIT,
        bulk_share: float = BULK_SHARE,
    ) -> None:
        if limit <= 0 or not 0 < bulk_share <= 1:
            raise ValueError("limit must be > 0 and 0 < bulk_share <= 1")
        self.limit = limit
        self.bulk_share = bulk_share
        self._wall = wall
        self._sleep = sleep
        self._spent: dict[str, list[Entry]] = {}  # what the answers said each call took
        # Reservations of requests still in flight: (wall time, seconds held, seconds asked).
        self._pending: dict[str, list[tuple[float, float, float]]] = {}
        # Seconds the server counted that our own records do not explain (another process
        # on the same webhook, or calls from before a restart), as (seen at, seconds).
        self._foreign: dict[str, Entry] = {}
        self._operating: dict[str, Operating] = {}
        self._blocked_until: dict[str, float] = {}
        self._per_command: dict[str, float] = {}
        self._unreconciled: set[str] = set()
        self._lock = asyncio.Lock()

    # -- what was used ------------------------------------------------------------------

    def _entries(self, method: str, now: float) -> list[Entry]:
        """Every entry still inside the window ending at `now`, oldest first (expired ones dropped)."""
        horizon = now - BUDGET_WINDOW
        wall_horizon = self._wall() - BUDGET_WINDOW
        if method in self._spent:
            self._spent[method] = [e for e in self._spent[method] if e[0] > wall_horizon]
        if method in self._pending:
            self._pending[method] = [p for p in self._pending[method] if p[0] > wall_horizon]
        entries = [e for e in self._spent.get(method, ()) if horizon < e[0] <= now]
        entries += [(at, held) for at, held, _ in self._pending.get(method, ()) if horizon < at <= now]
        foreign = self._foreign.get(method)
        if foreign is not None and horizon < foreign[0] <= now:
            entries.append(foreign)
        entries.sort()
        return entries

    def used(self, method: str, now: float | None = None) -> float:
        """Seconds of `method` counted in (now - 600, now]: own records, reservations, and server-only time."""
        now = self._wall() if now is None else now
        return sum(seconds for _, seconds in self._entries(method, now))

    def spent(self, method: str, now: float | None = None) -> float:
        """Seconds of `method` the answers reported in (now - 600, now] (no reservations, no server-only time)."""
        now = self._wall() if now is None else now
        return sum(s for at, s in self._spent.get(method, ()) if now - BUDGET_WINDOW < at <= now)

    def last_operating(self, method: str) -> Operating | None:
        """The last `time.operating` / `operating_reset_at` seen for `method`, if any."""
        return self._operating.get(method)

    def per_command(self, method: str) -> float | None:
        """The last observed seconds one command of `method` took, None when never seen."""
        return self._per_command.get(method)

    def estimate(self, method: str, commands: int) -> float:
        """Expected seconds for `commands` calls of `method`: last per-command cost x count (0 when unknown)."""
        return self._per_command.get(method, 0.0) * max(0, commands)

    def share(self, *, bulk: bool) -> float:
        """The seconds per 10 minutes this priority may fill: the bulk share, or the whole limit."""
        return self.limit * (self.bulk_share if bulk else 1.0)

    # -- recording answers ----------------------------------------------------------------

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
        if duration is not None and duration >= 0 and count_duration:
            self._spent.setdefault(method, []).append((now, duration))
        operating = to_float(block.get("operating"))
        if operating is not None:
            self._operating[method] = Operating(operating, to_float(block.get("operating_reset_at")), now)
            if count_duration:
                self._reconcile(method)
            else:
                self._unreconciled.add(method)  # compared once spend() has counted the answer
        return duration

    def _reconcile(self, method: str) -> None:
        """The server's figure wins when it is larger than ours: the difference is time we did not see."""
        self._unreconciled.discard(method)
        last = self._operating.get(method)
        if last is None:
            return
        # It stays counted until it has certainly left the server's window.
        unexplained = last.operating - self.spent(method, last.seen_at)
        if unexplained > 0:
            self._foreign[method] = (last.seen_at, unexplained)
        else:
            self._foreign.pop(method, None)

    def spend(self, method: str, seconds: float) -> None:
        """Count `seconds` of `method` execution now (e.g. all commands of one batch answer at once)."""
        if math.isfinite(seconds) and seconds > 0:
            self._spent.setdefault(method, []).append((self._wall(), seconds))
        if method in self._unreconciled:
            self._reconcile(method)

    def note_cost(self, method: str, durations: Sequence[float]) -> None:
        """Remember the mean per-command cost of `method` in the last answer that ran it."""
        values = [d for d in durations if math.isfinite(d) and d >= 0]
        if values:
            self._per_command[method] = sum(values) / len(values)

    # -- pacing -------------------------------------------------------------------------------

    def wait_needed(self, method: str, estimate: float, *, bulk: bool, now: float | None = None) -> float:
        """Seconds until `estimate` more fits under this priority's share (0 when it fits now)."""
        now = self._wall() if now is None else now
        share = self.share(bulk=bulk)
        estimate = min(max(0.0, estimate), share)
        entries = self._entries(method, now)
        total = sum(seconds for _, seconds in entries)
        slack = 1e-9 * max(1.0, share)
        if total + estimate <= share + slack:
            return 0.0
        for at, seconds in entries:
            total -= seconds
            if total + estimate <= share + slack:
                # An entry at `at` is outside the window (t - 600, t] from t = at + 600 on.
                return max(0.001, at + BUDGET_WINDOW - now)
        return max(0.001, entries[-1][0] + BUDGET_WINDOW - now)  # only float noise gets here

    async def reserve(self, method: str, estimate: float, *, bulk: bool) -> float:
        """Wait until `estimate` seconds of `method` fit under the share, hold them until settle(); return the wait.

        Reservations are taken one at a time, each counting those before it, so the sum in
        any 10-minute window stays under the share as long as each request costs no more
        than its estimate. An estimate above the share is capped at the share.
        """
        asked = estimate
        estimate = min(max(0.0, estimate), self.share(bulk=bulk))
        started = self._wall()
        async with self._lock:
            while True:
                now = self._wall()
                wait = self.wait_needed(method, estimate, bulk=bulk, now=now)
                if wait <= 0:
                    break
                await self._sleep(wait)
            if estimate > 0:
                self._pending.setdefault(method, []).append((now, estimate, asked))
        waited = self._wall() - started
        if waited > 0:
            log.debug("bitrix %s: waited %.0f s for time budget (%.0f s reserved)", method, waited, estimate)
        return waited

    def settle(self, method: str, estimate: float, *, spent: float | None = None) -> None:
        """Release the oldest reservation of reserve(method, estimate); `spent` seconds stay as used (outcome unknown)."""
        pending = self._pending.get(method)
        if spent is not None:
            spent = min(spent, self.limit)
        if estimate > 0 and pending:
            for index, (_, held, asked) in enumerate(pending):
                if asked == estimate:
                    del pending[index]
                    if spent is not None:
                        spent = min(spent, held)
                    break
        if spent is not None and spent > 0:
            self._spent.setdefault(method, []).append((self._wall(), spent))

    def stretch_needed(self, method: str, commands: int, interval: float) -> float | None:
        """The cycle interval the bulk share needs for `commands` calls per cycle, if longer than `interval`."""
        cost = self.estimate(method, commands)
        if cost <= 0:
            return None
        needed = BUDGET_WINDOW * cost / self.share(bulk=True)
        return needed if needed > interval else None

    # -- blocks ---------------------------------------------------------------------------------

    def blocked_until(self, method: str) -> float | None:
        """Wall time until which `method` is refused after OPERATION_TIME_LIMIT, if blocked."""
        until = self._blocked_until.get(method)
        if until is None or until <= self._wall():
            return None
        return until

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

    # -- persistence ------------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """A JSON-able snapshot: per method the last 10 minutes' entries, blocked_until, per-command cost, operating.

        Format: {"version": 1, "methods": {method: {"entries": [[wall, seconds], ...],
        "blocked_until": wall | None, "per_command": seconds | None,
        "operating": [operating, reset_at | None, seen_at] | None}}}. Reservations and
        server-only time are saved as ordinary entries: after a restart they still count.
        """
        now = self._wall()
        names = set(self._spent) | set(self._pending) | set(self._foreign) | set(self._blocked_until)
        names |= set(self._per_command) | set(self._operating)
        methods: dict[str, Any] = {}
        for method in sorted(names):
            until = self.blocked_until(method)
            last = self._operating.get(method)
            methods[method] = {
                "entries": [[at, seconds] for at, seconds in self._entries(method, now)],
                "blocked_until": until,
                "per_command": self._per_command.get(method),
                "operating": None if last is None else [last.operating, last.reset_at, last.seen_at],
            }
        return {"version": EXPORT_VERSION, "methods": methods}

    def restore(self, data: Mapping[str, Any] | None, now: float | None = None) -> None:
        """Merge an export() snapshot back in, dropping whatever has expired by `now`; odd data is skipped."""
        now = self._wall() if now is None else now
        if not isinstance(data, Mapping) or data.get("version") != EXPORT_VERSION:
            if data:
                log.warning("bitrix time budget: a saved state of an unknown format was ignored")
            return
        methods = data.get("methods")
        for method, saved in (methods.items() if isinstance(methods, Mapping) else ()):
            if not isinstance(method, str) or not isinstance(saved, Mapping):
                continue
            self._restore_method(method, saved, now)

    def _restore_method(self, method: str, saved: Mapping[str, Any], now: float) -> None:
        entries = saved.get("entries")
        for item in entries if isinstance(entries, list) else ():
            if isinstance(item, (list, tuple)) and len(item) == 2:
                at, seconds = to_float(item[0]), to_float(item[1])
                if at is not None and seconds is not None and seconds > 0 and now - BUDGET_WINDOW < at <= now:
                    self._spent.setdefault(method, []).append((at, seconds))
        self._spent.get(method, []).sort()
        until = to_float(saved.get("blocked_until"))
        if until is not None and until > now:
            self._blocked_until[method] = max(until, self._blocked_until.get(method, until))
        per_command = to_float(saved.get("per_command"))
        if per_command is not None and per_command >= 0 and method not in self._per_command:
            self._per_command[method] = per_command
        operating = saved.get("operating")
        if isinstance(operating, (list, tuple)) and len(operating) == 3:
            value, reset_at, seen_at = (to_float(v) for v in operating)
            current = self._operating.get(method)
            fresh = value is not None and seen_at is not None and now - BUDGET_WINDOW < seen_at <= now
            if fresh and value is not None and seen_at is not None and (current is None or current.seen_at < seen_at):
                self._operating[method] = Operating(value, reset_at, seen_at)
