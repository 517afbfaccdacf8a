"""Pure parsers for command arguments: each returns a frozen result or raises ParseError(key, params, example)."""

from __future__ import annotations

import re
import unicodedata
import zoneinfo
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, time, timedelta
from functools import cache
from types import MappingProxyType
from typing import Literal
from urllib.parse import urlsplit

from .model import ROLE_ALIASES

# Message keys (texts live in texts.py, en and ru). Format args are listed next to each key.
ERR_TOO_LONG = "input_too_long"  # max_chars
ERR_BAD_CHARACTERS = "input_bad_characters"  # (none): control, format or NUL characters
ERR_LINK_TARGET = "link_target_invalid"  # (none): neither ID, e-mail nor profile URL
ERR_LINK_ID_RANGE = "link_id_out_of_range"  # max
ERR_LINK_EMAIL = "link_email_invalid"  # (none)
ERR_LINK_URL = "link_url_invalid"  # (none): a URL, but not .../company/personal/user/<id>/
ERR_LINK_HOST = "link_url_wrong_host"  # hosts: the allowed hosts, comma-separated
ERR_DIGEST_ARGS = "digest_args_invalid"  # (none): unknown form
ERR_DIGEST_TIME = "digest_time_invalid"  # (none): not H:MM / HH:MM in 0:00-23:59
ERR_DIGEST_DAYS = "digest_days_invalid"  # (none): an unknown day word
ERR_DIGEST_DAYS_WRAP = "digest_days_wrap"  # start, end: canonical English day names, e.g. fri, mon
ERR_DIGEST_EMPTY = "digest_empty_invalid"  # (none): `/digest empty` needs on or off
ERR_DIGEST_TASKS = "digest_tasks_invalid"  # (none): `/digest tasks` needs on or off
ERR_DIGEST_TEAM = "digest_team_invalid"  # (none): `/digest team` needs on or off
ERR_ALERTS_ARGS = "alerts_args_invalid"  # (none): unknown form
ERR_ALERTS_COUNTER = "alerts_counter_unknown"  # (none)
ERR_ALERTS_THRESHOLD = "alerts_threshold_invalid"  # min, max
ERR_QUIET_FORMAT = "quiet_format_invalid"  # (none)
ERR_QUIET_EQUAL = "quiet_start_equals_end"  # (none)
ERR_TIMEZONE_UNKNOWN = "timezone_unknown"  # (none)
ERR_TIMEZONE_OFFSET = "timezone_offset_invalid"  # min, max ("-12:00", "+14:00"), minutes ("00, 15, 30, 45")
ERR_LANGUAGE = "language_unknown"  # choices ("en, ru")
ERR_PAUSE_FORMAT = "pause_format_invalid"  # (none)
ERR_PAUSE_DAYS = "pause_days_out_of_range"  # min, max
ERR_PAUSE_DATE = "pause_date_out_of_range"  # first, last: ISO dates (tomorrow, today + 365)
ERR_ROLE = "role_unknown"  # choices ("all, doing, helping, following, created")
ERR_PROJECT_TARGET = "project_target_invalid"  # (none): neither a project ID nor its URL
ERR_PROJECT_HOST = "project_url_wrong_host"  # hosts: the allowed hosts, comma-separated

# Every key above, for tests and for texts.py to check it has a text for each.
ALL_KEYS: tuple[str, ...] = tuple(v for k, v in dict(globals()).items() if k.startswith("ERR_"))

# Examples shown with an error; commands are the same in every language.
EXAMPLE_LINK = "/link 547"
EXAMPLE_DIGEST = "/digest 9:30 mon-fri"
EXAMPLE_ALERTS = "/alerts overdue 3"
EXAMPLE_QUIET = "/quiet 22:00-07:00"
EXAMPLE_TIMEZONE = "/timezone Europe/Moscow"
EXAMPLE_LANGUAGE = "/language ru"
EXAMPLE_PAUSE = "/pause 7"
EXAMPLE_COUNTERS = "/counters doing"
EXAMPLE_TASKS = "/tasks doing"
EXAMPLE_PROJECT = "/project 12"

