"""Tests for bot.alerts: the threshold state machine, baseline, mute, pause, snooze and quiet hours."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest

from bot.alerts import (
    Alert,
    AlertOutcome,
    QuietSummary,
    evaluate,
    in_quiet_hours,
    quiet_end_at,
    quiet_summary,
    snooze_until,
    summary_folds_into_digest,
)
from bot.model import AlertState, UserSettings

UTC = UTC
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday, noon UTC


def utc(*parts: int) -> datetime:
    """An aware UTC datetime."""
    return datetime(*parts, tzinfo=UTC)


def armed(counter: str = "expired", peak: int = 0) -> AlertState:
    """A baselined, armed state."""
    return AlertState(counter=counter, alerted=False, peak=peak, baseline_needed=False)


def alerted(counter: str = "expired", peak: int = 1, **kw: object) -> AlertState:
    """A baselined, alerted state."""
    return AlertState(counter=counter, alerted=True, peak=peak, baseline_needed=False, **kw)  # type: ignore[arg-type]


def settings(**kw: object) -> UserSettings:
    """Default settings with overrides."""
    return UserSettings(**kw)  # type: ignore[arg-type]


def run(
    values: list[int], s: UserSettings | None = None, start: Mapping[str, AlertState] | None = None
) -> list[AlertOutcome]:
    """Feed successive `expired` values one poll apart; return every outcome."""
    s = s or settings(thresholds={"expired": 3})
    states: Mapping[str, AlertState] = start if start is not None else {"expired": armed()}
    outcomes = []
    for i, value in enumerate(values):
        out = evaluate(s, states, {"expired": value}, NOW + timedelta(minutes=5 * i))
        outcomes.append(out)
        states = out.states
    return outcomes


def sent_values(outcomes: list[AlertOutcome]) -> list[int | None]:
    """The value alerted at each poll, or None."""
    return [out.send[0].value if out.send else None for out in outcomes]


def test_crossing_the_threshold_sends_an_alert() -> None:
    out = evaluate(settings(thresholds={"expired": 3}), {"expired": armed()}, {"expired": 3}, NOW)
    assert out.send == (Alert("expired", 3, 3),)
    assert out.states["expired"] == alerted(peak=3, alerted_at=NOW)
    assert out.held_now == ()


def calm(values: list[int], seconds: list[float], gap: float = 300.0) -> list[int | None]:
    """Feed `expired` values read at NOW + seconds with the poll interval `gap`; the value alerted at each read."""
    s = settings(thresholds={"expired": 1})
    states: Mapping[str, AlertState] = {"expired": armed()}
    sent: list[int | None] = []
    for value, at in zip(values, seconds, strict=True):
        when = NOW + timedelta(seconds=at)
        out = evaluate(s, states, {"expired": value}, when, read_at=when, regrow_gap=timedelta(seconds=gap))
        sent.append(out.send[0].value if out.send else None)
        states = out.states
    return sent


def test_a_counter_growing_by_the_second_alerts_once_per_interval_with_the_value_at_send_time() -> None:
    # SPEC 14: ten comments in ten seconds are one alert; the next read a poll interval on shows the value then.
    assert calm(list(range(1, 11)) + [12], [float(i) for i in range(10)] + [300.0]) == [1] + [None] * 9 + [12]


def test_crossing_from_armed_alerts_at_once_even_right_after_an_alert() -> None:
    # 3 (alert) -> 0 (rearmed) -> 2 a second later: a new crossing is never held back.
    assert calm([3, 0, 2], [0.0, 1.0, 2.0]) == [3, None, 2]


def test_a_poll_read_one_interval_later_regrows_despite_scheduler_jitter() -> None:
    # Poll reads start one interval apart, give or take well under a second.
    assert calm([1, 2, 3], [0.0, 299.6, 599.3]) == [1, 2, 3]


def test_a_calm_read_keeps_the_peak_so_the_next_read_after_the_gap_alerts() -> None:
    assert calm([1, 5, 5, 5], [0.0, 10.0, 200.0, 310.0]) == [1, None, None, 5]


def test_the_same_value_again_stays_silent() -> None:
    assert sent_values(run([3, 3, 3])) == [3, None, None]


def test_growth_above_peak_sends_a_second_alert() -> None:
    assert sent_values(run([3, 5, 4, 5, 6])) == [3, 5, None, None, 6]


def test_a_drop_below_threshold_rearms_silently_and_a_new_crossing_alerts_again() -> None:
    outcomes = run([4, 2, 2, 3])
    assert sent_values(outcomes) == [4, None, None, 3]
    assert outcomes[1].states["expired"].alerted is False
    assert outcomes[3].states["expired"] == alerted(peak=3, alerted_at=NOW + timedelta(minutes=15))


@pytest.mark.parametrize(
    ("value", "fires"),
    [(0, False), (4, False), (5, True), (6, True)],
)
def test_threshold_edges(value: int, fires: bool) -> None:
    out = evaluate(settings(thresholds={"expired": 5}), {"expired": armed()}, {"expired": value}, NOW)
    assert bool(out.send) is fires
    assert out.states["expired"].alerted is fires


def test_a_missing_counter_counts_as_zero() -> None:
    out = evaluate(settings(thresholds={"expired": 1}), {"expired": alerted(peak=2)}, {}, NOW)
    assert out.send == ()
    assert out.states["expired"] == armed(peak=0)


def test_both_counters_are_judged_independently() -> None:
    s = settings(thresholds={"expired": 2, "new_comments": 10})
    states = {"expired": armed(), "new_comments": armed("new_comments")}
    out = evaluate(s, states, {"expired": 2, "new_comments": 9, "total": 11}, NOW)
    assert out.send == (Alert("expired", 2, 2),)
    assert set(out.states) == {"expired", "new_comments"}


def test_states_of_counters_without_a_threshold_are_dropped() -> None:
    out = evaluate(settings(thresholds={"expired": 1}), {"new_comments": alerted("new_comments", 9)}, {}, NOW)
    assert set(out.states) == {"expired"}


@pytest.mark.parametrize("value", [0, 2, 3, 50])
def test_baseline_after_link_resume_or_threshold_change_sends_nothing(value: int) -> None:
    s = settings(thresholds={"expired": 3})
    for start in ({}, {"expired": AlertState("expired")}, {"expired": replace(alerted(peak=1), baseline_needed=True)}):
        out = evaluate(s, start, {"expired": value}, NOW)
        assert out.send == () and out.held_now == ()
        state = out.states["expired"]
        assert state.baseline_needed is False
        assert state.alerted is (value >= 3)
        assert state.peak == value


def test_after_the_baseline_only_growth_alerts() -> None:
    outcomes = run([5, 5, 6], start={})
    assert sent_values(outcomes) == [None, None, 6]


def test_muted_alerts_send_nothing_and_request_a_baseline_for_after_unmute() -> None:
    muted = settings(thresholds={"expired": 3}, alerts_enabled=False)
    outcomes = run([1, 5, 9], s=muted)
    assert sent_values(outcomes) == [None, None, None]
    assert outcomes[-1].states["expired"].baseline_needed is True
    unmuted = replace(muted, alerts_enabled=True)
    first = evaluate(unmuted, outcomes[-1].states, {"expired": 9}, NOW + timedelta(hours=1))
    assert first.send == ()
    second = evaluate(unmuted, first.states, {"expired": 10}, NOW + timedelta(hours=2))
    assert second.send == (Alert("expired", 10, 3),)


def test_paused_alerts_send_nothing_until_local_midnight_of_the_return_date() -> None:
    paused = settings(thresholds={"expired": 3}, pause_until=date(2026, 3, 3), timezone="UTC+03:00")
    during = evaluate(paused, {"expired": armed()}, {"expired": 5}, utc(2026, 3, 2, 20, 59))
    assert during.send == () and during.states["expired"].baseline_needed is True
    # 21:00 UTC is 00:00 on 2026-03-03 in UTC+03:00: the pause is over; the first poll baselines.
    back = evaluate(paused, during.states, {"expired": 5}, utc(2026, 3, 2, 21, 0))
    assert back.send == () and back.states["expired"].baseline_needed is False
    grow = evaluate(paused, back.states, {"expired": 6}, utc(2026, 3, 2, 21, 5))
    assert grow.send == (Alert("expired", 6, 3),)


def test_muting_clears_a_held_alert() -> None:
    s = settings(thresholds={"expired": 1}, alerts_enabled=False)
    out = evaluate(s, {"expired": alerted(peak=2, held=True)}, {"expired": 2}, NOW)
    assert out.states["expired"].held is False
    assert quiet_summary(s, out.states, {"expired": 2}, NOW) is None


def test_a_snoozed_alert_is_dropped_but_the_level_counts_as_seen() -> None:
    s = settings(thresholds={"expired": 1})
    until = NOW + timedelta(hours=1)
    out = evaluate(s, {"expired": replace(armed(), snooze_until=until)}, {"expired": 4}, NOW)
    assert out.send == ()
    assert out.states["expired"] == alerted(peak=4, snooze_until=until)
    # The snooze ends exactly at `until`: the same level stays silent, growth alerts.
    same = evaluate(s, out.states, {"expired": 4}, until)
    assert same.send == () and same.states["expired"].snooze_until is None
    grow = evaluate(s, out.states, {"expired": 5}, until)
    assert grow.send == (Alert("expired", 5, 1),)


def test_a_snooze_is_still_in_force_one_second_before_it_ends() -> None:
    s = settings(thresholds={"expired": 1})
    until = NOW + timedelta(hours=1)
    out = evaluate(s, {"expired": replace(alerted(peak=4), snooze_until=until)}, {"expired": 9}, until - timedelta(seconds=1))
    assert out.send == ()
    assert out.states["expired"].snooze_until == until


# Quiet hours 22:00-07:00 in Europe/Berlin (UTC+1 in winter).
QUIET = settings(thresholds={"expired": 2, "new_comments": 5}, timezone="Europe/Berlin", quiet_start=time(22, 0), quiet_end=time(7, 0))


@pytest.mark.parametrize(
    ("now", "quiet"),
    [
        (utc(2026, 1, 12, 20, 59), False),  # 21:59 local
        (utc(2026, 1, 12, 21, 0), True),  # 22:00 local: start is inclusive
        (utc(2026, 1, 12, 23, 30), True),  # 00:30 local, after midnight
        (utc(2026, 1, 13, 5, 59, 59), True),  # 06:59:59 local
        (utc(2026, 1, 13, 6, 0), False),  # 07:00 local: end is exclusive
        (utc(2026, 1, 13, 11, 0), False),
    ],
)
def test_quiet_hours_across_midnight_include_start_and_exclude_end(now: datetime, quiet: bool) -> None:
    assert in_quiet_hours(QUIET, now) is quiet


@pytest.mark.parametrize(
    ("start", "end", "local", "quiet"),
    [
        (time(13, 0), time(14, 0), time(12, 59), False),
        (time(13, 0), time(14, 0), time(13, 0), True),
        (time(13, 0), time(14, 0), time(14, 0), False),
        (None, None, time(13, 0), False),
        (time(13, 0), None, time(13, 0), False),
    ],
)
def test_quiet_hours_within_one_day(start: time | None, end: time | None, local: time, quiet: bool) -> None:
    s = settings(quiet_start=start, quiet_end=end)
    assert in_quiet_hours(s, datetime.combine(date(2026, 1, 12), local, tzinfo=UTC)) is quiet


def test_quiet_end_is_the_next_local_end_time() -> None:
    assert quiet_end_at(QUIET, utc(2026, 1, 12, 21, 0)) == utc(2026, 1, 13, 6, 0)
    assert quiet_end_at(QUIET, utc(2026, 1, 13, 1, 0)) == utc(2026, 1, 13, 6, 0)
    assert quiet_end_at(QUIET, utc(2026, 1, 13, 6, 0)) is None


def test_quiet_end_across_a_dst_change_uses_the_new_offset() -> None:
    # Night of 2026-03-28/29 in Berlin: 07:00 on the 29th is CEST (UTC+2).
    assert quiet_end_at(QUIET, utc(2026, 3, 28, 22, 0)) == utc(2026, 3, 29, 5, 0)


def test_alerts_in_quiet_hours_are_held_then_summarised_at_the_end() -> None:
    night = utc(2026, 1, 12, 22, 0)
    states = {"expired": armed(), "new_comments": armed("new_comments")}
    first = evaluate(QUIET, states, {"expired": 3, "new_comments": 6}, night)
    assert first.send == ()
    assert first.held_now == ("expired", "new_comments")
    assert first.states["expired"] == alerted(peak=3, held=True)
    grow = evaluate(QUIET, first.states, {"expired": 4, "new_comments": 6}, night + timedelta(hours=1))
    assert grow.send == () and grow.held_now == ()
    assert grow.states["expired"].peak == 4 and grow.states["expired"].held
    # Still quiet: no summary yet.
    counters = {"expired": 7, "new_comments": 1}
    assert quiet_summary(QUIET, grow.states, counters, utc(2026, 1, 13, 5, 59)) is None
    summary = quiet_summary(QUIET, grow.states, counters, utc(2026, 1, 13, 6, 0))
    assert summary == QuietSummary(
        items=(Alert("expired", 7, 2),),
        states={"expired": alerted(peak=7), "new_comments": armed("new_comments", peak=1)},
    )
    # The peak moved to the summarised value: the next poll at the same level is silent.
    after = evaluate(QUIET, summary.states, counters, utc(2026, 1, 13, 6, 5))
    assert after.send == ()


def test_no_summary_when_nothing_is_held() -> None:
    assert quiet_summary(QUIET, {"expired": alerted(peak=3)}, {"expired": 3}, utc(2026, 1, 13, 6, 0)) is None


def test_a_counter_that_drops_below_threshold_during_quiet_hours_is_not_held_any_more() -> None:
    night = utc(2026, 1, 12, 22, 0)
    held = evaluate(QUIET, {"expired": armed()}, {"expired": 3}, night)
    dropped = evaluate(QUIET, held.states, {"expired": 0}, night + timedelta(hours=1))
    assert dropped.states["expired"] == armed(peak=0)
    assert quiet_summary(QUIET, dropped.states, {"expired": 5}, utc(2026, 1, 13, 6, 0)) is None


def test_a_snoozed_counter_is_dropped_in_quiet_hours_rather_than_held() -> None:
    night = utc(2026, 1, 12, 22, 0)
    state = replace(armed(), snooze_until=night + timedelta(hours=1))
    out = evaluate(QUIET, {"expired": state}, {"expired": 3}, night)
    assert out.held_now == () and out.states["expired"].held is False


def test_summary_while_paused_clears_held_but_lists_nothing() -> None:
    s = replace(QUIET, pause_until=date(2026, 1, 20))
    summary = quiet_summary(s, {"expired": alerted(peak=3, held=True)}, {"expired": 3}, utc(2026, 1, 13, 6, 0))
    assert summary is not None and summary.items == ()
    assert summary.states["expired"].held is False


def test_snooze_for_an_hour_is_sixty_minutes() -> None:
    assert snooze_until(settings(), NOW, "hour") == NOW + timedelta(minutes=60)


@pytest.mark.parametrize(
    ("s", "now", "expected"),
    [
        # Digest 09:00 in Berlin (UTC+1): tomorrow 09:00 local.
        (settings(timezone="Europe/Berlin"), utc(2026, 1, 12, 12, 0), utc(2026, 1, 13, 8, 0)),
        # Just before local midnight: "tomorrow" is the next local date, not +24 h.
        (settings(timezone="Europe/Berlin"), utc(2026, 1, 12, 22, 59), utc(2026, 1, 13, 8, 0)),
        (settings(timezone="Europe/Berlin"), utc(2026, 1, 12, 23, 0), utc(2026, 1, 14, 8, 0)),
        # Digest time 07:30 is used even on a day without a digest (Saturday).
        (settings(timezone="UTC", digest_time=time(7, 30)), utc(2026, 1, 16, 12, 0), utc(2026, 1, 17, 7, 30)),
        # Digests off: the default digest time, not the stored one.
        (settings(digest_enabled=False, digest_time=time(7, 30)), utc(2026, 1, 12, 12, 0), utc(2026, 1, 13, 10, 0)),
        # Across spring-forward in Berlin: 09:00 CEST is 07:00 UTC.
        (settings(timezone="Europe/Berlin"), utc(2026, 3, 28, 12, 0), utc(2026, 3, 29, 7, 0)),
        # Across fall-back in New York: 09:00 EST is 14:00 UTC.
        (settings(timezone="America/New_York"), utc(2026, 10, 31, 16, 0), utc(2026, 11, 1, 14, 0)),
        # A digest time inside the New York spring gap fires shifted by the gap.
        (settings(timezone="America/New_York", digest_time=time(2, 30)), utc(2026, 3, 7, 16, 0), utc(2026, 3, 8, 7, 30)),
        # Fixed offsets.
        (settings(timezone="UTC+05:30"), utc(2026, 1, 12, 18, 0), utc(2026, 1, 13, 3, 30)),  # 23:30 local
        (settings(timezone="UTC+05:30"), utc(2026, 1, 12, 20, 0), utc(2026, 1, 14, 3, 30)),  # 01:30 local
    ],
)
def test_snooze_until_tomorrow_is_the_digest_time_on_the_next_local_day(
    s: UserSettings, now: datetime, expected: datetime
) -> None:
    assert snooze_until(s, now, "tomorrow", default_digest_time=time(10, 0)) == expected


def test_an_unknown_snooze_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        snooze_until(settings(), NOW, "week")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("digest_at", "s_kw", "folds"),
    [
        (time(7, 0), {}, True),  # due the very minute quiet hours end
        (time(7, 30), {}, True),
        (time(7, 31), {}, False),
        (time(6, 59), {}, False),  # already past
        (time(7, 15), {"digest_enabled": False}, False),
        (time(7, 15), {"digest_days": frozenset({5, 6})}, False),  # Tuesday: no digest
        (time(7, 15), {"pause_until": date(2026, 1, 14)}, False),  # that digest is skipped
    ],
)
def test_a_summary_folds_into_a_digest_due_within_thirty_minutes(
    digest_at: time, s_kw: dict[str, object], folds: bool
) -> None:
    s = replace(QUIET, digest_time=digest_at, **s_kw)  # type: ignore[arg-type]
    end = utc(2026, 1, 13, 6, 0)  # Tuesday 07:00 in Berlin
    assert summary_folds_into_digest(s, end) is folds
