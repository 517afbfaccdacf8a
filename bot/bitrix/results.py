"""Typed results of Bitrix24 calls and the helpers that parse raw answers into them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.errors import BitrixBadAnswerError, BitrixError

__all__ = [
    "NO_ACCESS",
    "BatchResult",
    "BitrixUser",
    "CounterResult",
    "Department",
    "Counters",
    "NoAccess",
    "Operating",
    "Task",
    "TaskPage",
]


@dataclass(frozen=True)
class Counters:
    """One user's counters for one role: every name Bitrix24 returned, as ints."""

    values: dict[str, int]

    def get(self, name: str, default: int = 0) -> int:
        """One counter's value, `default` when absent."""
        return self.values.get(name, default)


class NoAccess:
    """`result: []`: the user does not exist or the webhook may not read them."""

    _instance: NoAccess | None = None

    def __new__(cls) -> NoAccess:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_ACCESS"

    def __bool__(self) -> bool:
        return False


NO_ACCESS = NoAccess()
CounterResult = Counters | NoAccess | BitrixError


@dataclass(frozen=True)
class BitrixUser:
    """A Bitrix24 user as user.get / user.current return them."""

    bitrix_user_id: int
    first_name: str
    last_name: str
    email: str
    active: bool
    time_zone: str
    is_admin: bool | None
    departments: frozenset[int] = frozenset()  # UF_DEPARTMENT, when the answer had it

    @property
    def full_name(self) -> str:
        """First and last name, or the ID when both are empty."""
        name = " ".join(part for part in (self.first_name, self.last_name) if part)
        return name or f"#{self.bitrix_user_id}"


@dataclass(frozen=True)
class Department:
    """One department of the company structure (department.get)."""

    department_id: int
    name: str
    parent_id: int | None
    head_id: int | None


def department_from(raw: Any) -> Department | None:
    """A department.get item as a Department; None without a usable ID."""
    if not isinstance(raw, dict):
        return None
    department_id = to_int(raw.get("ID"))
    if department_id is None or department_id <= 0:
        return None
    parent = to_int(raw.get("PARENT"))
    head = to_int(raw.get("UF_HEAD"))
    return Department(
        department_id=department_id,
        name=str(raw.get("NAME") or ""),
        parent_id=parent if parent is not None and parent > 0 else None,
        head_id=head if head is not None and head > 0 else None,
    )


@dataclass(frozen=True)
class Workgroup:
    """A Bitrix24 workgroup (project) as sonet_group.get returns it (reference 4)."""

    group_id: int
    name: str
    opened: bool
    visible: bool
    closed: bool  # archived


def workgroup_from(raw: Any) -> Workgroup | None:
    """Build a Workgroup from a sonet_group.get item; None when it has no ID."""
    if not isinstance(raw, dict):
        return None
    group_id = to_int(raw.get("ID"))
    if group_id is None:
        return None
    return Workgroup(
        group_id=group_id,
        name=str(raw.get("NAME") or f"#{group_id}"),
        opened=flag(raw.get("OPENED", True)),
        visible=flag(raw.get("VISIBLE", True)),
        closed=flag(raw.get("CLOSED", False)),
    )


@dataclass(frozen=True)
class BatchResult:
    """What one `batch()` returned, keyed by command key."""

    results: dict[str, Any]
    errors: dict[str, BitrixError]
    times: dict[str, float]


@dataclass(frozen=True)
class Operating:
    """The last `time.operating` block seen for a method (cloud only)."""

    operating: float
    reset_at: float | None
    seen_at: float


@dataclass(frozen=True)
class Task:
    """One row of tasks.task.list, parsed defensively (None or empty where the portal sent nothing usable)."""

    task_id: int
    title: str
    deadline: datetime | None  # always aware when present
    status: int | None  # the real status, 1..7
    group_id: int | None
    group_name: str | None
    responsible_id: int | None
    created_by: int | None
    accomplices: frozenset[int]
    auditors: frozenset[int]
    # Set when the portal sent a deadline this parser cannot read: the row is shown without its
    # age, and it is no evidence of an ignored filter (a missing deadline is).
    deadline_unreadable: bool = False


@dataclass(frozen=True)
class TaskPage:
    """One page of tasks.task.list: up to 50 rows, the total (None with start -1) and the next start."""

    tasks: tuple[Task, ...]
    total: int | None
    next_start: int | None


# -- parsing helpers ---------------------------------------------------------------------