MAX_INPUT_CHARS = 200  # all arguments of one command together; real input is far shorter
MAX_LINK_CHARS = 500
MAX_BITRIX_ID = 2**31 - 1
THRESHOLD_MIN, THRESHOLD_MAX = 1, 9999
PAUSE_MAX_DAYS = 365
OFFSET_MIN_MINUTES, OFFSET_MAX_MINUTES = -12 * 60, 14 * 60
OFFSET_MINUTES_ALLOWED = frozenset({0, 15, 30, 45})

# Dashes a phone keyboard may substitute for "-".
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2212"


class ParseError(Exception):
    """Invalid command input: a message key, its format args and a language-neutral example."""

    def __init__(self, key: str, example: str = "", **params: object) -> None:
        super().__init__(key)
        self.key = key
        self.example = example
        self.params: Mapping[str, object] = MappingProxyType(dict(params))

    def __repr__(self) -> str:
        return f"ParseError({self.key!r}, {self.example!r}, {dict(self.params)!r})"


@dataclass(frozen=True)
class Show:
    """No argument: show the current value and an example."""


SHOW = Show()


@dataclass(frozen=True)
class LinkTarget:
    """Who `/link` names: a Bitrix24 user ID (int) or a lower-cased e-mail (str)."""

    kind: Literal["id", "email"]
    value: int | str


@dataclass(frozen=True)
class Toggle:
    """`off` / `on` of a whole feature (`/digest`, `/alerts`, `/quiet off`)."""

    enabled: bool


@dataclass(frozen=True)
class DigestNow:
    """`/digest now`: send a digest at once, changing nothing."""


@dataclass(frozen=True)
class DigestEmpty:
    """`/digest empty on|off`: send or skip a digest whose counters are all 0."""

    send_empty: bool


@dataclass(frozen=True)
class DigestTeam:
    """`/digest team on|off`: end a head's digest with the team line, or not (SPEC 12)."""

    show_team: bool


@dataclass(frozen=True)
class DigestTasks:
    """`/digest tasks on|off`: list the most overdue tasks in the digest, or not."""

    show_tasks: bool


@dataclass(frozen=True)
class DigestSet:
    """`/digest H:MM [days]`: new time; days None means keep the current ones."""

    at: time
    days: frozenset[int] | None


@dataclass(frozen=True)
class AlertsSet:
    """`/alerts <counter> <threshold>`: counter is the Bitrix24 name."""

    counter: str
    threshold: int


@dataclass(frozen=True)
class AlertsRemove:
    """`/alerts <counter> off`: drop one threshold."""

    counter: str


@dataclass(frozen=True)
class QuietSet:
    """`/quiet HH:MM-HH:MM`: quiet hours [start, end), possibly across midnight."""

    start: time
    end: time


DigestCommand = Show | Toggle | DigestNow | DigestEmpty | DigestTasks | DigestTeam | DigestSet
AlertsCommand = Show | Toggle | AlertsSet | AlertsRemove
QuietCommand = Show | Toggle | QuietSet


def _check_text(text: str, example: str, max_chars: int = MAX_INPUT_CHARS) -> str:
    """Refuse overlong input and control/format characters; return the text stripped."""
    if not isinstance(text, str):
        raise ParseError(ERR_BAD_CHARACTERS, example)
    if len(text) > max_chars:
        raise ParseError(ERR_TOO_LONG, example, max_chars=max_chars)
    text = text.strip()
    if any(unicodedata.category(ch)[0] == "C" for ch in text if ch not in " \t\n"):
        raise ParseError(ERR_BAD_CHARACTERS, example)
    return text


