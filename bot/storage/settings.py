"""SQL of user_settings and alert_thresholds: a user's preferences as UserSettings."""

from __future__ import annotations

from datetime import date, time
from typing import Any

from bot.model import UserSettings
from bot.storage.core import Db, fetchall_in, fetchone


def dump(s: UserSettings) -> dict[str, Any]:
    """UserSettings as user_settings columns."""
    return {
        "timezone": s.timezone,
        "digest_enabled": int(s.digest_enabled),
        "digest_time": s.digest_time.strftime("%H:%M"),
        "digest_days": ",".join(str(d) for d in sorted(s.digest_days)),
        "digest_empty": int(s.digest_empty),
        "digest_tasks": int(s.digest_tasks),
        "digest_team": int(s.digest_team),
        "alerts_enabled": int(s.alerts_enabled),
        "quiet_start": s.quiet_start.strftime("%H:%M") if s.quiet_start else None,
        "quiet_end": s.quiet_end.strftime("%H:%M") if s.quiet_end else None,
        "pause_until": s.pause_until.isoformat() if s.pause_until else None,
        "language": s.language,
    }


def load(row: Any, thresholds: dict[str, int]) -> UserSettings:
    """A user_settings row (plus thresholds) as UserSettings."""
    days = frozenset(int(d) for d in row["digest_days"].split(",") if d != "")
    return UserSettings(
        timezone=row["timezone"],
        digest_enabled=bool(row["digest_enabled"]),
        digest_time=time.fromisoformat(row["digest_time"]),
        digest_days=days,
        digest_empty=bool(row["digest_empty"]),
        digest_tasks=bool(row["digest_tasks"]),
        digest_team=bool(row["digest_team"]),
        alerts_enabled=bool(row["alerts_enabled"]),
        thresholds=thresholds,
        quiet_start=time.fromisoformat(row["quiet_start"]) if row["quiet_start"] else None,
        quiet_end=time.fromisoformat(row["quiet_end"]) if row["quiet_end"] else None,
        pause_until=date.fromisoformat(row["pause_until"]) if row["pause_until"] else None,
        language=row["language"],
    )


async def thresholds_of(db: Db, telegram_user_ids: list[int]) -> dict[int, dict[str, int]]:
    """counter -> threshold per user, for these users."""
    out: dict[int, dict[str, int]] = {}
    sql = "SELECT telegram_user_id, counter, threshold FROM alert_thresholds WHERE telegram_user_id IN ({ids})"
    for r in await fetchall_in(db, sql, telegram_user_ids):
        out.setdefault(r[0], {})[r[1]] = r[2]
    return out


async def get(db: Db, telegram_user_id: int) -> UserSettings | None:
    """A user's settings, or None when there is no settings row."""
    row = await fetchone(db, "SELECT * FROM user_settings WHERE telegram_user_id = ?", (telegram_user_id,))
    if row is None:
        return None
    return load(row, (await thresholds_of(db, [telegram_user_id])).get(telegram_user_id, {}))


async def saved_at(db: Db, telegram_user_id: int) -> float | None:
    """When the user's digest time, days or zone last changed."""
    row = await fetchone(db, "SELECT digest_saved_at FROM user_settings WHERE telegram_user_id = ?", (telegram_user_id,))
    return row[0] if row else None


async def write(db: Db, telegram_user_id: int, settings: UserSettings, *, digest_saved_at: float) -> None:
    """Store a user's whole settings row and thresholds."""
    values = dump(settings)
    values["digest_saved_at"] = digest_saved_at
    columns = ", ".join(values)
    places = ", ".join("?" * len(values))
    updates = ", ".join(f"{k} = excluded.{k}" for k in values)
    await db.execute(
        f"INSERT INTO user_settings (telegram_user_id, {columns}) VALUES (?, {places}) "
        f"ON CONFLICT (telegram_user_id) DO UPDATE SET {updates}",
        (telegram_user_id, *values.values()),
    )
    await db.execute("DELETE FROM alert_thresholds WHERE telegram_user_id = ?", (telegram_user_id,))
    await db.executemany(
        "INSERT INTO alert_thresholds (telegram_user_id, counter, threshold) VALUES (?, ?, ?)",
        [(telegram_user_id, c, t) for c, t in sorted(settings.thresholds.items())],
    )
