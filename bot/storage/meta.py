"""SQL of bot-wide state: the meta key/value table and the admin-notice state."""

from __future__ import annotations

import json
from typing import Any

from bot.storage.core import Db, fetchall, fetchone
from bot.storage.json import to_json

NoticeStates = dict[str, tuple[float, float | None, bool]]  # cause -> (first seen, last told, active)


async def get(db: Db, key: str) -> str | None:
    """A small piece of bot-wide state."""
    row = await fetchone(db, "SELECT value FROM meta WHERE key = ?", (key,))
    return row[0] if row else None


async def put(db: Db, key: str, value: str) -> None:
    """Store a small piece of bot-wide state."""
    await db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value)
    )


async def get_json(db: Db, key: str) -> Any:
    """A JSON value stored under key, or None (also when it does not parse)."""
    raw = await get(db, key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def put_json(db: Db, key: str, value: Any) -> None:
    """Store a JSON value under key."""
    await put(db, key, to_json(value))


async def notice_states(db: Db) -> NoticeStates:
    """cause -> (first seen, last told, active)."""
    rows = await fetchall(db, "SELECT cause, first_seen_at, last_told_at, active FROM admin_notices")
    return {r[0]: (r[1], r[2], bool(r[3])) for r in rows}


async def replace_notice_states(db: Db, states: NoticeStates) -> None:
    """The admin-notice state becomes exactly `states`."""
    await db.execute("DELETE FROM admin_notices")
    await db.executemany(
        "INSERT INTO admin_notices (cause, first_seen_at, last_told_at, active) VALUES (?, ?, ?, ?)",
        [(c, first, told, int(active)) for c, (first, told, active) in states.items()],
    )
