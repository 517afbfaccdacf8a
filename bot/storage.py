"""Storage over one aiosqlite connection: the only place with SQL (SPEC section 9)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, time
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

import aiosqlite

from bot.model import AlertState, UserSettings

log = logging.getLogger(__name__)


class StorageError(Exception):
    """The database cannot be used (not openable, corrupt, or newer than the code)."""


class DatabaseTooNew(StorageError):
    """The file was written by a newer version of the bot."""


def migrations() -> list[tuple[int, str, str]]:
    """The numbered SQL migrations shipped with the package, in order."""
    found = []
    for entry in resources.files("bot.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), name, entry.read_text(encoding="utf-8")))
    found.sort()
    for index, (number, name, _) in enumerate(found, start=1):
        if number != index:
            raise StorageError(f"migration {name} is out of sequence")
    return found


@dataclass(frozen=True)
class User:
    """A Telegram user who wrote to the bot, with their link if any."""

    telegram_user_id: int
    chat_id: int
    language_code: str | None
    blocked: bool
    bitrix_user_id: int | None
    full_name: str | None
    language: str | None


@dataclass(frozen=True)
class Link:
    """A linked, pollable user."""

    telegram_user_id: int
    chat_id: int
    bitrix_user_id: int
    full_name: str


@dataclass(frozen=True)
class OutboxRow:
    """A bulk message waiting to be sent."""

    id: int
    telegram_user_id: int
    chat_id: int
    kind: str
    text: str
    reply_markup: str | None
    attempts: int


@dataclass(frozen=True)
class OutgoingMessage:
    """A bulk message to queue together with the state change that caused it."""

    telegram_user_id: int
    chat_id: int
    kind: str
    text: str
    reply_markup: str | None = None
    not_before: float = 0.0


class Storage:
    """All persistent state of the bot; multi-statement transactions are serialised."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()

    # ---- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path) -> "Storage":
        """Open (creating with mode 0600) and migrate the database; refuse a newer one."""
        try:
            if str(path) != ":memory:":
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
                os.close(fd)
                os.chmod(path, 0o600)
            db = await aiosqlite.connect(str(path), isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise StorageError(f"cannot open the database {path}: {err}") from err
        storage = cls(db)
        try:
            db.row_factory = aiosqlite.Row
            await db.execute("PRAGMA busy_timeout = 5000")
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await storage._migrate(path)
        except BaseException as err:
            await db.close()
            if isinstance(err, StorageError):
                raise
            if isinstance(err, sqlite3.Error):
                raise StorageError(f"cannot use the database {path}: {err}") from err
            raise
        return storage

    async def _migrate(self, path: Path) -> None:
        steps = migrations()
        (row,) = await self._db.execute_fetchall("PRAGMA user_version")
        current = row[0]
        if current > len(steps):
            raise DatabaseTooNew(
                f"the database {path} has schema version {current}, but this bot knows only up to "
                f"{len(steps)}: run the newer bot version or restore a backup"
            )
        for number, name, sql in steps[current:]:
            try:
                # executescript commits any open transaction first, so BEGIN lives inside the script.
                await self._db.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")
            except sqlite3.Error as err:
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise StorageError(f"migration {name} failed: {err}") from err
            log.info("database migrated to version %d (%s)", number, name)

    async def close(self) -> None:
        """Close the connection (its worker thread would otherwise keep the process alive)."""
        await self._db.close()

    async def schema_version(self) -> int:
        """PRAGMA user_version."""
        (row,) = await self._db.execute_fetchall("PRAGMA user_version")
        return int(row[0])

    async def backup(self, target: Path) -> None:
        """Online copy of the database to another file."""
        async with aiosqlite.connect(str(target)) as dest:
            await self._db.backup(dest)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One serialised BEGIN IMMEDIATE … COMMIT; rolled back on any error."""
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            else:
                await self._db.execute("COMMIT")

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        return list(await self._db.execute_fetchall(sql, tuple(params)))

    async def _fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    async def table_counts(self) -> dict[str, int]:
        """Row count of every table (tests and /forget checks)."""
        names = [r[0] for r in await self._fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")]
        counts = {}
        for name in names:
            if name.startswith("sqlite_"):
                continue
            (row,) = await self._fetchall(f'SELECT COUNT(*) FROM "{name}"')
            counts[name] = int(row[0])
        return counts

    # ---- users -----------------------------------------------------------------------------

    async def touch_user(self, telegram_user_id: int, chat_id: int, language_code: str | None, now: float) -> bool:
        """Record that a user wrote to the bot; unblocks them. Returns True if they were blocked."""
        lang = language_code if language_code in ("en", "ru") else None
        async with self.transaction() as db:
            cur = await db.execute("SELECT blocked FROM users WHERE telegram_user_id = ?", (telegram_user_id,))
            row = await cur.fetchone()
            was_blocked = bool(row and row[0])
            await db.execute(
                """INSERT INTO users (telegram_user_id, chat_id, language_code, blocked, created_at, last_seen_at)
                   VALUES (?, ?, ?, 0, ?, ?)
                   ON CONFLICT (telegram_user_id) DO UPDATE SET
                       chat_id = excluded.chat_id, language_code = excluded.language_code,
                       blocked = 0, last_seen_at = excluded.last_seen_at""",
                (telegram_user_id, chat_id, lang, now, now),
            )
            if was_blocked:
                await db.execute(
                    "UPDATE alert_state SET baseline_needed = 1 WHERE telegram_user_id = ?", (telegram_user_id,)
                )
        return was_blocked

    async def set_blocked(self, telegram_user_id: int, blocked: bool) -> bool:
        """Mark a user as having blocked (or unblocked) the bot; True if that changed anything."""
        async with self.transaction() as db:
            cur = await db.execute(
                "UPDATE users SET blocked = ? WHERE telegram_user_id = ? AND blocked != ?",
                (int(blocked), telegram_user_id, int(blocked)),
            )
            changed = cur.rowcount > 0
            if changed and blocked:
                await db.execute(
                    "UPDATE outbox SET status = 'dropped', error = 'blocked' "
                    "WHERE telegram_user_id = ? AND status = 'queued'",
                    (telegram_user_id,),
                )
            if changed and not blocked:
                await db.execute(
                    "UPDATE alert_state SET baseline_needed = 1 WHERE telegram_user_id = ?", (telegram_user_id,)
                )
        return changed

    async def get_user(self, telegram_user_id: int) -> User | None:
        """A user with their link and language choice, or None if they never wrote."""
        row = await self._fetchone(
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
        return User(
            telegram_user_id=row[0],
            chat_id=row[1],
            language_code=row[2],
            blocked=bool(row[3]),
            bitrix_user_id=row[4],
            full_name=row[5],
            language=row[6],
        )

    async def known_user_ids(self, telegram_user_ids: Iterable[int]) -> set[int]:
        """Which of these Telegram users have written to the bot and not blocked it."""
        ids = list(telegram_user_ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = await self._fetchall(
            f"SELECT telegram_user_id FROM users WHERE blocked = 0 AND telegram_user_id IN ({marks})", ids
        )
        return {r[0] for r in rows}

    async def get_meta(self, key: str) -> str | None:
        """A small piece of bot-wide state."""
        row = await self._fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        """Store a small piece of bot-wide state."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # ---- outbox ------------------------------------------------------------------------------

    @staticmethod
    async def enqueue(db: aiosqlite.Connection, messages: Iterable[OutgoingMessage], now: float) -> None:
        """Queue bulk messages inside the caller's transaction (the one that changed the state)."""
        await db.executemany(
            "INSERT INTO outbox (telegram_user_id, chat_id, kind, text, reply_markup, not_before, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(m.telegram_user_id, m.chat_id, m.kind, m.text, m.reply_markup, max(m.not_before, now), now) for m in messages],
        )

    async def outbox_due(self, now: float, limit: int, exclude: set[int]) -> list[OutboxRow]:
        """Queued rows whose time has come, oldest first, for users who have not blocked the bot."""
        rows = await self._fetchall(
            """SELECT o.id, o.telegram_user_id, o.chat_id, o.kind, o.text, o.reply_markup, o.attempts
               FROM outbox o JOIN users u USING (telegram_user_id)
               WHERE o.status = 'queued' AND o.not_before <= ? AND u.blocked = 0
               ORDER BY o.not_before, o.id LIMIT ?""",
            (now, limit + len(exclude)),
        )
        return [OutboxRow(*r) for r in rows if r[0] not in exclude][:limit]

    async def outbox_mark_sending(self, row_id: int) -> None:
        """Committed right before the HTTP call: a crash after this never resends the row."""
        async with self.transaction() as db:
            await db.execute("UPDATE outbox SET status = 'sending', attempts = attempts + 1 WHERE id = ?", (row_id,))

    async def outbox_finish(self, row_id: int, status: str, now: float, error: str | None) -> None:
        """Record the final outcome of a row."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE outbox SET status = ?, finished_at = ?, error = ? WHERE id = ?", (status, now, error, row_id)
            )

    async def outbox_requeue(self, row_id: int, not_before: float) -> None:
        """Put back a row that certainly did not reach Telegram; later rows to its chat wait for it."""
        async with self.transaction() as db:
            await db.execute("UPDATE outbox SET status = 'queued', not_before = ? WHERE id = ?", (not_before, row_id))
            # Rows are taken by (not_before, id): without this the next message to the chat would
            # overtake the one being retried.
            await db.execute(
                "UPDATE outbox SET not_before = ? WHERE status = 'queued' AND id > ? AND not_before < ? "
                "AND chat_id = (SELECT chat_id FROM outbox WHERE id = ?)",
                (not_before, row_id, not_before, row_id),
            )

    async def outbox_fail_sending(self, now: float) -> list[tuple[int, int, str]]:
        """At start: rows left in 'sending' become failed (outcome unknown); returns them."""
        async with self.transaction() as db:
            cur = await db.execute("SELECT id, telegram_user_id, kind FROM outbox WHERE status = 'sending'")
            rows = [tuple(r) for r in await cur.fetchall()]
            await db.execute(
                "UPDATE outbox SET status = 'failed', finished_at = ?, error = 'outcome unknown after restart' "
                "WHERE status = 'sending'",
                (now,),
            )
        return rows  # type: ignore[return-value]

    async def outbox_drop_stale_alerts(self, created_before: float, now: float) -> int:
        """Drop queued alerts older than the cut-off: the next poll decides again."""
        async with self.transaction() as db:
            cur = await db.execute(
                "UPDATE outbox SET status = 'dropped', finished_at = ?, error = 'stale' "
                "WHERE status = 'queued' AND kind = 'alert' AND created_at < ?",
                (now, created_before),
            )
            return cur.rowcount

    async def outbox_queued_count(self) -> int:
        """How many rows wait to be sent."""
        (row,) = await self._fetchall("SELECT COUNT(*) FROM outbox WHERE status = 'queued'")
        return int(row[0])

    async def outbox_rows(self) -> list[dict[str, Any]]:
        """Every outbox row (tests, /stats)."""
        return [dict(r) for r in await self._fetchall("SELECT * FROM outbox ORDER BY id")]


def dump_settings(s: UserSettings) -> dict[str, Any]:
    """UserSettings as user_settings columns."""
    return {
        "timezone": s.timezone,
        "digest_enabled": int(s.digest_enabled),
        "digest_time": s.digest_time.strftime("%H:%M"),
        "digest_days": ",".join(str(d) for d in sorted(s.digest_days)),
        "digest_empty": int(s.digest_empty),
        "alerts_enabled": int(s.alerts_enabled),
        "quiet_start": s.quiet_start.strftime("%H:%M") if s.quiet_start else None,
        "quiet_end": s.quiet_end.strftime("%H:%M") if s.quiet_end else None,
        "pause_until": s.pause_until.isoformat() if s.pause_until else None,
        "language": s.language,
    }


def load_settings_row(row: Any, thresholds: dict[str, int]) -> UserSettings:
    """A user_settings row (plus thresholds) as UserSettings."""
    days = frozenset(int(d) for d in row["digest_days"].split(",") if d != "")
    return UserSettings(
        timezone=row["timezone"],
        digest_enabled=bool(row["digest_enabled"]),
        digest_time=time.fromisoformat(row["digest_time"]),
        digest_days=days,
        digest_empty=bool(row["digest_empty"]),
        alerts_enabled=bool(row["alerts_enabled"]),
        thresholds=thresholds,
        quiet_start=time.fromisoformat(row["quiet_start"]) if row["quiet_start"] else None,
        quiet_end=time.fromisoformat(row["quiet_end"]) if row["quiet_end"] else None,
        pause_until=date.fromisoformat(row["pause_until"]) if row["pause_until"] else None,
        language=row["language"],
    )


def dump_alert_state(telegram_user_id: int, s: AlertState) -> tuple[Any, ...]:
    """AlertState as an alert_state row."""
    return (
        telegram_user_id,
        s.counter,
        int(s.alerted),
        s.peak,
        s.snooze_until.timestamp() if s.snooze_until else None,
        int(s.held),
        int(s.baseline_needed),
    )


def to_json(value: Any) -> str:
    """Compact JSON for storage."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
