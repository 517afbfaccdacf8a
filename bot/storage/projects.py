"""SQL of project chats (SPEC 13): bindings with their binder and digest settings, offers, the project digest log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from typing import Any

from bot.model import UserSettings
from bot.storage.core import Db, fetchall, fetchone


@dataclass(frozen=True)
class Binding:
    """A chat that follows a Bitrix24 workgroup."""

    chat_id: int
    message_thread_id: int | None
    group_id: int
    group_name: str
    binder_telegram_user_id: int
    binder_bitrix_user_id: int
    bound_at: float
    checked_at: float
    suspended: bool
    removed: bool
    archived: bool
    gone_since: float | None
    settings: UserSettings  # digest time, days, zone, empty-skip and language (pause/alerts unused)
    digest_saved_at: float

    @property
    def lang(self) -> str:
        """The chat's language."""
        return self.settings.language or "en"

    @property
    def live(self) -> bool:
        """Whether the chat gets the view and digests: not suspended, the bot still in the chat."""
        return not self.suspended and not self.removed


@dataclass(frozen=True)
class Offer:
    """A stored Connect/Cancel offer (lapses after 10 minutes)."""

    offer_id: int
    chat_id: int
    message_thread_id: int | None
    telegram_user_id: int
    bitrix_user_id: int
    group_id: int
    group_name: str
    expires_at: float


_COLUMNS = (
    "chat_id, message_thread_id, group_id, group_name, binder_telegram_user_id, binder_bitrix_user_id, bound_at, "
    "checked_at, suspended, removed, archived, gone_since, timezone, digest_enabled, digest_time, digest_days, "
    "digest_empty, language, digest_saved_at"
)


def _binding(row: Any) -> Binding:
    settings = UserSettings(
        timezone=row["timezone"],
        digest_enabled=bool(row["digest_enabled"]),
        digest_time=time.fromisoformat(row["digest_time"]),
        digest_days=frozenset(int(d) for d in row["digest_days"].split(",") if d != ""),
        digest_empty=bool(row["digest_empty"]),
        digest_tasks=False,
        alerts_enabled=False,
        thresholds={},
        language=row["language"],
    )
    return Binding(
        chat_id=row["chat_id"], message_thread_id=row["message_thread_id"], group_id=row["group_id"],
        group_name=row["group_name"], binder_telegram_user_id=row["binder_telegram_user_id"],
        binder_bitrix_user_id=row["binder_bitrix_user_id"], bound_at=row["bound_at"], checked_at=row["checked_at"],
        suspended=bool(row["suspended"]), removed=bool(row["removed"]), archived=bool(row["archived"]),
        gone_since=row["gone_since"], settings=settings, digest_saved_at=row["digest_saved_at"],
    )


async def get(db: Db, chat_id: int) -> Binding | None:
    """The binding of a chat."""
    row = await fetchone(db, f"SELECT {_COLUMNS} FROM project_bindings WHERE chat_id = ?", (chat_id,))
    return _binding(row) if row else None


async def all_bindings(db: Db) -> list[Binding]:
    """Every binding, by chat."""
    return [_binding(r) for r in await fetchall(db, f"SELECT {_COLUMNS} FROM project_bindings ORDER BY chat_id")]


async def by_binder(db: Db, telegram_user_id: int) -> list[Binding]:
    """The bindings a Telegram user made."""
    rows = await fetchall(
        db, f"SELECT {_COLUMNS} FROM project_bindings WHERE binder_telegram_user_id = ?", (telegram_user_id,)
    )
    return [_binding(r) for r in rows]


async def bind(
    db: Db,
    chat_id: int,
    message_thread_id: int | None,
    group_id: int,
    group_name: str,
    binder: tuple[int, int],
    settings: UserSettings,
    now: float,
) -> None:
    """Create or take over a chat's binding (a takeover keeps the digest settings and log of the same project)."""
    existing = await get(db, chat_id)
    if existing is not None and existing.group_id == group_id:
        await db.execute(
            "UPDATE project_bindings SET message_thread_id = ?, group_name = ?, binder_telegram_user_id = ?, "
            "binder_bitrix_user_id = ?, checked_at = ?, suspended = 0, removed = 0, gone_since = NULL WHERE chat_id = ?",
            (message_thread_id, group_name, binder[0], binder[1], now, chat_id),
        )
        return
    if existing is not None:
        await delete(db, chat_id)
    await db.execute(
        f"INSERT INTO project_bindings ({_COLUMNS}) VALUES ({', '.join('?' * 19)})",
        (
            chat_id, message_thread_id, group_id, group_name, binder[0], binder[1], now, now, 0, 0, 0, None,
            settings.timezone, int(settings.digest_enabled), settings.digest_time.strftime("%H:%M"),
            ",".join(str(d) for d in sorted(settings.digest_days)), int(settings.digest_empty),
            settings.language or "en", now,
        ),
    )


async def write_settings(db: Db, chat_id: int, settings: UserSettings, *, digest_saved_at: float) -> None:
    """Store a chat's digest settings."""
    await db.execute(
        "UPDATE project_bindings SET timezone = ?, digest_enabled = ?, digest_time = ?, digest_days = ?, "
        "digest_empty = ?, language = ?, digest_saved_at = ? WHERE chat_id = ?",
        (
            settings.timezone, int(settings.digest_enabled), settings.digest_time.strftime("%H:%M"),
            ",".join(str(d) for d in sorted(settings.digest_days)), int(settings.digest_empty),
            settings.language or "en", digest_saved_at, chat_id,
        ),
    )


