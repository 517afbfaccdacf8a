"""Pure: apply a parsed settings command to UserSettings, saying what else must change with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date

from bot.model import UserSettings
from bot.parsing import AlertsRemove, AlertsSet, DigestEmpty, DigestSet, DigestTasks, DigestTeam, QuietSet, Toggle


@dataclass(frozen=True)
class Change:
    """New settings; whether digest time/days/zone changed; alert counters to re-baseline ('*' = all)."""

    settings: UserSettings
    digest_changed: bool = False
    rebaseline: tuple[str, ...] = ()


Command = Callable[[UserSettings], Change]  # a parsed command, waiting for the settings as stored


def apply_digest(settings: UserSettings, command: DigestSet | DigestEmpty | DigestTasks | DigestTeam | Toggle) -> Change:
    """/digest H:MM [days], /digest on|off, /digest empty on|off, /digest tasks on|off, /digest team on|off."""
    if isinstance(command, DigestSet):
        days = command.days if command.days is not None else settings.digest_days
        return Change(replace(settings, digest_enabled=True, digest_time=command.at, digest_days=days), digest_changed=True)
    if isinstance(command, DigestEmpty):
        return Change(replace(settings, digest_empty=command.send_empty))
    if isinstance(command, DigestTasks):
        return Change(replace(settings, digest_tasks=command.show_tasks))
    if isinstance(command, DigestTeam):
        return Change(replace(settings, digest_team=command.show_team))
    return Change(replace(settings, digest_enabled=command.enabled), digest_changed=command.enabled)


def apply_alerts(settings: UserSettings, command: AlertsSet | AlertsRemove | Toggle) -> Change:
    """/alerts <counter> <threshold>, /alerts <counter> off, /alerts on|off (thresholds kept)."""
    if isinstance(command, AlertsSet):
        thresholds = {**settings.thresholds, command.counter: command.threshold}
        return Change(replace(settings, thresholds=thresholds), rebaseline=(command.counter,))
    if isinstance(command, AlertsRemove):
        thresholds = {k: v for k, v in settings.thresholds.items() if k != command.counter}
        return Change(replace(settings, thresholds=thresholds))
    return Change(replace(settings, alerts_enabled=command.enabled), rebaseline=("*",) if command.enabled else ())


def apply_quiet(settings: UserSettings, command: QuietSet | Toggle) -> Change:
    """/quiet HH:MM-HH:MM, /quiet off."""
    if isinstance(command, QuietSet):
        return Change(replace(settings, quiet_start=command.start, quiet_end=command.end))
    return Change(replace(settings, quiet_start=None, quiet_end=None))


def apply_timezone(settings: UserSettings, name: str) -> Change:
    """/timezone <zone>: moves the digest, so it counts as a digest change."""
    return Change(replace(settings, timezone=name), digest_changed=True)


def apply_language(settings: UserSettings, language: str) -> Change:
    """/language en|ru."""
    return Change(replace(settings, language=language))


def apply_pause(settings: UserSettings, until: date) -> Change:
    """/pause: no digests or alerts before `until` (local date)."""
    return Change(replace(settings, pause_until=until))


def apply_resume(settings: UserSettings) -> Change:
    """/resume: the pause ends now; the next poll only sets the alert state."""
    return Change(replace(settings, pause_until=None), rebaseline=("*",))


BUTTONS: dict[str, Command] = {
    "digest_on": lambda s: apply_digest(s, Toggle(True)),
    "digest_off": lambda s: apply_digest(s, Toggle(False)),
    "alerts_on": lambda s: apply_alerts(s, Toggle(True)),
    "alerts_off": lambda s: apply_alerts(s, Toggle(False)),
    "empty_on": lambda s: apply_digest(s, DigestEmpty(True)),
    "empty_off": lambda s: apply_digest(s, DigestEmpty(False)),
    "tasks_on": lambda s: apply_digest(s, DigestTasks(True)),
    "tasks_off": lambda s: apply_digest(s, DigestTasks(False)),
    "team_on": lambda s: apply_digest(s, DigestTeam(True)),
    "team_off": lambda s: apply_digest(s, DigestTeam(False)),
    "quiet_off": lambda s: apply_quiet(s, Toggle(False)),
    "resume": apply_resume,
    "lang_en": lambda s: apply_language(s, "en"),
    "lang_ru": lambda s: apply_language(s, "ru"),
}
