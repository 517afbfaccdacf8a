"""SQL of alert_state and counter_snapshots: where each thresholded counter stands, the last reads."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bot.model import AlertState
from bot.storage.core import Db, fetchall_in, fetchone
from bot.storage.json import to_json


def dump(telegram_user_id: int, s: AlertState) -> tuple[Any, ...]:
    """AlertState as an alert_state row."""
    return (
        telegram_user_id,
        s.counter,
        int(s.alerted),
        s.peak,
        s.snooze_until.timestamp() if s.snooze_until else None,
        int(s.held),
        int(s.baseline_needed),
        s.alerted_at.timestamp() if s.alerted_at else None,
    )


def load(row: Any) -> AlertState:
    """An alert_state row as AlertState."""
    return AlertState(
        counter=row["counter"],
        alerted=bool(row["alerted"]),
        peak=row["peak"],
        snooze_until=datetime.fromtimestamp(row["snooze_until"], UTC) if row["snooze_until"] is not None else None,
        held=bool(row["held"]),
        baseline_needed=bool(row["baseline_needed"]),
        alerted_at=datetime.fromtimestamp(row["alerted_at"], UTC) if row["alerted_at"] is not None else None,
    )


async def states_of(db: Db, telegram_user_ids: list[int]) -> dict[int, dict[str, AlertState]]:
    """Alert states of these users."""
    out: dict[int, dict[str, AlertState]] = {}
    for r in await fetchall_in(db, "SELECT * FROM alert_state WHERE telegram_user_id IN ({ids})", telegram_user_ids):
        out.setdefault(r["telegram_user_id"], {})[r["counter"]] = load(r)
    return out


async def states(db: Db, telegram_user_id: int) -> dict[str, AlertState]:
    """One user's alert states."""
    return (await states_of(db, [telegram_user_id])).get(telegram_user_id, {})


async def replace_states(db: Db, telegram_user_id: int, new: dict[str, AlertState]) -> None:
    """A user's alert states become exactly `new` (the caller re-read them in this transaction)."""
    await db.execute("DELETE FROM alert_state WHERE telegram_user_id = ?", (telegram_user_id,))
    await db.executemany(
        "INSERT INTO alert_state (telegram_user_id, counter, alerted, peak, snooze_until, held, baseline_needed, alerted_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [dump(telegram_user_id, s) for s in new.values()],
    )


async def delete_states(db: Db, telegram_user_id: int) -> None:
    """Forget every alert state of a user."""
    await db.execute("DELETE FROM alert_state WHERE telegram_user_id = ?", (telegram_user_id,))


async def keep_only(db: Db, telegram_user_id: int, counters: Iterable[str]) -> None:
    """Delete the states of counters that no longer have a threshold."""
    keep = list(counters)
    await db.execute(
        f"DELETE FROM alert_state WHERE telegram_user_id = ? AND counter NOT IN ({','.join('?' * len(keep))})",
        (telegram_user_id, *keep),
    )


async def request_baseline(db: Db, telegram_user_id: int, counters: Iterable[str] | None = None) -> None:
    """The next successful read only sets these counters' state (all when None); held alerts are let go."""
    if counters is None:
        await db.execute("UPDATE alert_state SET baseline_needed = 1, held = 0 WHERE telegram_user_id = ?", (telegram_user_id,))
        return
    await db.executemany(
        "UPDATE alert_state SET baseline_needed = 1, held = 0 WHERE telegram_user_id = ? AND counter = ?",
        [(telegram_user_id, c) for c in counters],
    )


async def set_snooze(db: Db, telegram_user_id: int, counter: str, until: datetime) -> bool:
    """Snooze one counter (only the snooze column: a poll owns the others); a new snooze replaces the old."""
    cur = await db.execute(
        "UPDATE alert_state SET snooze_until = ? WHERE telegram_user_id = ? AND counter = ?",
        (until.timestamp(), telegram_user_id, counter),
    )
    return cur.rowcount > 0


async def save_snapshot(db: Db, telegram_user_id: int, view_all: dict[str, int] | None, read_at: float) -> None:
    """The view_all counters a refresh read (None for "no access")."""
    await db.execute(
        "INSERT INTO counter_snapshots (telegram_user_id, role, counters, read_at) VALUES (?, 'view_all', ?, ?) "
        "ON CONFLICT (telegram_user_id, role) DO UPDATE SET counters = excluded.counters, read_at = excluded.read_at",
        (telegram_user_id, to_json(view_all) if view_all is not None else None, read_at),
    )


async def snapshot(db: Db, telegram_user_id: int) -> tuple[dict[str, int] | None, float] | None:
    """The last view_all counters read for a user and when, or None."""
    row = await fetchone(
        db, "SELECT counters, read_at FROM counter_snapshots WHERE telegram_user_id = ? AND role = 'view_all'", (telegram_user_id,)
    )
    if row is None:
        return None
    return (json.loads(row[0]) if row[0] else None), row[1]


async def snapshots_of(db: Db, telegram_user_ids: list[int]) -> dict[int, dict[str, int] | None]:
    """The last view_all counters read for each of these users (None: read as "no access"; never read: absent)."""
    rows = await fetchall_in(
        db,
        "SELECT telegram_user_id, counters FROM counter_snapshots WHERE role = 'view_all' AND telegram_user_id IN ({ids})",
        telegram_user_ids,
    )
    return {r[0]: (json.loads(r[1]) if r[1] else None) for r in rows}


async def read_times(db: Db, telegram_user_ids: list[int]) -> dict[int, float]:
    """When each of these users' view_all was last read (users never read are absent)."""
    rows = await fetchall_in(
        db,
        "SELECT telegram_user_id, read_at FROM counter_snapshots WHERE role = 'view_all' AND telegram_user_id IN ({ids})",
        telegram_user_ids,
    )
    return {r[0]: r[1] for r in rows}


async def delete_snapshots(db: Db, telegram_user_id: int) -> None:
    """Forget the last reads of a user."""
    await db.execute("DELETE FROM counter_snapshots WHERE telegram_user_id = ?", (telegram_user_id,))
