"""Pure digest scheduling: when a user's digest falls due, in their zone, DST-safe (SPEC 6, 7)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from .model import UserSettings

# Why a Due was produced; the coordinator logs it and records skips.
REASON_ON_TIME = "on_time"  # within 10 minutes of the due time (SPEC 7: "on time")
REASON_LATE = "late"  # more than 10 minutes late but inside the window: still sent
REASON_MISSED = "missed"  # older than the window (bot down, counters unreadable): skip
REASON_PAUSED = "paused"  # the local date is before the pause's return date: skip

ON_TIME_SLACK = timedelta(minutes=10)
DEFAULT_WINDOW = timedelta(hours=2)
READ_AHEAD_CAP = timedelta(minutes=30)
USERS_PER_DIGEST_BATCH = 10  # 5 roles x 10 users = 50 commands, the batch maximum


@dataclass(frozen=True)
class Due:
    """A scheduled digest occurrence that needs action now: send it, or record it as skipped."""

    local_date: date
    due_at_utc: datetime
    skip: bool
    reason: str


def _require_aware(moment: datetime) -> None:
    """Refuse naive datetimes: every instant here is an aware UTC (or aware any-zone) datetime."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("an aware datetime is required")


def local_today(settings: UserSettings, now: datetime) -> date:
    """The user's local calendar date at the instant `now`."""
    _require_aware(now)
    return now.astimezone(settings.tz()).date()


def pause_active(settings: UserSettings, now: datetime) -> bool:
    """Whether a pause is in force: until 00:00 local on the return date (SPEC 6 /pause)."""
    return settings.pause_until is not None and local_today(settings, now) < settings.pause_until


def local_to_utc(day: date, at: time, tz: tzinfo) -> datetime:
    """The UTC instant of local `day` `at` in `tz`: a gap time is shifted forward by the gap, a repeated time is its first occurrence."""
    naive = datetime.combine(day, at.replace(tzinfo=None))
    # fold=0 picks the first occurrence of a repeated (fall-back) time. For a nonexistent
    # (spring-forward) time PEP 495 makes fold=0 use the offset in force *before* the
    # transition, which is exactly "shifted forward by the gap" (02:30 EST -> 03:30 EDT).
    first = naive.replace(tzinfo=tz, fold=0)
    utc = first.astimezone(UTC)
    round_trip = utc.astimezone(tz).replace(tzinfo=None)
    if round_trip != naive:
        # A gap: round-tripping lands after the gap. Check the shift really is forward, so a
        # tzinfo with unusual fold semantics cannot make us fire before the local time.
        later = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
        utc = max(utc, later)
    return utc


def _occurrence(settings: UserSettings, day: date, tz: tzinfo) -> datetime | None:
    """The due instant of the digest on local `day`, or None when `day` is not a digest day."""
    if day.weekday() not in settings.digest_days:
        return None
    return local_to_utc(day, settings.digest_time, tz)


def next_digest_due(settings: UserSettings, after: datetime) -> tuple[date, datetime] | None:
    """The next scheduled digest strictly after `after`: (local date, due instant in UTC), or None when digests are off."""
    _require_aware(after)
    if not settings.digest_enabled or not settings.digest_days:
        return None
    tz = settings.tz()
    start = after.astimezone(tz).date() - timedelta(days=1)  # a gap shift can cross dates
    for offset in range(10):
        day = start + timedelta(days=offset)
        due = _occurrence(settings, day, tz)
        if due is not None and due > after:
            return day, due
    return None  # unreachable with a non-empty weekday set


def _latest_occurrence(settings: UserSettings, now: datetime, tz: tzinfo) -> tuple[date, datetime] | None:
    """The most recent scheduled digest at or before `now`."""
    start = now.astimezone(tz).date() + timedelta(days=1)
    for offset in range(10):
        day = start - timedelta(days=offset)
        due = _occurrence(settings, day, tz)
        if due is not None and due <= now:
            return day, due
    return None


def due_digests(
    settings: UserSettings,
    now: datetime,
    last_local_date: date | None,
    saved_at: datetime | None,
    window: timedelta = DEFAULT_WINDOW,
) -> Due | None:
    """Whether a scheduled digest needs action now (send or record as skipped), or None.

    Only the most recent occurrence at or before `now` is considered. It is ignored when its
    local date is not newer than `last_local_date` (the newest local date already sent or
    skipped: at most one digest per local date, even across zone changes) or when it was due
    at or before `saved_at` (a settings change never catches up a time already past).
    """
    _require_aware(now)
    if not settings.digest_enabled or not settings.digest_days:
        return None
    tz = settings.tz()
    found = _latest_occurrence(settings, now, tz)
    if found is None:
        return None
    day, due = found
    if last_local_date is not None and day <= last_local_date:
        return None
    if saved_at is not None and due <= saved_at:
        return None
    if settings.pause_until is not None and day < settings.pause_until:
        return Due(day, due, skip=True, reason=REASON_PAUSED)
    late = now - due
    if late > window:
        return Due(day, due, skip=True, reason=REASON_MISSED)
    return Due(day, due, skip=False, reason=REASON_ON_TIME if late <= ON_TIME_SLACK else REASON_LATE)


def read_lead_time(users_due_count: int, seconds_per_batch: float) -> timedelta:
    """How long before the due time the digest read must start: one batch per 10 users, capped at 30 minutes."""
    batches = math.ceil(max(users_due_count, 0) / USERS_PER_DIGEST_BATCH)
    return min(timedelta(seconds=batches * max(seconds_per_batch, 0.0)), READ_AHEAD_CAP)


def read_ahead(due_at: datetime, now: datetime, users_due_count: int, seconds_per_batch: float) -> bool:
    """Whether the coordinator should start reading counters now to finish by `due_at` (never more than 30 minutes early)."""
    return now >= due_at - read_lead_time(users_due_count, seconds_per_batch)
