"""Pure alert state machine over `view_all` counters: thresholds, snoozes, mute, pause and quiet hours (SPEC 7)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from typing import Literal

from .model import AlertState, UserSettings
from .schedule import local_to_utc, local_today, next_digest_due, pause_active

SNOOZE_HOUR = timedelta(minutes=60)
FOLD_WINDOW = timedelta(minutes=30)  # SPEC 7: a summary folds into a digest due this soon
# Poll reads start one interval apart, give or take the scheduler's own latency: a regrowth
# read this much short of the gap still counts as the next interval's.
CALM_TOLERANCE = timedelta(seconds=1)
SnoozeKind = Literal["hour", "tomorrow"]


@dataclass(frozen=True)
class Alert:
    """One message to send: `counter` reached `value`, at or above `threshold`."""

    counter: str
    value: int
    threshold: int


@dataclass(frozen=True)
class AlertOutcome:
    """Result of one poll: the full new state per thresholded counter, alerts to send, counters newly held."""

    states: dict[str, AlertState]
    send: tuple[Alert, ...]
    held_now: tuple[str, ...]


@dataclass(frozen=True)
class QuietSummary:
    """End-of-quiet-hours summary: held counters still at or above threshold, and the new states."""

    items: tuple[Alert, ...]
    states: dict[str, AlertState]


def in_quiet_hours(settings: UserSettings, now: datetime) -> bool:
    """Whether `now` falls in the user's quiet hours [start, end) in their zone (may cross midnight)."""
    start, end = settings.quiet_start, settings.quiet_end
    if start is None or end is None or start == end:
        return False
    local = now.astimezone(settings.tz()).time().replace(tzinfo=None)
    start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end


def quiet_end_at(settings: UserSettings, now: datetime) -> datetime | None:
    """The UTC instant the current quiet period ends, or None when `now` is not in quiet hours."""
    if not in_quiet_hours(settings, now):
        return None
    assert settings.quiet_start is not None and settings.quiet_end is not None
    tz = settings.tz()
    local = now.astimezone(tz)
    day = local.date()
    if settings.quiet_start > settings.quiet_end and local.time().replace(tzinfo=None) >= settings.quiet_start:
        day += timedelta(days=1)  # the period crosses midnight and we are before it
    return local_to_utc(day, settings.quiet_end, tz)


def _snoozed(state: AlertState, now: datetime) -> bool:
    """Whether a snooze is in force; it ends exactly at `snooze_until`."""
    return state.snooze_until is not None and now < state.snooze_until


def _muted(settings: UserSettings, now: datetime) -> bool:
    """Whether alerts are switched off (`/alerts off`) or paused (`/pause`)."""
    return not settings.alerts_enabled or pause_active(settings, now)


