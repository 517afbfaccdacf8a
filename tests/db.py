"""Reads and set-ups tests make directly on the database, through the storage area modules."""

from __future__ import annotations

from typing import Any

from bot.model import AlertState, UserSettings
from bot.storage import Storage, User, alerts, digests, links, meta, outbox, users
from bot.storage import settings as user_settings
from bot.storage.core import fetchall


async def user(storage: Storage, telegram_user_id: int) -> User | None:
    """A stored user with their link."""
    return await users.get(storage.db, telegram_user_id)


async def settings(storage: Storage, telegram_user_id: int) -> UserSettings | None:
    """A stored user's settings."""
    return await user_settings.get(storage.db, telegram_user_id)


async def states(storage: Storage, telegram_user_id: int) -> dict[str, AlertState]:
    """A user's alert states."""
    return await alerts.states(storage.db, telegram_user_id)


async def digest_log(storage: Storage, telegram_user_id: int) -> list[dict[str, Any]]:
    """A user's digest_log rows."""
    return await digests.rows(storage.db, telegram_user_id)


async def outbox_rows(storage: Storage) -> list[dict[str, Any]]:
    """Every outbox row."""
    return await outbox.rows(storage.db)


async def rows(storage: Storage, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Rows of any query."""
    return await fetchall(storage.db, sql, params)


async def get_meta(storage: Storage, key: str) -> str | None:
    """A meta value."""
    return await meta.get(storage.db, key)


async def seen(storage: Storage, telegram_user_id: int, now: float, language_code: str = "en") -> bool:
    """A user wrote to the bot (no baseline rules: a bare set-up for delivery tests)."""
    async with storage.transaction() as db:
        return await users.upsert_seen(db, telegram_user_id, telegram_user_id, language_code, now)


async def link(storage: Storage, telegram_user_id: int, bitrix_user_id: int, full_name: str, s: UserSettings, now: float) -> None:
    """A user who wrote and is linked, with these settings (bulk set-ups for load tests)."""
    async with storage.transaction() as db:
        await users.upsert_seen(db, telegram_user_id, telegram_user_id, "en", now)
        await user_settings.write(db, telegram_user_id, s, digest_saved_at=now)
        await links.insert(db, telegram_user_id, bitrix_user_id, full_name, now)


async def link_many(
    storage: Storage, telegram_user_ids: range, s: UserSettings, now: float, *, bitrix_offset: int = 0, per_transaction: int = 1000
) -> None:
    """Many users who wrote and are linked (bitrix_user_id = telegram_user_id + offset), in few transactions (benchmarks)."""
    ids = list(telegram_user_ids)
    for start in range(0, len(ids), per_transaction):
        async with storage.transaction() as db:
            for tid in ids[start : start + per_transaction]:
                await users.upsert_seen(db, tid, tid, "en", now)
                await user_settings.write(db, tid, s, digest_saved_at=now)
                await links.insert(db, tid, tid + bitrix_offset, f"User {tid}", now)


async def settings_or_default(storage: Storage) -> UserSettings:
    """Default settings with digests off (bulk users that only poll)."""
    return UserSettings(digest_enabled=False)