def as_map(value: Any) -> dict[str, Any]:
    """PHP sends an empty map as `[]` and a map with keys 0..n-1 as a list."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


def to_int(value: Any) -> int | None:
    """Coerce a counter value to int; None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def to_float(value: Any) -> float | None:
    """Coerce a number (or numeric string) to a finite float; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def flag(value: Any) -> bool:
    """Bitrix24 booleans: JSON true/false or "Y"/"N"."""
    if isinstance(value, str):
        return value.strip().upper() in ("Y", "1", "TRUE")
    return bool(value)


def user_from(raw: Any) -> BitrixUser | None:
    """Build a BitrixUser from a user.get / user.current item; None when it has no ID."""
    if not isinstance(raw, dict):
        return None
    bitrix_user_id = to_int(raw.get("ID"))
    if bitrix_user_id is None:
        return None
    admin = raw.get("ADMIN")
    return BitrixUser(
        bitrix_user_id=bitrix_user_id,
        first_name=str(raw.get("NAME") or ""),
        last_name=str(raw.get("LAST_NAME") or ""),
        email=str(raw.get("EMAIL") or ""),
        active=flag(raw.get("ACTIVE", True)),
        time_zone=str(raw.get("TIME_ZONE") or ""),
        is_admin=None if admin is None else flag(admin),
        departments=_ids(raw.get("UF_DEPARTMENT")),
    )


# Counters are stored as SQLite INTEGERs and compared with thresholds; a value no real
# portal sends (10**20, negative) must stop here, for this one user and role, rather than
# overflow further on for everyone.
COUNTER_MIN = 0
COUNTER_MAX = 2**31 - 1


def parse_counters(result: Any, method: str) -> CounterResult:
    """`[]` is NO_ACCESS; a map becomes Counters (odd items skipped, any value outside 0..2**31-1 fails)."""
    if isinstance(result, list):
        if not result:
            return NO_ACCESS
        return BitrixBadAnswerError("UNEXPECTED_RESULT", method=method)
    if not isinstance(result, dict):
        return BitrixBadAnswerError("UNEXPECTED_RESULT", method=method)
    values: dict[str, int] = {}
    for name, item in result.items():
        if not isinstance(item, dict):
            continue
        value = to_int(item.get("counter"))
        if value is None:
            continue
        if not COUNTER_MIN <= value <= COUNTER_MAX:
            return BitrixBadAnswerError("COUNTER_OUT_OF_RANGE", method=method)
        values[str(name)] = value
    return Counters(values)


def to_datetime(value: Any) -> datetime | None:
    """An ISO-8601 date with an offset as Bitrix24 sends it; None when absent, naive or not a date."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.utcoffset() is not None else None


def _ids(value: Any) -> frozenset[int]:
    """A list (or PHP-list map) of user IDs; items that are not IDs are dropped."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return frozenset(i for i in map(to_int, items) if i is not None and i > 0)


def _positive(value: Any) -> int | None:
    number = to_int(value)
    return number if number is not None and number > 0 else None


def task_from(raw: Any) -> Task | None:
    """Build a Task from a tasks.task.list row (camelCase keys, mostly strings); None without a usable ID."""
    if not isinstance(raw, dict):
        return None
    task_id = _positive(raw.get("id"))
    if task_id is None:
        return None
    title = raw.get("title")
    group = raw.get("group")
    group_id = _positive(raw.get("groupId"))
    group_name: str | None = None
    if isinstance(group, dict):  # `[]` when the task is in no group (reference 1.5)
        group_id = group_id if group_id is not None else _positive(group.get("id"))
        name = group.get("name")
        group_name = name if isinstance(name, str) and name else None
    deadline = to_datetime(raw.get("deadline"))
    return Task(
        task_id=task_id,
        title=title if isinstance(title, str) else "" if title is None else str(title),
        deadline=deadline,
        deadline_unreadable=deadline is None and bool(str(raw.get("deadline") or "").strip()),
        status=to_int(raw.get("status")),
        group_id=group_id,
        group_name=group_name if group_id is not None else None,
        responsible_id=_positive(raw.get("responsibleId")),
        created_by=_positive(raw.get("createdBy")),
        accomplices=_ids(raw.get("accomplices")),
        auditors=_ids(raw.get("auditors")),
    )


def parse_task_page(result: Any, total: Any, next_start: Any, method: str) -> TaskPage | BitrixError:
    """`{"tasks": [...]}` -> TaskPage (odd rows skipped); any other shape is a bad answer."""
    if isinstance(result, list) and not result:
        rows: Any = []
    elif isinstance(result, dict):
        rows = result.get("tasks", [])
        if isinstance(rows, dict):  # a PHP list with odd keys arrives as a map
            rows = list(rows.values())
    else:
        return BitrixBadAnswerError("UNEXPECTED_RESULT", method=method)
    if not isinstance(rows, list):
        return BitrixBadAnswerError("UNEXPECTED_RESULT", method=method)
    tasks = tuple(task for task in map(task_from, rows) if task is not None)
    total_int = to_int(total)
    next_int = to_int(next_start)
    return TaskPage(
        tasks=tasks,
        total=total_int if total_int is not None and total_int >= 0 else None,
        next_start=next_int if next_int is not None and next_int > 0 else None,
    )