def _check_args(args: Sequence[str], example: str) -> list[str]:
    """Validate the whole argument list; return its non-empty words, lower-cased."""
    if isinstance(args, str) or not all(isinstance(a, str) for a in args):
        raise ParseError(ERR_BAD_CHARACTERS, example)
    _check_text(" ".join(args), example)
    return [w for a in args if (w := a.strip().lower())]


def _norm_dashes(text: str) -> str:
    """Replace typographic dashes with `-`."""
    return "".join("-" if ch in _DASHES else ch for ch in text)


# ---------------------------------------------------------------- /link and /verify

_EMAIL = re.compile(
    r"(?P<local>[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9])",
    re.ASCII,
)
_PROFILE_PATH = re.compile(r"/company/personal/user/([0-9]{1,12})/?", re.ASCII)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _user_id(digits: str) -> int:
    """A Bitrix24 user ID from ASCII digits, in 1..2^31-1."""
    value = int(digits)
    if not 1 <= value <= MAX_BITRIX_ID:
        raise ParseError(ERR_LINK_ID_RANGE, EXAMPLE_LINK, max=MAX_BITRIX_ID)
    return value


def _host_matches(scheme: str, hostname: str, port: int | None, hosts: set[str]) -> bool:
    """Whether host[:port] is one of `hosts`, treating the scheme's default port as absent."""
    default = _DEFAULT_PORTS[scheme]
    candidates = {f"{hostname}:{port}"} if port is not None else {hostname, f"{hostname}:{default}"}
    if port == default:
        candidates.add(hostname)
    return bool(candidates & hosts)


def parse_link_target(text: str, portal_hosts: Collection[str]) -> LinkTarget:
    """Parse `/link <who>`: a Bitrix24 user ID, an e-mail, or a profile URL on one of `portal_hosts` (host[:port])."""
    text = _check_text(text, EXAMPLE_LINK, MAX_LINK_CHARS)
    if not text or any(ch.isspace() for ch in text):
        raise ParseError(ERR_LINK_TARGET, EXAMPLE_LINK)
    if re.fullmatch(r"[0-9]{1,12}", text, re.ASCII):
        return LinkTarget("id", _user_id(text))
    if re.fullmatch(r"[0-9]+", text, re.ASCII):
        raise ParseError(ERR_LINK_ID_RANGE, EXAMPLE_LINK, max=MAX_BITRIX_ID)
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):
        return LinkTarget("id", _profile_url_id(text, portal_hosts))
    if "@" in text:
        email = lowered
        if len(email) > 254 or not (m := _EMAIL.fullmatch(email)) or len(m.group("local")) > 64:
            raise ParseError(ERR_LINK_EMAIL, EXAMPLE_LINK)
        return LinkTarget("email", email)
    raise ParseError(ERR_LINK_TARGET, EXAMPLE_LINK)


def _profile_url_id(text: str, portal_hosts: Collection[str]) -> int:
    """The user ID from a profile URL on an allowed host."""
    hosts = {h.strip().lower().rstrip("/") for h in portal_hosts if h and h.strip()}
    try:
        parts = urlsplit(text)
        hostname, port = parts.hostname, parts.port
    except ValueError as err:  # bad IPv6 brackets, non-numeric or out-of-range port
        raise ParseError(ERR_LINK_URL, EXAMPLE_LINK) from err
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not hostname or "@" in parts.netloc:
        raise ParseError(ERR_LINK_URL, EXAMPLE_LINK)
    if not _host_matches(scheme, hostname.lower(), port, hosts):
        raise ParseError(ERR_LINK_HOST, EXAMPLE_LINK, hosts=", ".join(sorted(hosts)))
    m = _PROFILE_PATH.fullmatch(parts.path)
    if not m:
        raise ParseError(ERR_LINK_URL, EXAMPLE_LINK)
    return _user_id(m.group(1))


