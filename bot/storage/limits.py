"""SQL of link codes and limit records (which outlive /forget, so they have no foreign key)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.storage.core import Db, fetchall, fetchone


@dataclass(frozen=True)
class PendingCode:
    """A code sent through Bitrix24, with what /link resolved."""

    bitrix_user_id: int
    code_hash: str
    expires_at: float
    tries_left: int
    full_name: str
    time_zone: str


async def count(db: Db, kind: str, subject: int, since: float) -> int:
    """How many limit events of a kind a subject had since a time."""
    (row,) = await fetchall(
        db, "SELECT COUNT(*) FROM limit_events WHERE kind = ? AND subject = ? AND at >= ?", (kind, subject, since)
    )
    return int(row[0])


async def add(db: Db, kind: str, subject: int, now: float) -> None:
    """Record one limit event."""
    await db.execute("INSERT INTO limit_events (kind, subject, at) VALUES (?, ?, ?)", (kind, subject, now))


async def save_code(db: Db, telegram_user_id: int, code: PendingCode) -> None:
    """Store a new code, replacing any previous one of this Telegram user."""
    await db.execute(
        "INSERT INTO link_codes (telegram_user_id, bitrix_user_id, code_hash, expires_at, tries_left, full_name, time_zone) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (telegram_user_id) DO UPDATE SET "
        "bitrix_user_id = excluded.bitrix_user_id, code_hash = excluded.code_hash, expires_at = excluded.expires_at, "
        "tries_left = excluded.tries_left, full_name = excluded.full_name, time_zone = excluded.time_zone",
        (telegram_user_id, code.bitrix_user_id, code.code_hash, code.expires_at, code.tries_left, code.full_name, code.time_zone),
    )


async def get_code(db: Db, telegram_user_id: int) -> PendingCode | None:
    """The pending code of a Telegram user."""
    row = await fetchone(
        db,
        "SELECT bitrix_user_id, code_hash, expires_at, tries_left, full_name, time_zone FROM link_codes WHERE telegram_user_id = ?",
        (telegram_user_id,),
    )
    return PendingCode(*row) if row else None


async def spend_try(db: Db, telegram_user_id: int) -> int:
    """Count one wrong try; returns the tries left (the code is deleted at zero)."""
    await db.execute("UPDATE link_codes SET tries_left = tries_left - 1 WHERE telegram_user_id = ?", (telegram_user_id,))
    row = await fetchone(db, "SELECT tries_left FROM link_codes WHERE telegram_user_id = ?", (telegram_user_id,))
    left = int(row[0]) if row else 0
    if left <= 0:
        await delete_code(db, telegram_user_id)
    return max(left, 0)


async def delete_code(db: Db, telegram_user_id: int) -> None:
    """Forget a pending code."""
    await db.execute("DELETE FROM link_codes WHERE telegram_user_id = ?", (telegram_user_id,))


async def expire(db: Db, now: float, events_before: float) -> tuple[int, int]:
    """Retention: delete expired codes and limit records too old to matter; how many of each."""
    codes = await db.execute("DELETE FROM link_codes WHERE expires_at < ?", (now,))
    events = await db.execute("DELETE FROM limit_events WHERE at < ?", (events_before,))
    return codes.rowcount, events.rowcount
