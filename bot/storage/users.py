"""SQL of the users table: who wrote to the bot, their chat, Telegram language and blocked flag."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bot.storage.core import Db, fetchall, fetchone, marks


@dataclass(frozen=True)
class User:
    """A Telegram user who wrote to the bot, with their link and language choice if any."""

    telegram_user_id: int
    chat_id: int
    language_code: str | None
    blocked: bool
    bitrix_user_id: int | None
    full_name: str | None
    language: str | None

    @property
    def linked(self) -> bool:
        """Whether the user has a Bitrix24 link."""
        return self.bitrix_user_id is not None


async def get(db: Db, telegram_user_id: int) -> User | None:
    """A user with their link and language choice, or None if they never wrote (or were forgotten)."""
    row = await fetchone(
        db,
        """SELECT u.telegram_user_id, u.chat_id, u.language_code, u.blocked,
                  l.bitrix_user_id, l.full_name, s.language
           FROM users u
           LEFT JOIN links l USING (telegram_user_id)
           LEFT JOIN user_settings s USING (telegram_user_id)
           WHERE u.telegram_user_id = ?""",
        (telegram_user_id,),
    )
    if row is None:
        return None
    return User(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6])


async def upsert_seen(db: Db, telegram_user_id: int, chat_id: int, language_code: str | None, now: float) -> bool:
    """Record that a user wrote (unblocking them); True if they had been blocked."""
    lang = language_code if language_code in ("en", "ru") else None
    row = await fetchone(db, "SELECT blocked FROM users WHERE telegram_user_id = ?", (telegram_user_id,))
    await db.execute(
        """INSERT INTO users (telegram_user_id, chat_id, language_code, blocked, created_at, last_seen_at)
           VALUES (?, ?, ?, 0, ?, ?)
           ON CONFLICT (telegram_user_id) DO UPDATE SET
               chat_id = excluded.chat_id, language_code = excluded.language_code,
               blocked = 0, last_seen_at = excluded.last_seen_at""",
        (telegram_user_id, chat_id, lang, now, now),
    )
    return bool(row and row[0])


async def set_blocked(db: Db, telegram_user_id: int, blocked: bool) -> bool:
    """Set the blocked flag; True if that changed it."""
    cur = await db.execute(
        "UPDATE users SET blocked = ? WHERE telegram_user_id = ? AND blocked != ?",
        (int(blocked), telegram_user_id, int(blocked)),
    )
    return cur.rowcount > 0


async def delete(db: Db, telegram_user_id: int) -> None:
    """Delete the user; every row about them goes with it (ON DELETE CASCADE), limit records stay."""
    await db.execute("DELETE FROM users WHERE telegram_user_id = ?", (telegram_user_id,))


async def reachable(db: Db, telegram_user_ids: Iterable[int]) -> dict[int, User]:
    """Which of these Telegram users have written to the bot and not blocked it."""
    ids = list(telegram_user_ids)
    if not ids:
        return {}
    rows = await fetchall(
        db, f"SELECT telegram_user_id FROM users WHERE blocked = 0 AND telegram_user_id IN ({marks(ids)})", ids
    )
    found = {}
    for (tid,) in rows:
        user = await get(db, tid)
        if user is not None:
            found[tid] = user
    return found
