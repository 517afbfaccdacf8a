"""Storage over one aiosqlite connection: the only place with SQL (SPEC section 9)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
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


@dataclass(frozen=True)
class Audience:
    """What the scheduled work needs about one linked, unblocked user."""

    link: Link
    language_code: str | None
    settings: UserSettings
    states: dict[str, AlertState]
    last_digest_date: date | None
    digest_saved_at: float


@dataclass(frozen=True)
class PollUpdate:
    """One user's result of a poll: new alert states and the view_all counters read."""

    telegram_user_id: int
    states: dict[str, AlertState]
    view_all: dict[str, int] | None


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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One serialised BEGIN IMMEDIATE … COMMIT; rolled back on any error."""
        async with self._lock:
            try:
                await self._to_the_end("BEGIN IMMEDIATE")
            except asyncio.CancelledError:
                if self._db.in_transaction:
                    await self._to_the_end("ROLLBACK")
                raise
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    await self._to_the_end("ROLLBACK")
                raise
            else:
                await self._to_the_end("COMMIT")

    async def _to_the_end(self, sql: str) -> None:
        """Run a transaction-control statement to completion even if our caller is cancelled meanwhile.

        The statement runs on aiosqlite's thread whatever happens to the awaiting task; a cancelled
        BEGIN that nobody rolls back would leave the shared connection inside a transaction.
        """
        task = asyncio.ensure_future(self._db.execute(sql))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

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

    # ---- links and settings ------------------------------------------------------------------

    async def link(
        self, telegram_user_id: int, bitrix_user_id: int, full_name: str, defaults: UserSettings, now: float
    ) -> int | None:
        """Link a Telegram user to a Bitrix24 user; returns the Telegram user the link moved away from."""
        async with self.transaction() as db:
            cur = await db.execute(
                "SELECT telegram_user_id FROM links WHERE bitrix_user_id = ? AND telegram_user_id != ?",
                (bitrix_user_id, telegram_user_id),
            )
            row = await cur.fetchone()
            previous = row[0] if row else None
            if previous is not None:
                await self._end_link(db, previous, now)
            await self._end_link(db, telegram_user_id, now)
            await db.execute(
                "INSERT INTO links (telegram_user_id, bitrix_user_id, full_name, linked_at, checked_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (telegram_user_id, bitrix_user_id, full_name, now, now),
            )
            cur = await db.execute("SELECT 1 FROM user_settings WHERE telegram_user_id = ?", (telegram_user_id,))
            if await cur.fetchone() is None:
                await self._write_settings(db, telegram_user_id, defaults, digest_saved_at=now)
            await db.execute("DELETE FROM link_codes WHERE telegram_user_id = ?", (telegram_user_id,))
        return previous

    @staticmethod
    async def _end_link(db: aiosqlite.Connection, telegram_user_id: int, now: float) -> None:
        await db.execute("DELETE FROM links WHERE telegram_user_id = ?", (telegram_user_id,))
        await db.execute("DELETE FROM alert_state WHERE telegram_user_id = ?", (telegram_user_id,))
        await db.execute("DELETE FROM counter_snapshots WHERE telegram_user_id = ?", (telegram_user_id,))
        await db.execute(
            "UPDATE outbox SET status = 'dropped', finished_at = ?, error = 'unlinked' "
            "WHERE telegram_user_id = ? AND status = 'queued' AND kind != 'notice'",
            (now, telegram_user_id),
        )

    async def unlink(self, telegram_user_id: int, now: float) -> bool:
        """End a user's link and every pending message about it; settings stay. True if there was one."""
        async with self.transaction() as db:
            cur = await db.execute("SELECT 1 FROM links WHERE telegram_user_id = ?", (telegram_user_id,))
            existed = await cur.fetchone() is not None
            await self._end_link(db, telegram_user_id, now)
            await db.execute("DELETE FROM link_codes WHERE telegram_user_id = ?", (telegram_user_id,))
        return existed

    async def telegram_user_of(self, bitrix_user_id: int) -> int | None:
        """The Telegram user linked to a Bitrix24 user."""
        row = await self._fetchone("SELECT telegram_user_id FROM links WHERE bitrix_user_id = ?", (bitrix_user_id,))
        return row[0] if row else None

    async def forget(self, telegram_user_id: int) -> None:
        """Delete every row about a user except limit records (which expire on their own)."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM users WHERE telegram_user_id = ?", (telegram_user_id,))

    async def links(self) -> list[Link]:
        """Every linked user who has not blocked the bot."""
        rows = await self._fetchall(
            """SELECT l.telegram_user_id, u.chat_id, l.bitrix_user_id, l.full_name
               FROM links l JOIN users u USING (telegram_user_id)
               WHERE u.blocked = 0 ORDER BY l.bitrix_user_id"""
        )
        return [Link(*r) for r in rows]

    async def link_counts(self) -> tuple[int, int]:
        """(linked users, linked users who have not blocked the bot)."""
        (row,) = await self._fetchall(
            "SELECT COUNT(*), COALESCE(SUM(u.blocked = 0), 0) FROM links l JOIN users u USING (telegram_user_id)"
        )
        return int(row[0]), int(row[1])

    async def get_settings(self, telegram_user_id: int) -> UserSettings | None:
        """A user's settings, or None before their first link."""
        row = await self._fetchone("SELECT * FROM user_settings WHERE telegram_user_id = ?", (telegram_user_id,))
        if row is None:
            return None
        thresholds = {
            r[0]: r[1]
            for r in await self._fetchall(
                "SELECT counter, threshold FROM alert_thresholds WHERE telegram_user_id = ?", (telegram_user_id,)
            )
        }
        return load_settings_row(row, thresholds)

    async def digest_saved_at(self, telegram_user_id: int) -> float | None:
        """When the user's digest time, days or zone last changed."""
        row = await self._fetchone(
            "SELECT digest_saved_at FROM user_settings WHERE telegram_user_id = ?", (telegram_user_id,)
        )
        return row[0] if row else None

    async def save_settings(
        self,
        telegram_user_id: int,
        settings: UserSettings,
        *,
        now: float,
        digest_changed: bool = False,
        rebaseline: Iterable[str] = (),
    ) -> None:
        """Store changed settings; `rebaseline` counters (or '*') get their alert state set on the next poll."""
        async with self.transaction() as db:
            saved_at = None
            if not digest_changed:
                cur = await db.execute(
                    "SELECT digest_saved_at FROM user_settings WHERE telegram_user_id = ?", (telegram_user_id,)
                )
                row = await cur.fetchone()
                saved_at = row[0] if row else None
            await self._write_settings(db, telegram_user_id, settings, digest_saved_at=saved_at if saved_at is not None else now)
            counters = list(rebaseline)
            if "*" in counters:
                await db.execute(
                    "UPDATE alert_state SET baseline_needed = 1, held = 0 WHERE telegram_user_id = ?",
                    (telegram_user_id,),
                )
            elif counters:
                await db.executemany(
                    "UPDATE alert_state SET baseline_needed = 1, held = 0 WHERE telegram_user_id = ? AND counter = ?",
                    [(telegram_user_id, c) for c in counters],
                )
            await db.execute(
                "DELETE FROM alert_state WHERE telegram_user_id = ? AND counter NOT IN "
                "(SELECT counter FROM alert_thresholds WHERE telegram_user_id = ?)",
                (telegram_user_id, telegram_user_id),
            )

    @staticmethod
    async def _write_settings(
        db: aiosqlite.Connection, telegram_user_id: int, settings: UserSettings, *, digest_saved_at: float
    ) -> None:
        values = dump_settings(settings)
        values["digest_saved_at"] = digest_saved_at
        columns = ", ".join(values)
        marks = ", ".join("?" * len(values))
        updates = ", ".join(f"{k} = excluded.{k}" for k in values)
        await db.execute(
            f"INSERT INTO user_settings (telegram_user_id, {columns}) VALUES (?, {marks}) "
            f"ON CONFLICT (telegram_user_id) DO UPDATE SET {updates}",
            (telegram_user_id, *values.values()),
        )
        await db.execute("DELETE FROM alert_thresholds WHERE telegram_user_id = ?", (telegram_user_id,))
        await db.executemany(
            "INSERT INTO alert_thresholds (telegram_user_id, counter, threshold) VALUES (?, ?, ?)",
            [(telegram_user_id, c, t) for c, t in sorted(settings.thresholds.items())],
        )

    # ---- link codes and limits ---------------------------------------------------------------

    async def count_events(self, kind: str, subject: int, since: float) -> int:
        """How many limit events of a kind a subject had since a time."""
        (row,) = await self._fetchall(
            "SELECT COUNT(*) FROM limit_events WHERE kind = ? AND subject = ? AND at >= ?", (kind, subject, since)
        )
        return int(row[0])

    async def add_event(self, kind: str, subject: int, now: float, expire_before: float) -> None:
        """Record a limit event and drop events too old to matter."""
        async with self.transaction() as db:
            await db.execute("INSERT INTO limit_events (kind, subject, at) VALUES (?, ?, ?)", (kind, subject, now))
            await db.execute("DELETE FROM limit_events WHERE at < ?", (expire_before,))

    async def save_link_code(
        self, telegram_user_id: int, bitrix_user_id: int, code_hash: str, expires_at: float, tries: int, now: float
    ) -> None:
        """Store a new code (replacing any previous one) and count it against both users' limits."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO link_codes (telegram_user_id, bitrix_user_id, code_hash, expires_at, tries_left) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (telegram_user_id) DO UPDATE SET "
                "bitrix_user_id = excluded.bitrix_user_id, code_hash = excluded.code_hash, "
                "expires_at = excluded.expires_at, tries_left = excluded.tries_left",
                (telegram_user_id, bitrix_user_id, code_hash, expires_at, tries),
            )
            await db.executemany(
                "INSERT INTO limit_events (kind, subject, at) VALUES (?, ?, ?)",
                [("code_tg", telegram_user_id, now), ("code_b24", bitrix_user_id, now)],
            )

    async def get_link_code(self, telegram_user_id: int) -> tuple[int, str, float, int] | None:
        """(bitrix_user_id, code_hash, expires_at, tries_left) of the pending code."""
        row = await self._fetchone(
            "SELECT bitrix_user_id, code_hash, expires_at, tries_left FROM link_codes WHERE telegram_user_id = ?",
            (telegram_user_id,),
        )
        return tuple(row) if row else None  # type: ignore[return-value]

    async def spend_code_try(self, telegram_user_id: int) -> int:
        """Count one wrong try; returns the tries left (the code is deleted at zero)."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE link_codes SET tries_left = tries_left - 1 WHERE telegram_user_id = ?", (telegram_user_id,)
            )
            cur = await db.execute("SELECT tries_left FROM link_codes WHERE telegram_user_id = ?", (telegram_user_id,))
            row = await cur.fetchone()
            left = row[0] if row else 0
            if left <= 0:
                await db.execute("DELETE FROM link_codes WHERE telegram_user_id = ?", (telegram_user_id,))
        return max(left, 0)

    async def delete_link_code(self, telegram_user_id: int) -> None:
        """Forget a pending code."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM link_codes WHERE telegram_user_id = ?", (telegram_user_id,))

    # ---- polling, alerts and digests ---------------------------------------------------------

    async def audience(self, telegram_user_ids: Iterable[int] | None = None) -> dict[int, Audience]:
        """Settings, alert states, language and last digests of linked, unblocked users (all, or these)."""
        where, params = "", []
        if telegram_user_ids is not None:
            ids = list(telegram_user_ids)
            if not ids:
                return {}
            where = f" AND l.telegram_user_id IN ({','.join('?' * len(ids))})"
            params = ids
        rows = await self._fetchall(
            f"""SELECT l.telegram_user_id, u.chat_id, l.bitrix_user_id, l.full_name, u.language_code, s.*,
                       (SELECT MAX(local_date) FROM digest_log d WHERE d.telegram_user_id = l.telegram_user_id) AS last_date
                FROM links l JOIN users u USING (telegram_user_id) JOIN user_settings s USING (telegram_user_id)
                WHERE u.blocked = 0{where}""",
            params,
        )
        thresholds: dict[int, dict[str, int]] = {}
        for r in await self._fetchall("SELECT telegram_user_id, counter, threshold FROM alert_thresholds"):
            thresholds.setdefault(r[0], {})[r[1]] = r[2]
        states: dict[int, dict[str, AlertState]] = {}
        for r in await self._fetchall("SELECT * FROM alert_state"):
            states.setdefault(r["telegram_user_id"], {})[r["counter"]] = load_alert_state(r)
        out = {}
        for r in rows:
            tid = r["telegram_user_id"]
            out[tid] = Audience(
                link=Link(tid, r["chat_id"], r["bitrix_user_id"], r["full_name"]),
                language_code=r["language_code"],
                settings=load_settings_row(r, thresholds.get(tid, {})),
                states=states.get(tid, {}),
                last_digest_date=date.fromisoformat(r["last_date"]) if r["last_date"] else None,
                digest_saved_at=r["digest_saved_at"],
            )
        return out

    async def apply_poll(self, updates: Iterable[PollUpdate], messages: Iterable[OutgoingMessage], now: float) -> None:
        """Store new alert states and view_all snapshots, and queue the alerts they caused, atomically."""
        updates = list(updates)
        async with self.transaction() as db:
            for update in updates:
                await self._replace_alert_states(db, update.telegram_user_id, update.states)
            await db.executemany(
                "INSERT INTO counter_snapshots (telegram_user_id, role, counters, read_at) VALUES (?, 'view_all', ?, ?) "
                "ON CONFLICT (telegram_user_id, role) DO UPDATE SET counters = excluded.counters, read_at = excluded.read_at",
                [(u.telegram_user_id, to_json(u.view_all) if u.view_all is not None else None, now) for u in updates],
            )
            await self.enqueue(db, messages, now)

    @staticmethod
    async def _replace_alert_states(db: aiosqlite.Connection, telegram_user_id: int, states: dict[str, AlertState]) -> None:
        """Inside a transaction: a user's alert states become exactly `states`."""
        await db.execute("DELETE FROM alert_state WHERE telegram_user_id = ?", (telegram_user_id,))
        await db.executemany(
            "INSERT INTO alert_state VALUES (?, ?, ?, ?, ?, ?, ?)",
            [dump_alert_state(telegram_user_id, st) for st in states.values()],
        )

    async def snapshot(self, telegram_user_id: int) -> dict[str, int] | None:
        """The last view_all counters the poll read for a user."""
        row = await self._fetchone(
            "SELECT counters FROM counter_snapshots WHERE telegram_user_id = ? AND role = 'view_all'", (telegram_user_id,)
        )
        return json.loads(row[0]) if row and row[0] else None

    async def set_snooze(self, telegram_user_id: int, counter: str, until: Any) -> bool:
        """Snooze one counter's alerts; a new snooze replaces the old one."""
        async with self.transaction() as db:
            cur = await db.execute(
                "UPDATE alert_state SET snooze_until = ? WHERE telegram_user_id = ? AND counter = ?",
                (until.timestamp(), telegram_user_id, counter),
            )
            return cur.rowcount > 0

    async def alert_states(self, telegram_user_id: int) -> dict[str, AlertState]:
        """A user's alert states."""
        rows = await self._fetchall("SELECT * FROM alert_state WHERE telegram_user_id = ?", (telegram_user_id,))
        return {r["counter"]: load_alert_state(r) for r in rows}

    async def last_sent_digest(self, telegram_user_id: int) -> tuple[date, dict[str, dict[str, int]]] | None:
        """The local date and counters of the last scheduled digest that was sent."""
        row = await self._fetchone(
            "SELECT local_date, counters FROM digest_log WHERE telegram_user_id = ? AND status = 'sent' "
            "ORDER BY local_date DESC LIMIT 1",
            (telegram_user_id,),
        )
        if row is None:
            return None
        return date.fromisoformat(row[0]), json.loads(row[1] or "{}")

    async def record_digest(
        self,
        telegram_user_id: int,
        local_date: date,
        due_at: float,
        status: str,
        counters: dict[str, dict[str, int]] | None,
        message: OutgoingMessage | None,
        states: dict[str, AlertState] | None,
        now: float,
    ) -> bool:
        """Log a digest (sent or skipped) with its message and any folded quiet summary; False if already logged."""
        async with self.transaction() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO digest_log (telegram_user_id, local_date, due_at, status, counters) "
                "VALUES (?, ?, ?, ?, ?)",
                (telegram_user_id, local_date.isoformat(), due_at, status, to_json(counters) if counters else None),
            )
            if cur.rowcount == 0:
                return False
            if message is not None:
                await self.enqueue(db, [message], now)
            if states is not None:
                await self._replace_alert_states(db, telegram_user_id, states)
        return True

    async def digest_log(self, telegram_user_id: int) -> list[dict[str, Any]]:
        """Every digest_log row of a user (tests, /stats)."""
        rows = await self._fetchall(
            "SELECT * FROM digest_log WHERE telegram_user_id = ? ORDER BY local_date", (telegram_user_id,)
        )
        return [dict(r) for r in rows]

    async def drop_pending_digests(self, telegram_user_id: int, now: float) -> None:
        """After a digest setting changes: a digest queued for later is withdrawn with its log row."""
        async with self.transaction() as db:
            cur = await db.execute(
                "SELECT id, not_before FROM outbox WHERE telegram_user_id = ? AND kind = 'digest' "
                "AND status = 'queued' AND not_before > ?",
                (telegram_user_id, now),
            )
            for row_id, not_before in await cur.fetchall():
                await db.execute("UPDATE outbox SET status = 'dropped', error = 'settings changed' WHERE id = ?", (row_id,))
                await db.execute(
                    "DELETE FROM digest_log WHERE telegram_user_id = ? AND due_at = ? AND status = 'sent'",
                    (telegram_user_id, not_before),
                )

    async def admin_notice_state(self) -> dict[str, tuple[float, float | None, bool]]:
        """cause -> (first seen, last told, active)."""
        rows = await self._fetchall("SELECT cause, first_seen_at, last_told_at, active FROM admin_notices")
        return {r[0]: (r[1], r[2], bool(r[3])) for r in rows}

    async def save_admin_notices(
        self, states: dict[str, tuple[float, float | None, bool]], messages: Iterable[OutgoingMessage], now: float
    ) -> None:
        """Replace the admin-notice state and queue the notices it decided on, atomically."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM admin_notices")
            await db.executemany(
                "INSERT INTO admin_notices (cause, first_seen_at, last_told_at, active) VALUES (?, ?, ?, ?)",
                [(c, first, told, int(active)) for c, (first, told, active) in states.items()],
            )
            await self.enqueue(db, messages, now)

    async def queue(self, messages: Iterable[OutgoingMessage], now: float) -> None:
        """Queue bulk messages on their own (notices that change no other state)."""
        async with self.transaction() as db:
            await self.enqueue(db, messages, now)

    async def mark_checked(self, telegram_user_ids: Iterable[int], now: float) -> None:
        """Record the daily re-check of these links."""
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE links SET checked_at = ? WHERE telegram_user_id = ?", [(now, t) for t in telegram_user_ids]
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

    async def outbox_mark_sending(self, row_id: int) -> bool:
        """Committed right before the HTTP call: a crash after this never resends the row.

        False when the row is no longer queued (dropped meanwhile: user blocked or unlinked, stale alert).
        """
        async with self.transaction() as db:
            cur = await db.execute(
                "UPDATE outbox SET status = 'sending', attempts = attempts + 1 WHERE id = ? AND status = 'queued'",
                (row_id,),
            )
            return cur.rowcount > 0

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

    async def outbox_outcomes(self, since: float) -> dict[str, int]:
        """Bulk messages finished since a time, by status."""
        rows = await self._fetchall(
            "SELECT status, COUNT(*) FROM outbox WHERE finished_at >= ? GROUP BY status", (since,)
        )
        return {r[0]: int(r[1]) for r in rows}

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


def load_alert_state(row: Any) -> AlertState:
    """An alert_state row as AlertState."""
    return AlertState(
        counter=row["counter"],
        alerted=bool(row["alerted"]),
        peak=row["peak"],
        snooze_until=datetime.fromtimestamp(row["snooze_until"], timezone.utc) if row["snooze_until"] is not None else None,
        held=bool(row["held"]),
        baseline_needed=bool(row["baseline_needed"]),
    )


def to_json(value: Any) -> str:
    """Compact JSON for storage."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