def parse_code(text: str) -> str | None:
    """A 6-digit one-time code with spaces and dashes ignored (`123 456`, `123-456`), else None."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    compact = "".join(ch for ch in text if ch not in _DASHES and ch not in " \u00a0\t")
    return compact if re.fullmatch(r"[0-9]{6}", compact, re.ASCII) else None


# ---------------------------------------------------------------- /digest

_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})", re.ASCII)

_DAY_NAMES: dict[str, int] = {}
for _i, _names in enumerate(
    (
        ("mon", "monday", "пн", "пон", "понедельник"),
        ("tue", "tuesday", "tues", "вт", "вторник"),
        ("wed", "wednesday", "ср", "среда"),
        ("thu", "thursday", "thur", "thurs", "чт", "четверг"),
        ("fri", "friday", "пт", "пятница"),
        ("sat", "saturday", "сб", "суббота"),
        ("sun", "sunday", "вс", "воскресенье"),
    )
):
    for _name in _names:
        _DAY_NAMES[_name] = _i
_DAY_SETS: dict[str, frozenset[int]] = {
    "daily": frozenset(range(7)),
    "everyday": frozenset(range(7)),
    "ежедневно": frozenset(range(7)),
    "weekdays": frozenset(range(5)),
    "будни": frozenset(range(5)),
    "weekends": frozenset({5, 6}),
    "weekend": frozenset({5, 6}),
    "выходные": frozenset({5, 6}),
}
_CANONICAL_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_time(text: str, error_key: str, example: str) -> time:
    """`H:MM` or `HH:MM` in 0:00-23:59, else ParseError(error_key)."""
    m = _TIME.fullmatch(text)
    if not m:
        raise ParseError(error_key, example)
    hour, minute = int(m.group(1)), int(m.group(2))
    if hour > 23 or minute > 59:
        raise ParseError(error_key, example)
    return time(hour, minute)


def parse_days(words: Sequence[str]) -> frozenset[int]:
    """Weekdays (0 = Monday) from `daily`/`weekdays`/`weekends` and comma lists or ranges of day names."""
    text = _norm_dashes(" ".join(words).lower())
    text = re.sub(r"\s*-\s*", "-", text)
    tokens = [t for t in re.split(r"[,;\s]+", text) if t]
    if not tokens:
        raise ParseError(ERR_DIGEST_DAYS, EXAMPLE_DIGEST)
    days: set[int] = set()
    for token in tokens:
        if token in _DAY_SETS:
            days |= _DAY_SETS[token]
            continue
        ends = token.split("-")
        if len(ends) == 1 and token in _DAY_NAMES:
            days.add(_DAY_NAMES[token])
        elif len(ends) == 2 and ends[0] in _DAY_NAMES and ends[1] in _DAY_NAMES:
            first, last = _DAY_NAMES[ends[0]], _DAY_NAMES[ends[1]]
            if first > last:
                raise ParseError(
                    ERR_DIGEST_DAYS_WRAP, EXAMPLE_DIGEST, start=_CANONICAL_DAYS[first], end=_CANONICAL_DAYS[last]
                )
            days.update(range(first, last + 1))
        else:
            raise ParseError(ERR_DIGEST_DAYS, EXAMPLE_DIGEST)
    return frozenset(days)


def parse_digest(args: Sequence[str]) -> DigestCommand:
    """Parse `/digest` arguments: show, off, on, now, empty|tasks|team on|off, or H:MM [days]."""
    words = _check_args(args, EXAMPLE_DIGEST)
    if not words:
        return SHOW
    head, rest = words[0], words[1:]
    if head in ("on", "off"):
        if rest:
            raise ParseError(ERR_DIGEST_ARGS, EXAMPLE_DIGEST)
        return Toggle(head == "on")
    if head == "now":
        if rest:
            raise ParseError(ERR_DIGEST_ARGS, EXAMPLE_DIGEST)
        return DigestNow()
    if head == "empty":
        if len(rest) != 1 or rest[0] not in ("on", "off"):
            raise ParseError(ERR_DIGEST_EMPTY, "/digest empty on")
        return DigestEmpty(rest[0] == "on")
    if head == "tasks":
        if len(rest) != 1 or rest[0] not in ("on", "off"):
            raise ParseError(ERR_DIGEST_TASKS, "/digest tasks off")
        return DigestTasks(rest[0] == "on")
    if head == "team":
        if len(rest) != 1 or rest[0] not in ("on", "off"):
            raise ParseError(ERR_DIGEST_TEAM, "/digest team off")
        return DigestTeam(rest[0] == "on")
    if not head[:1].isascii() or not head[:1].isdigit():
        raise ParseError(ERR_DIGEST_ARGS, EXAMPLE_DIGEST)
    at = parse_time(head, ERR_DIGEST_TIME, EXAMPLE_DIGEST)
    return DigestSet(at, parse_days(rest) if rest else None)


# ---------------------------------------------------------------- /alerts

_COUNTERS: dict[str, str] = {
    "overdue": "expired",
    "expired": "expired",
    "просрочено": "expired",
    "просроченные": "expired",
    "comments": "new_comments",
    "new_comments": "new_comments",
    "комментарии": "new_comments",
}


def parse_threshold(text: str) -> int:
    """A whole number 1-9999 in ASCII digits."""
    if not re.fullmatch(r"[0-9]{1,4}", text, re.ASCII) or not THRESHOLD_MIN <= int(text) <= THRESHOLD_MAX:
        raise ParseError(ERR_ALERTS_THRESHOLD, EXAMPLE_ALERTS, min=THRESHOLD_MIN, max=THRESHOLD_MAX)
    return int(text)


def parse_alerts(args: Sequence[str]) -> AlertsCommand:
    """Parse `/alerts` arguments: show, off, on, `<counter> <threshold>` or `<counter> off`."""
    words = _check_args(args, EXAMPLE_ALERTS)
    if not words:
        return SHOW
    if len(words) == 1 and words[0] in ("on", "off"):
        return Toggle(words[0] == "on")
    counter = _COUNTERS.get(words[0])
    if counter is None:
        raise ParseError(ERR_ALERTS_COUNTER, EXAMPLE_ALERTS)
    if len(words) != 2:
        raise ParseError(ERR_ALERTS_ARGS, EXAMPLE_ALERTS)
    if words[1] == "off":
        return AlertsRemove(counter)
    return AlertsSet(counter, parse_threshold(words[1]))


# ---------------------------------------------------------------- /quiet


def parse_quiet(args: Sequence[str]) -> QuietCommand:
    """Parse `/quiet` arguments: show, off, or HH:MM-HH:MM (may cross midnight; start != end)."""
    words = _check_args(args, EXAMPLE_QUIET)
    if not words:
        return SHOW
    if words == ["off"]:
        return Toggle(False)
    text = _norm_dashes("".join(words))
    parts = text.split("-")
    if len(parts) != 2:
        raise ParseError(ERR_QUIET_FORMAT, EXAMPLE_QUIET)
    start = parse_time(parts[0], ERR_QUIET_FORMAT, EXAMPLE_QUIET)
    end = parse_time(parts[1], ERR_QUIET_FORMAT, EXAMPLE_QUIET)
    if start == end:
        raise ParseError(ERR_QUIET_EQUAL, EXAMPLE_QUIET)
    return QuietSet(start, end)


# ---------------------------------------------------------------- /timezone

_OFFSET_INPUT = re.compile(r"(?:utc|gmt)(?:([+-])([0-9]{1,2})(?::?([0-9]{2}))?)?", re.ASCII)
_NOT_ZONES = frozenset({"factory", "localtime", "posixrules"})


@cache
def _zone_names() -> Mapping[str, str]:
    """Lower-cased IANA name -> canonical spelling, built once."""
    names = {n.lower(): n for n in zoneinfo.available_timezones() if n.lower() not in _NOT_ZONES}
    return MappingProxyType(names)


def format_offset(minutes: int) -> str:
    """A fixed offset as stored and shown: `UTC+03:00`, `UTC-05:30`, or `UTC` for zero."""
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{mins:02d}"


def parse_timezone(args: Sequence[str]) -> Show | str:
    """Parse `/timezone`: an IANA name in any case (canonical spelling back) or UTC±H[:MM] / GMT±H[:MM]."""
    words = _check_args(args, EXAMPLE_TIMEZONE)
    if not words:
        return SHOW
    text = _norm_dashes("".join(words))
    m = _OFFSET_INPUT.fullmatch(text)
    if m:
        if m.group(1) is None:
            return "UTC"
        hours, mins = int(m.group(2)), int(m.group(3) or 0)
        total = (hours * 60 + mins) * (1 if m.group(1) == "+" else -1)
        if mins not in OFFSET_MINUTES_ALLOWED or not OFFSET_MIN_MINUTES <= total <= OFFSET_MAX_MINUTES:
            raise ParseError(
                ERR_TIMEZONE_OFFSET, "/timezone UTC+03:00", min="-12:00", max="+14:00", minutes="00, 15, 30, 45"
            )
        return format_offset(total)
    canonical = _zone_names().get(text)
    if canonical is None:
        raise ParseError(ERR_TIMEZONE_UNKNOWN, EXAMPLE_TIMEZONE)
    return canonical


# ---------------------------------------------------------------- /language, /pause, /counters

_LANGUAGES = {"en": "en", "english": "en", "ru": "ru", "russian": "ru", "русский": "ru"}


def parse_language(args: Sequence[str]) -> Show | str:
    """Parse `/language`: `en` or `ru`, any case."""
    words = _check_args(args, EXAMPLE_LANGUAGE)
    if not words:
        return SHOW
    if len(words) != 1 or words[0] not in _LANGUAGES:
        raise ParseError(ERR_LANGUAGE, EXAMPLE_LANGUAGE, choices="en, ru")
    return _LANGUAGES[words[0]]


def parse_pause(args: Sequence[str], today: date) -> Show | date:
    """Parse `/pause`: N days (1-365) or YYYY-MM-DD (tomorrow to today + 365); returns the local return date."""
    words = _check_args(args, EXAMPLE_PAUSE)
    if not words:
        return SHOW
    if len(words) != 1:
        raise ParseError(ERR_PAUSE_FORMAT, EXAMPLE_PAUSE)
    word = words[0]
    if re.fullmatch(r"[0-9]{1,9}", word, re.ASCII):
        days = int(word)
        if not 1 <= days <= PAUSE_MAX_DAYS:
            raise ParseError(ERR_PAUSE_DAYS, EXAMPLE_PAUSE, min=1, max=PAUSE_MAX_DAYS)
        return today + timedelta(days=days)
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", word, re.ASCII):
        raise ParseError(ERR_PAUSE_FORMAT, EXAMPLE_PAUSE)
    try:
        back = date.fromisoformat(word)
    except ValueError as err:
        raise ParseError(ERR_PAUSE_FORMAT, EXAMPLE_PAUSE) from err
    first, last = today + timedelta(days=1), today + timedelta(days=PAUSE_MAX_DAYS)
    if not first <= back <= last:
        raise ParseError(ERR_PAUSE_DATE, EXAMPLE_PAUSE, first=first.isoformat(), last=last.isoformat())
    return back


_ROLE_WORDS: dict[str, str] = {
    **ROLE_ALIASES,
    "все": "view_all",
    "делаю": "view_role_responsible",
    "помогаю": "view_role_accomplice",
    "наблюдаю": "view_role_auditor",
    "поручил": "view_role_originator",
}


def parse_tasks_role(args: Sequence[str]) -> str:
    """Parse `/tasks [role]` (English or Russian role words); all roles when none is given."""
    words = _check_args(args, EXAMPLE_TASKS)
    if not words:
        return "view_all"
    if len(words) != 1 or words[0] not in _ROLE_WORDS:
        raise ParseError(ERR_ROLE, EXAMPLE_TASKS, choices="all, doing, helping, following, created")
    return _ROLE_WORDS[words[0]]


def parse_counters_role(args: Sequence[str]) -> str | None:
    """Parse `/counters [role]`: a Bitrix24 role name, or None for all five roles."""
    words = _check_args(args, EXAMPLE_COUNTERS)
    if not words:
        return None
    if len(words) != 1 or words[0] not in _ROLE_WORDS:
        raise ParseError(ERR_ROLE, EXAMPLE_COUNTERS, choices="all, doing, helping, following, created")
    return _ROLE_WORDS[words[0]]


# ---- /project (SPEC 13) --------------------------------------------------------------------------

_GROUP_PATH = re.compile(r"/workgroups/group/([0-9]{1,12})(?:/.*)?", re.ASCII)


@dataclass(frozen=True)
class ProjectView:
    """`/project` alone: the bound project's view."""


