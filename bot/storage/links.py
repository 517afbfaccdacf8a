"""SQL of the links table: one Bitrix24 user per Telegram user and back."""

from __future__ import annotations

from dataclasses import dataclass

from bot.storage.core import Db, fetchall, fetchall_in, fetchone


@dataclass(frozen=True)
class Link:
    """A linked user."""

    telegram_user_id: int
    chat_id: int
    bitrix_user_id: int
    full_name: str


async def holder(db: Db, bitrix_user_id: int) -> int | None:
    """The Telegram user linked to a Bitrix24 user."""
    row = await fetchone(db, "SELECT telegram_user_id FROM links WHERE bitrix_user_id = ?", (bitrix_user_id,))
    return row[0] if row else None


async def get(db: Db, telegram_user_id: int) -> Link | None:
    """A Telegram user's link."""
    row = await fetchone(
        db,
        """SELECT l.telegram_user_id, u.chat_id, l.bitrix_user_id, l.full_name
           FROM links l JOIN users u USING (telegram_user_id) WHERE l.telegram_user_id = ?""",
        (telegram_user_id,),
    )
    return Link(*row) if row else None


async def insert(db: Db, telegram_user_id: int, bitrix_user_id: int, full_name: str, now: float) -> None:
    """Create a link (the caller ended any previous one of either side)."""
    await db.execute(
        "INSERT INTO links (telegram_user_id, bitrix_user_id, full_name, linked_at, checked_at) VALUES (?, ?, ?, ?, ?)",
        (telegram_user_id, bitrix_user_id, full_name, now, now),
    )


async def delete(db: Db, telegram_user_id: int) -> bool:
    """Remove a user's link; True if there was one."""
    cur = await db.execute("DELETE FROM links WHERE telegram_user_id = ?", (telegram_user_id,))
    return cur.rowcount > 0


async def active(db: Db) -> list[Link]:
    """Every linked user who has not blocked the bot."""
    rows = await fetchall(
        db,
        """SELECT l.telegram_user_id, u.chat_id, l.bitrix_user_id, l.full_name
           FROM links l JOIN users u USING (telegram_user_id)
           WHERE u.blocked = 0 ORDER BY l.bitrix_user_id""",
    )
    return [Link(*r) for r in rows]


async def active_of(db: Db, bitrix_user_ids: list[int]) -> dict[int, Link]:
    """The links of these Bitrix24 users whose Telegram user has not blocked the bot, by Bitrix24 ID."""
    rows = await fetchall_in(
        db,
        """SELECT l.telegram_user_id, u.chat_id, l.bitrix_user_id, l.full_name
           FROM links l JOIN users u USING (telegram_user_id)
           WHERE u.blocked = 0 AND l.bitrix_user_id IN ({ids})""",
        bitrix_user_ids,
    )
    return {r[2]: Link(*r) for r in rows}


async def active_after(db: Db, after_telegram_user_id: int, limit: int) -> list[Link]:
    """The next `limit` links of users who have not blocked the bot, by telegram_user_id after the given one."""
    rows = await fetchall(
        db,
        """SELECT l.telegram_user_id, u.chat_id, l.bitrix_user_id, l.full_name
           FROM links l JOIN users u USING (telegram_user_id)
           WHERE u.blocked = 0 AND l.telegram_user_id > ? ORDER BY l.telegram_user_id LIMIT ?""",
        (after_telegram_user_id, limit),
    )
    return [Link(*r) for r in rows]


async def due_for_check(db: Db, checked_before: float, after_telegram_user_id: int = 0, limit: int = -1) -> list[Link]:
    """Links whose daily re-check is due (last checked before the cut-off), blocked users included.

    By telegram_user_id after the given one, at most `limit` (-1: all), so that the re-check can go in chunks.
    """
    rows = await fetchall(
        db,
        """SELECT l.telegram_user_id, u.chat_id, l.bitrix_user_id, l.full_name
           FROM links l JOIN users u USING (telegram_user_id)
           WHERE l.checked_at < ? AND l.telegram_user_id > ? ORDER BY l.telegram_user_id LIMIT ?""",
        (checked_before, after_telegram_user_id, limit),
    )
    return [Link(*r) for r in rows]


async def counts(db: Db) -> tuple[int, int]:
    """(linked users, linked users who have not blocked the bot)."""
    (row,) = await fetchall(
        db, "SELECT COUNT(*), COALESCE(SUM(u.blocked = 0), 0) FROM links l JOIN users u USING (telegram_user_id)"
    )
    return int(row[0]), int(row[1])


async def mark_checked(db: Db, telegram_user_ids: list[int], now: float) -> None:
    """Record the daily re-check of these links."""
    await db.executemany("UPDATE links SET checked_at = ? WHERE telegram_user_id = ?", [(now, t) for t in telegram_user_ids])
