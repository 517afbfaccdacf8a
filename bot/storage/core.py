"""The one aiosqlite connection: open, migrate, close, and serialised units of work (SPEC section 9)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger("bot.storage")

Db = aiosqlite.Connection


class StorageError(Exception):
    """The database cannot be used (not openable, corrupt, or newer than the code)."""


class DatabaseTooNew(StorageError):
    """The file was written by a newer version of the bot."""


def migrations() -> list[tuple[int, str, str]]:
    """The numbered SQL migrations shipped with the package, in order."""
    found = []
    for entry in resources.files("bot.storage.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), name, entry.read_text(encoding="utf-8")))
    found.sort()
    for index, (number, name, _) in enumerate(found, start=1):
        if number != index:
            raise StorageError(f"migration {name} is out of sequence")
    return found


async def fetchall(db: Db, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
    """Every row of one query."""
    return list(await db.execute_fetchall(sql, tuple(params)))


async def fetchone(db: Db, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
    """The first row of one query, or None."""
    rows = await fetchall(db, sql, params)
    return rows[0] if rows else None


def marks(values: Iterable[Any]) -> str:
    """`?, ?, ?` for an IN list of these values."""
    return ",".join("?" for _ in values)


IN_CHUNK = 500  # values per IN list, well under SQLite's limit on host parameters


def _in_chunks(sql: str, values: Iterable[Any]) -> Iterator[tuple[str, list[Any]]]:
    items = list(values)
    for start in range(0, len(items), IN_CHUNK):
        chunk = items[start : start + IN_CHUNK]
        yield sql.replace("{ids}", marks(chunk)), chunk


async def fetchall_in(db: Db, sql: str, values: Iterable[Any], before: tuple[Any, ...] = ()) -> list[aiosqlite.Row]:
    """Every row of `sql` for these values: its `IN ({ids})` list filled IN_CHUNK values at a time, after `before`."""
    rows: list[aiosqlite.Row] = []
    for statement, chunk in _in_chunks(sql, values):
        rows += await fetchall(db, statement, (*before, *chunk))
    return rows


async def execute_in(db: Db, sql: str, values: Iterable[Any], before: tuple[Any, ...] = ()) -> int:
    """Run a write whose `IN ({ids})` list takes these values, IN_CHUNK at a time; the rows it changed."""
    changed = 0
    for statement, chunk in _in_chunks(sql, values):
        cur = await db.execute(statement, (*before, *chunk))
        changed += cur.rowcount
    return changed


class Storage:
    """Owns the connection; every decision that reads and then writes runs in `transaction()`.

    The area modules (users, links, settings, alerts, digests, outbox, limits, meta) hold the
    SQL as functions of a connection; the modules that decide compose them inside one
    `BEGIN IMMEDIATE` transaction that re-reads what the decision depends on.
    """

    def __init__(self, db: Db) -> None:
        self.db = db  # lock-free single-statement reads (display, tests); decisions use transaction()
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Storage:
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

    @classmethod
    async def open_at_version(cls, path: Path, version: int) -> Storage:
        """A new database migrated only up to `version` (tests of later migrations on older data)."""
        db = await aiosqlite.connect(str(path), isolation_level=None)
        storage = cls(db)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA foreign_keys = ON")
        await storage._migrate(path, up_to=version)
        return storage

    async def _migrate(self, path: Path, up_to: int | None = None) -> None:
        steps = migrations()
        (row,) = await self.db.execute_fetchall("PRAGMA user_version")
        current = row[0]
        if current > len(steps):
            raise DatabaseTooNew(
                f"the database {path} has schema version {current}, but this bot knows only up to "
                f"{len(steps)}: run the newer bot version or restore a backup"
            )
        for number, name, sql in steps[current:up_to]:
            try:
                # executescript commits any open transaction first, so BEGIN lives inside the script.
                await self.db.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")
            except sqlite3.Error as err:
                if self.db.in_transaction:
                    await self.db.execute("ROLLBACK")
                raise StorageError(f"migration {name} failed: {err}") from err
            log.info("database migrated to version %d (%s)", number, name)

    async def close(self) -> None:
        """Close the connection (its worker thread would otherwise keep the process alive)."""
        await self.db.close()

    async def schema_version(self) -> int:
        """PRAGMA user_version."""
        (row,) = await self.db.execute_fetchall("PRAGMA user_version")
        return int(row[0])

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Db]:
        """One serialised BEGIN IMMEDIATE … COMMIT; rolled back on any error or cancellation."""
        async with self._lock:
            try:
                await self._to_the_end("BEGIN IMMEDIATE")
            except asyncio.CancelledError:
                if self.db.in_transaction:
                    await self._to_the_end("ROLLBACK")
                raise
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:
                    await self._to_the_end("ROLLBACK")
                raise
            else:
                await self._to_the_end("COMMIT")

    @staticmethod
    @asynccontextmanager
    async def savepoint(db: Db, name: str = "unit") -> AsyncIterator[Db]:
        """Inside a transaction: a part that is undone alone when it fails (one user of a batch)."""
        await db.execute(f"SAVEPOINT {name}")
        try:
            yield db
        except BaseException:
            await db.execute(f"ROLLBACK TO {name}")
            await db.execute(f"RELEASE {name}")
            raise
        else:
            await db.execute(f"RELEASE {name}")

    async def _to_the_end(self, sql: str) -> None:
        """Run a transaction-control statement to completion even if our caller is cancelled meanwhile.

        The statement runs on aiosqlite's thread whatever happens to the awaiting task; a cancelled
        BEGIN that nobody rolls back would leave the shared connection inside a transaction.
        """
        task = asyncio.ensure_future(self.db.execute(sql))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def table_counts(self) -> dict[str, int]:
        """Row count of every table (tests and /forget checks)."""
        names = [r[0] for r in await fetchall(self.db, "SELECT name FROM sqlite_master WHERE type = 'table'")]
        counts = {}
        for name in names:
            if name.startswith("sqlite_"):
                continue
            (row,) = await fetchall(self.db, f'SELECT COUNT(*) FROM "{name}"')
            counts[name] = int(row[0])
        return counts