@dataclass(frozen=True)
class ProjectBind:
    """`/project <id | URL>`: offer to connect this workgroup."""

    group_id: int


@dataclass(frozen=True)
class ProjectOff:
    """`/project off`: end the chat's binding."""


@dataclass(frozen=True)
class ProjectSetting:
    """`/project digest|timezone|language ...`: one of the chat's digest settings; `args` go to that parser."""

    what: Literal["digest", "timezone", "language"]
    args: tuple[str, ...]


ProjectCommand = ProjectView | ProjectBind | ProjectOff | ProjectSetting


def _group_id(digits: str) -> int:
    value = int(digits)
    if not 1 <= value <= MAX_BITRIX_ID:
        raise ParseError(ERR_PROJECT_TARGET, EXAMPLE_PROJECT)
    return value


def parse_project(args: Sequence[str], portal_hosts: Collection[str]) -> ProjectCommand:
    """Parse `/project [<id> | <https://portal/workgroups/group/<id>/> | off | digest … | timezone … | language …]`."""
    if isinstance(args, str) or not all(isinstance(a, str) for a in args):
        raise ParseError(ERR_BAD_CHARACTERS, EXAMPLE_PROJECT)
    text = _check_text(" ".join(args), EXAMPLE_PROJECT, MAX_LINK_CHARS)
    words = text.split()
    if not words:
        return ProjectView()
    head = words[0].lower()
    if head in ("digest", "timezone", "language"):
        return ProjectSetting(head, tuple(words[1:]))  # type: ignore[arg-type]
    if len(words) != 1:
        raise ParseError(ERR_PROJECT_TARGET, EXAMPLE_PROJECT)
    if head == "off":
        return ProjectOff()
    if re.fullmatch(r"[0-9]{1,12}", head, re.ASCII):
        return ProjectBind(_group_id(head))
    if not head.startswith(("http://", "https://")):
        raise ParseError(ERR_PROJECT_TARGET, EXAMPLE_PROJECT)
    hosts = {h.strip().lower().rstrip("/") for h in portal_hosts if h and h.strip()}
    try:
        parts = urlsplit(words[0])
        hostname, port = parts.hostname, parts.port
    except ValueError as err:
        raise ParseError(ERR_PROJECT_TARGET, EXAMPLE_PROJECT) from err
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not hostname or "@" in parts.netloc:
        raise ParseError(ERR_PROJECT_TARGET, EXAMPLE_PROJECT)
    if not _host_matches(scheme, hostname.lower(), port, hosts):
        raise ParseError(ERR_PROJECT_HOST, EXAMPLE_PROJECT, hosts=", ".join(sorted(hosts)))
    m = _GROUP_PATH.fullmatch(parts.path)
    if not m:
        raise ParseError(ERR_PROJECT_TARGET, EXAMPLE_PROJECT)
    return ProjectBind(_group_id(m.group(1)))