def evaluate(
    settings: UserSettings,
    states: Mapping[str, AlertState],
    counters: Mapping[str, int],
    now: datetime,
    *,
    read_at: datetime | None = None,
    regrow_gap: timedelta = timedelta(0),
) -> AlertOutcome:
    """Advance every thresholded counter's state by one successful read and decide what to send or hold.

    Alerts stay calm (SPEC 14): an alerted counter that keeps growing alerts again only when
    the read began at least `regrow_gap` (the poll interval) after the read behind its last
    alert; until then its peak stays, so the next read after the gap alerts with the value
    it finds. Crossing the threshold from armed alerts at once. `read_at` is when the read
    began (default `now`).
    """
    read_at = read_at or now
    muted = _muted(settings, now)
    quiet = in_quiet_hours(settings, now)
    new_states: dict[str, AlertState] = {}
    send: list[Alert] = []
    held_now: list[str] = []
    for counter, threshold in settings.thresholds.items():
        value = int(counters.get(counter, 0))
        prev = states.get(counter) or AlertState(counter=counter)
        # A snooze that has run out is forgotten, so the stored state stays tidy.
        snooze = prev.snooze_until if _snoozed(prev, now) else None
        if muted or prev.baseline_needed:
            # Muted/paused: keep tracking but ask for a baseline, so unmuting or resuming
            # "only sets the state" (SPEC 7) and nothing from the muted time is replayed.
            new_states[counter] = AlertState(
                counter=counter,
                alerted=value >= threshold,
                peak=value,
                snooze_until=snooze,
                held=False,
                baseline_needed=muted,
            )
            continue
        if value < threshold:
            new_states[counter] = AlertState(counter=counter, peak=value, snooze_until=snooze, baseline_needed=False)
            continue
        if prev.alerted and value <= prev.peak:
            new_states[counter] = replace(prev, snooze_until=snooze)
            continue
        # Armed and crossing, or alerted and above the peak: an alert is due.
        fired = AlertState(
            counter=counter, alerted=True, peak=value, snooze_until=snooze, baseline_needed=False, alerted_at=prev.alerted_at
        )
        if snooze is not None:
            new_states[counter] = replace(fired, held=prev.held)  # dropped, but the level counts as seen
        elif quiet:
            new_states[counter] = replace(fired, held=True)
            if not prev.held:
                held_now.append(counter)
        elif prev.alerted and prev.alerted_at is not None and read_at - prev.alerted_at < regrow_gap - CALM_TOLERANCE:
            new_states[counter] = replace(prev, snooze_until=snooze)  # growing again too soon: calm, peak kept
        else:
            new_states[counter] = replace(fired, alerted_at=read_at)
            send.append(Alert(counter, value, threshold))
    return AlertOutcome(states=new_states, send=tuple(send), held_now=tuple(held_now))


def quiet_summary(
    settings: UserSettings,
    states: Mapping[str, AlertState],
    counters: Mapping[str, int],
    now: datetime,
) -> QuietSummary | None:
    """After quiet hours: the held counters still at or above threshold, with held cleared; None while quiet or nothing held."""
    held = [c for c in settings.thresholds if (s := states.get(c)) is not None and s.held]
    if not held or in_quiet_hours(settings, now):
        return None
    muted = _muted(settings, now)
    new_states = {c: s for c, s in states.items() if c in settings.thresholds}
    items: list[Alert] = []
    for counter in held:
        threshold = settings.thresholds[counter]
        value = int(counters.get(counter, 0))
        state = new_states[counter]
        if value < threshold:
            new_states[counter] = replace(state, alerted=False, peak=value, held=False)
            continue
        new_states[counter] = replace(state, alerted=True, peak=value, held=False)
        if not muted and not _snoozed(state, now):
            items.append(Alert(counter, value, threshold))
    return QuietSummary(items=tuple(items), states=new_states)


def summary_folds_into_digest(settings: UserSettings, now: datetime, window: timedelta = FOLD_WINDOW) -> bool:
    """Whether an end-of-quiet summary at `now` should ride in a scheduled digest due within `window` instead."""
    # "at or after now": a digest due this very instant still takes the summary.
    found = next_digest_due(settings, now - timedelta(microseconds=1))
    if found is None:
        return False
    day, due = found
    if settings.pause_until is not None and day < settings.pause_until:
        return False  # that digest will be skipped, so it cannot carry the summary
    return due - now <= window


def snooze_until(
    settings: UserSettings,
    now: datetime,
    kind: SnoozeKind,
    default_digest_time: time = time(9, 0),
) -> datetime:
    """When a snooze pressed at `now` ends: 60 minutes later, or the digest time on the next local day (UTC)."""
    if kind == "hour":
        return now + SNOOZE_HOUR
    if kind == "tomorrow":
        at = settings.digest_time if settings.digest_enabled else default_digest_time
        tomorrow = local_today(settings, now) + timedelta(days=1)
        return local_to_utc(tomorrow, at, settings.tz())
    raise ValueError(f"unknown snooze kind {kind!r}")
