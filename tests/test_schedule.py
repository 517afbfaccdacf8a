"""Tests for bot.schedule: digest due times, DST, one per local date, catch-up window, pause."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from bot.model import ALL_DAYS, WORK_DAYS, UserSettings
from bot.schedule import (
    REASON_LATE,
    REASON_MISSED,
    REASON_ON_TIME,
    REASON_PAUSED,
    Due,
    due_digests,
    local_to_utc,
    local_today,
    next_digest_due,
    pause_active,
    read_ahead,
    read_lead_time,
)

UTC = UTC


def utc(*parts: int) -> datetime:
    """An aware UTC datetime."""
    return datetime(*parts, tzinfo=UTC)


def user(tz: str = "UTC", at: time = time(9, 0), days: frozenset[int] = WORK_DAYS, **kw: object) -> UserSettings:
    """Settings with a digest at `at` on `days` in `tz`."""
    return UserSettings(timezone=tz, digest_time=at, digest_days=days, **kw)  # type: ignore[arg-type]


# 2026-03-02 is a Monday.
@pytest.mark.parametrize(
    ("days", "after", "expected_date"),
    [
        (WORK_DAYS, utc(2026, 3, 2, 8, 0), date(2026, 3, 2)),
        (WORK_DAYS, utc(2026, 3, 2, 9, 0), date(2026, 3, 3)),  # strictly after
        (WORK_DAYS, utc(2026, 3, 6, 9, 0), date(2026, 3, 9)),  # Friday after -> Monday
        (frozenset({5, 6}), utc(2026, 3, 2, 8, 0), date(2026, 3, 7)),
        (frozenset({6}), utc(2026, 3, 8, 9, 0), date(2026, 3, 15)),
        (ALL_DAYS, utc(2026, 3, 7, 23, 59), date(2026, 3, 8)),
        (frozenset({0, 2, 4}), utc(2026, 3, 3, 0, 0), date(2026, 3, 4)),
    ],
)
def test_next_digest_follows_the_chosen_weekdays(days: frozenset[int], after: datetime, expected_date: date) -> None:
    found = next_digest_due(user(days=days), after)
    assert found is not None
    assert found[0] == expected_date
    assert found[1] == datetime.combine(expected_date, time(9, 0), tzinfo=UTC)


def test_no_digest_is_scheduled_when_digests_are_off_or_no_days_are_chosen() -> None:
    assert next_digest_due(user(digest_enabled=False), utc(2026, 3, 2)) is None
    assert next_digest_due(user(days=frozenset()), utc(2026, 3, 2)) is None
    assert due_digests(user(digest_enabled=False), utc(2026, 3, 2, 9), None, None) is None


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        next_digest_due(user(), datetime(2026, 3, 2, 8, 0))


@pytest.mark.parametrize(
    ("tz", "day", "at", "expected_utc"),
    [
        # Spring forward: 02:00 -> 03:00 local; 02:30 fires at 03:30 local.
        ("America/New_York", date(2026, 3, 8), time(2, 30), utc(2026, 3, 8, 7, 30)),
        ("America/New_York", date(2026, 3, 8), time(2, 0), utc(2026, 3, 8, 7, 0)),
        ("America/New_York", date(2026, 3, 8), time(3, 0), utc(2026, 3, 8, 7, 0)),
        ("America/New_York", date(2026, 3, 8), time(1, 59), utc(2026, 3, 8, 6, 59)),
        ("Europe/Berlin", date(2026, 3, 29), time(2, 30), utc(2026, 3, 29, 1, 30)),
        ("Europe/Berlin", date(2026, 3, 29), time(9, 0), utc(2026, 3, 29, 7, 0)),
        # Fall back: 01:00-02:00 (NY) and 02:00-03:00 (Berlin) happen twice: first occurrence.
        ("America/New_York", date(2026, 11, 1), time(1, 30), utc(2026, 11, 1, 5, 30)),
        ("Europe/Berlin", date(2026, 10, 25), time(2, 30), utc(2026, 10, 25, 0, 30)),
        # Fixed offsets.
        ("UTC+03:00", date(2026, 3, 2), time(9, 0), utc(2026, 3, 2, 6, 0)),
        ("UTC-05:30", date(2026, 3, 2), time(9, 0), utc(2026, 3, 2, 14, 30)),
        ("UTC+14:00", date(2026, 3, 2), time(9, 0), utc(2026, 3, 1, 19, 0)),
    ],
)
def test_local_time_maps_to_utc_with_gap_shift_and_first_occurrence(
    tz: str, day: date, at: time, expected_utc: datetime
) -> None:
    assert local_to_utc(day, at, UserSettings(timezone=tz).tz()) == expected_utc


def test_new_york_digest_in_the_spring_gap_fires_at_0330_edt() -> None:
    settings = user("America/New_York", time(2, 30), ALL_DAYS)
    found = next_digest_due(settings, utc(2026, 3, 8, 0, 0))
    assert found == (date(2026, 3, 8), utc(2026, 3, 8, 7, 30))
    local = found[1].astimezone(settings.tz())
    assert (local.hour, local.minute, local.tzname()) == (3, 30, "EDT")


def test_berlin_digest_in_the_spring_gap_fires_once_at_0330_cest() -> None:
    settings = user("Europe/Berlin", time(2, 30), ALL_DAYS)
    due = due_digests(settings, utc(2026, 3, 29, 1, 30), date(2026, 3, 28), None)
    assert due == Due(date(2026, 3, 29), utc(2026, 3, 29, 1, 30), skip=False, reason=REASON_ON_TIME)
    assert due_digests(settings, utc(2026, 3, 29, 1, 29), date(2026, 3, 28), None) is None


def test_fall_back_repeated_hour_fires_once_on_the_first_occurrence() -> None:
    settings = user("America/New_York", time(1, 30), ALL_DAYS)
    first = utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    second = utc(2026, 11, 1, 6, 30)  # 01:30 EST
    due = due_digests(settings, first, date(2026, 10, 31), None)
    assert due is not None and due.due_at_utc == first and not due.skip
    # After it was sent, the second 01:30 is the same local date: nothing.
    assert due_digests(settings, second, due.local_date, None) is None
    assert next_digest_due(settings, first) == (date(2026, 11, 2), utc(2026, 11, 2, 6, 30))


def test_at_most_one_digest_per_local_date() -> None:
    settings = user(days=ALL_DAYS)
    now = utc(2026, 3, 2, 9, 0)
    due = due_digests(settings, now, None, None)
    assert due is not None and due.local_date == date(2026, 3, 2)
    for minutes in (0, 1, 30, 119, 600):
        assert due_digests(settings, now + timedelta(minutes=minutes), date(2026, 3, 2), None) is None


def test_a_digest_is_due_exactly_at_its_time_and_not_a_second_before() -> None:
    settings = user()
    assert due_digests(settings, utc(2026, 3, 2, 8, 59, 59), date(2026, 2, 27), None) is None
    due = due_digests(settings, utc(2026, 3, 2, 9, 0), date(2026, 2, 27), None)
    assert due == Due(date(2026, 3, 2), utc(2026, 3, 2, 9, 0), skip=False, reason=REASON_ON_TIME)


def test_zone_change_west_after_the_digest_was_sent_does_not_send_a_second_for_that_date() -> None:
    sent = user("Europe/Berlin")
    due = due_digests(sent, utc(2026, 3, 2, 8, 0), None, None)
    assert due is not None and due.local_date == date(2026, 3, 2)
    moved = user("America/New_York")
    saved_at = utc(2026, 3, 2, 8, 30)  # 03:30 in New York: 09:00 there is still ahead
    assert due_digests(moved, utc(2026, 3, 2, 14, 0), due.local_date, saved_at) is None
    nxt = due_digests(moved, utc(2026, 3, 3, 14, 0), due.local_date, saved_at)
    assert nxt is not None and nxt.local_date == date(2026, 3, 3) and not nxt.skip


def test_zone_change_east_after_the_digest_was_sent_does_not_send_a_second_for_that_date() -> None:
    sent = user("America/New_York")
    due = due_digests(sent, utc(2026, 3, 2, 14, 0), None, None)
    assert due is not None and due.local_date == date(2026, 3, 2)
    moved = user("UTC+14:00")  # already 2026-03-03 04:10 there
    saved_at = utc(2026, 3, 2, 14, 10)
    assert due_digests(moved, utc(2026, 3, 2, 14, 11), due.local_date, saved_at) is None
    # Its next digest is the one on its own next date, at 09:00 local.
    nxt = due_digests(moved, utc(2026, 3, 2, 19, 0), due.local_date, saved_at)
    assert nxt is not None and nxt.local_date == date(2026, 3, 3)


def test_moving_the_time_later_on_the_same_day_after_the_digest_was_sent_sends_nothing() -> None:
    later = user(at=time(15, 0))
    assert due_digests(later, utc(2026, 3, 2, 15, 0), date(2026, 3, 2), utc(2026, 3, 2, 10, 0)) is None


def test_changing_to_a_time_already_past_when_saved_does_not_catch_up() -> None:
    earlier = user(at=time(8, 0))
    saved_at = utc(2026, 3, 2, 8, 30)
    assert due_digests(earlier, utc(2026, 3, 2, 8, 31), date(2026, 2, 27), saved_at) is None
    assert due_digests(earlier, utc(2026, 3, 2, 9, 0), date(2026, 2, 27), saved_at) is None
    nxt = due_digests(earlier, utc(2026, 3, 3, 8, 0), date(2026, 2, 27), saved_at)
    assert nxt is not None and nxt.local_date == date(2026, 3, 3)


def test_changing_to_a_time_still_ahead_today_sends_todays_digest() -> None:
    settings = user(at=time(10, 0))
    due = due_digests(settings, utc(2026, 3, 2, 10, 0), date(2026, 2, 27), utc(2026, 3, 2, 9, 30))
    assert due is not None and due.local_date == date(2026, 3, 2) and not due.skip


@pytest.mark.parametrize(
    ("late", "skip", "reason"),
    [
        (timedelta(0), False, REASON_ON_TIME),
        (timedelta(minutes=10), False, REASON_ON_TIME),
        (timedelta(minutes=10, seconds=1), False, REASON_LATE),
        (timedelta(hours=1, minutes=59), False, REASON_LATE),
        (timedelta(hours=2), False, REASON_LATE),
        (timedelta(hours=2, minutes=1), True, REASON_MISSED),
        (timedelta(hours=14), True, REASON_MISSED),
    ],
)
def test_downtime_sends_within_two_hours_and_skips_after(late: timedelta, skip: bool, reason: str) -> None:
    due = due_digests(user(), utc(2026, 3, 2, 9, 0) + late, date(2026, 2, 27), None)
    assert due == Due(date(2026, 3, 2), utc(2026, 3, 2, 9, 0), skip=skip, reason=reason)


def test_only_the_most_recent_occurrence_is_considered_after_a_long_downtime() -> None:
    due = due_digests(user(days=ALL_DAYS), utc(2026, 3, 5, 10, 0), date(2026, 3, 1), None)
    assert due == Due(date(2026, 3, 5), utc(2026, 3, 5, 9, 0), skip=False, reason=REASON_LATE)


def test_pause_days_are_skipped_and_the_return_day_is_sent() -> None:
    settings = user(days=ALL_DAYS, pause_until=date(2026, 3, 4))
    d2 = due_digests(settings, utc(2026, 3, 2, 9, 0), date(2026, 3, 1), None)
    assert d2 == Due(date(2026, 3, 2), utc(2026, 3, 2, 9, 0), skip=True, reason=REASON_PAUSED)
    d3 = due_digests(settings, utc(2026, 3, 3, 9, 0), date(2026, 3, 2), None)
    assert d3 is not None and d3.skip and d3.reason == REASON_PAUSED
    d4 = due_digests(settings, utc(2026, 3, 4, 9, 0), date(2026, 3, 3), None)
    assert d4 == Due(date(2026, 3, 4), utc(2026, 3, 4, 9, 0), skip=False, reason=REASON_ON_TIME)


@pytest.mark.parametrize(
    ("tz", "now", "today", "active"),
    [
        ("UTC", utc(2026, 3, 3, 23, 59), date(2026, 3, 3), True),
        ("UTC", utc(2026, 3, 4, 0, 0), date(2026, 3, 4), False),
        ("UTC+03:00", utc(2026, 3, 3, 21, 0), date(2026, 3, 4), False),  # midnight local
        ("UTC+03:00", utc(2026, 3, 3, 20, 59), date(2026, 3, 3), True),
        ("America/New_York", utc(2026, 3, 4, 4, 59), date(2026, 3, 3), True),
        ("America/New_York", utc(2026, 3, 4, 5, 0), date(2026, 3, 4), False),
    ],
)
def test_pause_ends_at_local_midnight_of_the_return_date(tz: str, now: datetime, today: date, active: bool) -> None:
    settings = UserSettings(timezone=tz, pause_until=date(2026, 3, 4))
    assert local_today(settings, now) == today
    assert pause_active(settings, now) is active


def test_no_pause_is_never_active() -> None:
    assert pause_active(UserSettings(), utc(2026, 3, 3)) is False


@pytest.mark.parametrize(
    ("tz", "due_now", "expected_date"),
    [
        ("UTC+03:00", utc(2026, 3, 2, 6, 0), date(2026, 3, 2)),
        ("UTC-12:00", utc(2026, 3, 2, 21, 0), date(2026, 3, 2)),
        ("UTC+14:00", utc(2026, 3, 1, 19, 0), date(2026, 3, 2)),
    ],
)
def test_fixed_offset_zones_fire_at_their_local_time(tz: str, due_now: datetime, expected_date: date) -> None:
    settings = user(tz)
    assert due_digests(settings, due_now - timedelta(seconds=1), date(2026, 2, 27), None) is None
    due = due_digests(settings, due_now, date(2026, 2, 27), None)
    assert due == Due(expected_date, due_now, skip=False, reason=REASON_ON_TIME)


@pytest.mark.parametrize(
    ("users", "seconds_per_batch", "lead"),
    [
        (0, 1.0, timedelta(0)),
        (1, 1.0, timedelta(seconds=1)),
        (10, 2.0, timedelta(seconds=2)),
        (11, 2.0, timedelta(seconds=4)),
        (10_000, 0.5, timedelta(seconds=500)),
        (10_000, 10.0, timedelta(minutes=30)),  # capped
    ],
)
def test_read_lead_time_is_one_batch_per_ten_users_capped_at_thirty_minutes(
    users: int, seconds_per_batch: float, lead: timedelta
) -> None:
    assert read_lead_time(users, seconds_per_batch) == lead


def test_read_ahead_starts_early_enough_but_never_more_than_thirty_minutes_early() -> None:
    due = utc(2026, 3, 2, 9, 0)
    assert read_ahead(due, due - timedelta(seconds=20), 100, 2.0)
    assert not read_ahead(due, due - timedelta(seconds=21), 100, 2.0)
    assert read_ahead(due, due - timedelta(minutes=30), 100_000, 60.0)
    assert not read_ahead(due, due - timedelta(minutes=30, seconds=1), 100_000, 60.0)
    assert read_ahead(due, due + timedelta(minutes=5), 1, 1.0)
