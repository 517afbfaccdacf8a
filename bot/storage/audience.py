"""The read the scheduled work decides on: linked, unblocked users with settings, states, last digest."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from bot.model import AlertState, UserSettings
from bot.storage import alerts, settings
from bot.storage.core import Db, fetchall, fetchall_in
from bot.storage.links import Link


@dataclass(frozen=True)
class Audience:
    """What the scheduled work needs about one linked, unblocked user."""

    link: Link
    language_code: str | None
    settings: UserSettings
    states: dict[str, AlertState]
    last_digest_date: date | None
    digest_saved_at: float


_SELECT = """SELECT l.telegram_user_id, u.chat_id, l.bitrix_user_id, l.full_name, u.language_code, s.*,
                    (SELECT MAX(local_date) FROM digest_log d WHERE d.telegram_user_id = l.telegram_user_id) AS last_date
             FROM links l JOIN users u USING (telegram_user_id) JOIN user_settings s USING (telegram_user_id)
             WHERE u.blocked = 0"""


async def load(db: Db, telegram_user_ids: Iterable[int] | None = None) -> dict[int, Audience]:
    """Linked, unblocked users (all, or these), each with their settings, alert states and last digest date."""
    if telegram_user_ids is None:
        rows = await fetchall(db, _SELECT)
    else:
        rows = await fetchall_in(db, _SELECT + " AND l.telegram_user_id IN ({ids})", telegram_user_ids)
    return await _build(db, rows)


async def page(db: Db, after_telegram_user_id: int, limit: int) -> list[Audience]:
    """The next `limit` linked, unblocked users by telegram_user_id after the given one (scheduled work in chunks)."""
    rows = await fetchall(
        db, f"{_SELECT} AND l.telegram_user_id > ? ORDER BY l.telegram_user_id LIMIT ?", (after_telegram_user_id, limit)
    )
    return list((await _build(db, rows)).values())


async def _build(db: Db, rows: list[Any]) -> dict[int, Audience]:
    tids = [r["telegram_user_id"] for r in rows]
    thresholds = await settings.thresholds_of(db, tids)
    states = await alerts.states_of(db, tids)
    out = {}
    for r in rows:
        tid = r["telegram_user_id"]
        out[tid] = Audience(
            link=Link(tid, r["chat_id"], r["bitrix_user_id"], r["full_name"]),
            language_code=r["language_code"],
            settings=settings.load(r, thresholds.get(tid, {})),
            states=states.get(tid, {}),
            last_digest_date=date.fromisoformat(r["last_date"]) if r["last_date"] else None,
            digest_saved_at=r["digest_saved_at"],
        )
    return out
