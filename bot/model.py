"""Plain data shared by storage, the pure decision modules and the handlers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Bitrix24 roles, in the order the interface shows them.
ROLES: tuple[str, ...] = (
    "view_all",
    "view_role_responsible",
    "view_role_accomplice",
    "view_role_auditor",
    "view_role_originator",
)
# Short names users type after /counters.
ROLE_ALIASES: dict[str, str] = {
    "all": "view_all",
    "doing": "view_role_responsible",
    "helping": "view_role_accomplice",
    "following": "view_role_auditor",
    "created": "view_role_originator",
}
# Counters that can carry an alert threshold (Bitrix24 names).
ALERTABLE: tuple[str, ...] = ("expired", "new_comments")
# `total` is the sum of the others: neither shown nor alertable (SPEC section 2).
HIDDEN_COUNTERS: frozenset[str] = frozenset({"total"})

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS: frozenset[int] = frozenset(range(7))
WORK_DAYS: frozenset[int] = frozenset(range(5))

_OFFSET = re.compile(r"^UTC([+-])(\d{2}):(\d{2})$")


def zone(name: str) -> tzinfo:
    """Turn a stored zone name (IANA or `UTC+03:00`) into a tzinfo; unknown names raise ValueError."""
    m = _OFFSET.match(name)
    if m:
        sign = 1 if m.group(1) == "+" else -1
        delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return timezone(sign * delta) if delta else UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as err:
        raise ValueError(f"unknown time zone {name!r}") from err


@dataclass(frozen=True)
class UserSettings:
    """A linked user's preferences (SPEC section 6); times are local to `timezone`."""

    timezone: str = "UTC"
    digest_enabled: bool = True
    digest_time: time = time(9, 0)
    digest_days: frozenset[int] = WORK_DAYS  # 0 = Monday, as datetime.weekday()
    digest_empty: bool = False
    digest_tasks: bool = True  # the digest lists the most overdue tasks (SPEC 11)
    digest_team: bool = True  # a head's digest ends with the team line (SPEC 12)
    alerts_enabled: bool = True
    thresholds: dict[str, int] = field(default_factory=lambda: {"expired": 1})
    quiet_start: time | None = None
    quiet_end: time | None = None
    pause_until: date | None = None  # the local date the user is back
    language: str | None = None  # explicit /language choice

    def tz(self) -> tzinfo:
        """The user's tzinfo."""
        return zone(self.timezone)


@dataclass(frozen=True)
class AlertState:
    """Where one thresholded counter stands (SPEC section 7, Alerts)."""

    counter: str
    alerted: bool = False
    peak: int = 0
    snooze_until: datetime | None = None
    held: bool = False  # an alert was held by quiet hours and awaits the end-of-quiet summary
    baseline_needed: bool = True  # next successful poll only sets the state
    alerted_at: datetime | None = None  # when the read behind the last alert sent for this counter began