async def set_flags(db: Db, chat_id: int, **flags: Any) -> None:
    """Set some of suspended, removed, archived, gone_since, checked_at, group_name."""
    allowed = {"suspended", "removed", "archived", "gone_since", "checked_at", "group_name"}
    if not flags or set(flags) - allowed:
        raise ValueError("unknown binding flag")
    assignments = ", ".join(f"{name} = ?" for name in flags)
    await db.execute(f"UPDATE project_bindings SET {assignments} WHERE chat_id = ?", (*flags.values(), chat_id))


async def delete(db: Db, chat_id: int) -> bool:
    """End a chat's binding (its digest log goes with it)."""
    cur = await db.execute("DELETE FROM project_bindings WHERE chat_id = ?", (chat_id,))
    return cur.rowcount > 0


async def move_chat(db: Db, old_chat_id: int, new_chat_id: int) -> bool:
    """A group became a supergroup: the binding (its log follows by cascade) and queued messages move."""
    cur = await db.execute("UPDATE project_bindings SET chat_id = ? WHERE chat_id = ?", (new_chat_id, old_chat_id))
    await db.execute(
        "UPDATE outbox SET chat_id = ? WHERE chat_id = ? AND status = 'queued'", (new_chat_id, old_chat_id)
    )
    await db.execute("UPDATE project_offers SET chat_id = ? WHERE chat_id = ?", (new_chat_id, old_chat_id))
    return cur.rowcount > 0


# ---- offers ------------------------------------------------------------------------------------


async def add_offer(
    db: Db, chat_id: int, message_thread_id: int | None, who: tuple[int, int], group: tuple[int, str], expires_at: float
) -> int:
    """Store an offer; its id (the only thing its buttons carry)."""
    cur = await db.execute(
        "INSERT INTO project_offers (chat_id, message_thread_id, telegram_user_id, bitrix_user_id, group_id, group_name, "
        "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (chat_id, message_thread_id, who[0], who[1], group[0], group[1], expires_at),
    )
    return int(cur.lastrowid or 0)


async def get_offer(db: Db, offer_id: int) -> Offer | None:
    """An offer by id."""
    row = await fetchone(
        db,
        "SELECT offer_id, chat_id, message_thread_id, telegram_user_id, bitrix_user_id, group_id, group_name, expires_at "
        "FROM project_offers WHERE offer_id = ?",
        (offer_id,),
    )
    return Offer(*row) if row else None


async def delete_offer(db: Db, offer_id: int) -> bool:
    """Remove an offer (used, cancelled or lapsed); False when it was already gone."""
    cur = await db.execute("DELETE FROM project_offers WHERE offer_id = ?", (offer_id,))
    return cur.rowcount > 0


async def delete_expired_offers(db: Db, now: float) -> int:
    """Retention: offers past their 10 minutes."""
    cur = await db.execute("DELETE FROM project_offers WHERE expires_at <= ?", (now,))
    return cur.rowcount


# ---- the project digest log ------------------------------------------------------------------


async def log_insert(
    db: Db, chat_id: int, local_date: date, due_at: float, status: str, *, overdue: int | None = None,
    outbox_id: int | None = None,
) -> bool:
    """Log a project digest (queued or skipped); False when that date is already logged."""
    cur = await db.execute(
        "INSERT OR IGNORE INTO project_digest_log (chat_id, local_date, due_at, status, overdue, outbox_id) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (chat_id, local_date.isoformat(), due_at, status, overdue, outbox_id),
    )
    return cur.rowcount > 0


async def last_date(db: Db, chat_id: int) -> date | None:
    """The newest local date logged for a chat."""
    row = await fetchone(db, "SELECT MAX(local_date) FROM project_digest_log WHERE chat_id = ?", (chat_id,))
    return date.fromisoformat(row[0]) if row and row[0] else None


async def last_sent_overdue(db: Db, chat_id: int) -> int | None:
    """The overdue count of the last project digest Telegram accepted."""
    row = await fetchone(
        db,
        "SELECT overdue FROM project_digest_log WHERE chat_id = ? AND status = 'sent' ORDER BY local_date DESC LIMIT 1",
        (chat_id,),
    )
    return int(row[0]) if row and row[0] is not None else None


async def set_log_outcome(db: Db, outbox_id: int, status: str) -> None:
    """The project digest's message was sent, failed or dropped."""
    await db.execute(
        "UPDATE project_digest_log SET status = ? WHERE outbox_id = ? AND status = 'queued'", (status, outbox_id)
    )


async def log_rows(db: Db, chat_id: int) -> list[dict[str, Any]]:
    """Every project digest log row of a chat (tests)."""
    rows = await fetchall(db, "SELECT * FROM project_digest_log WHERE chat_id = ? ORDER BY local_date", (chat_id,))
    return [dict(r) for r in rows]


async def delete_log_before(db: Db, local_date: date) -> int:
    """Retention: project digest log rows of dates before this one."""
    cur = await db.execute("DELETE FROM project_digest_log WHERE local_date < ?", (local_date.isoformat(),))
    return cur.rowcount
