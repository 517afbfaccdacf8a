"""Typed results of Bitrix24 calls and the helpers that parse raw answers into them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bot.errors import BitrixBadAnswerError, BitrixError

__all__ = [
    "NO_ACCESS",
    "BatchResult",
    "BitrixUser",
    "CounterResult",
    "Counters",
    "NoAccess",
    "Operating",
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

    @property
    def full_name(self) -> str:
        """First and last name, or the ID when both are empty."""
        name = " ".join(part for part in (self.first_name, self.last_name) if part)
        return name or f"#{self.bitrix_user_id}"


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
