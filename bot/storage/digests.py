"""SQL of digest_log: one row per user and local date, and what became of its message."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from bot.storage.core import Db, fetchall, fetchone
from bot.storage.json import to_json


async def insert(
    db: Db,
    telegram_user_id: int,
    local_date: date,
    due_at: float,
    status: str,
    *,
    bitrix_user_id: int,
    counters: dict[str, dict[str, int]] | None = None,
    outbox_id: int | None = None,
) -> bool:
    """Log a digest (queued or skipped); False when that date is already logged."""
    cur = await db.execute(
        "INSERT OR IGNORE INTO digest_log (telegram_user_id, local_date, due_at, status, counters, bitrix_user_id, outbox_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (telegram_user_id, local_date.isoformat(), due_at, status, to_json(counters) if counters else None, bitrix_user_id, outbox_id),
    )
    return cur.rowcount > 0


async def last_date(db: Db, telegram_user_id: int) -> date | None:
    """The newest local date logged for a user (sent, queued or skipped)."""
    row = await fetchone(db, "SELECT MAX(local_date) FROM digest_log WHERE telegram_user_id = ?", (telegram_user_id,))
    return date.fromisoformat(row[0]) if row and row[0] else None


async def last_sent(db: Db, telegram_user_id: int) -> tuple[date, dict[str, dict[str, int]]] | None:
    """The local date and counters of the last scheduled digest Telegram accepted."""
    row = await fetchone(
        db,
        "SELECT local_date, counters FROM digest_log WHERE telegram_user_id = ? AND status = 'sent' "
        "ORDER BY local_date DESC LIMIT 1",
        (telegram_user_id,),
    )
    if row is None:
        return None
    return date.fromisoformat(row[0]), json.loads(row[1] or "{}")


async def set_outcome(db: Db, outbox_id: int, status: str) -> None:
    """The digest's message was sent, failed or dropped."""
    await db.execute("UPDATE digest_log SET status = ? WHERE outbox_id = ? AND status = 'queued'", (status, outbox_id))


async def withdraw(db: Db, outbox_id: int) -> None:
    """A queued digest was withdrawn before it went (its settings changed): the date is free again."""
    await db.execute("DELETE FROM digest_log WHERE outbox_id = ? AND status = 'queued'", (outbox_id,))


async def forget_other_accounts(db: Db, telegram_user_id: int, bitrix_user_id: int) -> None:
    """A link to a different Bitrix24 account starts a fresh digest log."""
    await db.execute(
        "DELETE FROM digest_log WHERE telegram_user_id = ? AND (bitrix_user_id IS NULL OR bitrix_user_id != ?)",
        (telegram_user_id, bitrix_user_id),
    )


async def rows(db: Db, telegram_user_id: int) -> list[dict[str, Any]]:
    """Every digest_log row of a user (tests, /stats)."""
    found = await fetchall(db, "SELECT * FROM digest_log WHERE telegram_user_id = ? ORDER BY local_date", (telegram_user_id,))
    return [dict(r) for r in found]


async def delete_before(db: Db, local_date: date) -> int:
    """Retention: drop log rows of dates before this one."""
    cur = await db.execute("DELETE FROM digest_log WHERE local_date < ?", (local_date.isoformat(),))
    return cur.rowcount
