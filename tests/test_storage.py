"""Storage on real SQLite files: migrations, pragmas, file mode, refusal of a newer database."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from bot.storage import DatabaseTooNew, Storage, StorageError, migrations
from tests import db as tdb


async def test_fresh_database_gets_every_migration_wal_and_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "bot.sqlite3"
    storage = await Storage.open(path)
    try:
        assert await storage.schema_version() == len(migrations())
        counts = await storage.table_counts()
        assert {"users", "links", "user_settings", "alert_state", "digest_log", "outbox", "link_codes"} <= set(counts)
    finally:
        await storage.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_second_open_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    storage = await Storage.open(path)
    await tdb.seen(storage, 1, 1000.0, "ru")
    await storage.close()
    before = path.read_bytes()
    storage = await Storage.open(path)
    try:
        assert await storage.schema_version() == len(migrations())
        assert (await tdb.user(storage, 1)).language_code == "ru"
    finally:
        await storage.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 1
    assert len(before) > 0


async def test_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {len(migrations()) + 1}")
    with pytest.raises(DatabaseTooNew, match="newer bot version"):
        await Storage.open(path)


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError):
        await Storage.open(path)


async def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    storage = await Storage.open(tmp_path / "bot.sqlite3")
    try:
        with pytest.raises(sqlite3.IntegrityError):
            async with storage.transaction() as db:
                await db.execute("INSERT INTO links VALUES (99, 5, 'x', 0, 0)")
    finally:
        await storage.close()


async def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    storage = await Storage.open(tmp_path / "bot.sqlite3")
    try:
        with pytest.raises(RuntimeError):
            async with storage.transaction() as db:
                await db.execute("INSERT INTO meta VALUES ('a', 'b')")
                raise RuntimeError("boom")
        assert await tdb.get_meta(storage, "a") is None
    finally:
        await storage.close()


async def test_the_queries_the_scheduled_work_and_the_outbox_repeat_at_scale_use_indexes(tmp_path: Path) -> None:
    from datetime import date

    from bot.storage import alerts, audience, digests, links, outbox

    storage = await Storage.open(tmp_path / "bot.sqlite3")
    statements: list[str] = []
    try:
        await storage.db.set_trace_callback(statements.append)
        db = storage.db
        await outbox.drop_stale(db, "alert", 1000.0, 2000.0)
        await outbox.due(db, 2000.0, 40, {1, 2})
        await outbox.delete_finished_before(db, 1000.0)
        await digests.delete_before(db, date(2026, 1, 1))
        await digests.last_sent(db, 1)
        await digests.set_outcome(db, 1, "sent")
        await audience.page(db, 0, 500)
        await audience.load(db, [1, 2, 3])
        await links.active_after(db, 0, 1000)
        await links.due_for_check(db, 1000.0, 0, 500)
        await alerts.read_times(db, [1, 2, 3])
        await storage.db.set_trace_callback(None)
        plans = {}
        for sql in statements:
            rows = await storage.db.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}")
            plans[sql] = [row[3] for row in rows]
    finally:
        await storage.close()
    assert len(plans) >= 11
    for sql, lines in plans.items():
        scans = [line for line in lines if (line.startswith("SCAN") and "USING" not in line) or "TEMP B-TREE" in line]
        assert not scans, (sql, lines)
    # Two that an index on `status` alone would still serve by walking every queued or finished row:
    # the stale-alert look-up of every worker round, and the 30 days of finished rows.
    (stale,) = [lines for sql, lines in plans.items() if sql.startswith("SELECT id FROM outbox WHERE status = 'queued' AND kind")]
    assert any("kind=?" in line and "created_at<?" in line for line in stale), stale
    (kept,) = [lines for sql, lines in plans.items() if sql.startswith("DELETE FROM outbox")]
    assert any("finished_at<?" in line for line in kept), kept
