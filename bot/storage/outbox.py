"""SQL of the outbox: bulk messages to a chat, queued -> sending -> sent | failed | dropped."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.storage.core import Db, execute_in, fetchall


@dataclass(frozen=True)
class OutboxRow:
    """A bulk message waiting to be sent."""

    id: int
    chat_id: int
    telegram_user_id: int | None
    kind: str
    text: str
    reply_markup: str | None
    attempts: int
    caused_at: float | None = None  # receipt of the Bitrix24 event behind it (SPEC 14 latency)
    message_thread_id: int | None = None  # the forum topic of a project chat (SPEC 13)


@dataclass(frozen=True)
class OutgoingMessage:
    """A bulk message to queue together with the state change that caused it."""

    chat_id: int
    telegram_user_id: int | None
    kind: str
    text: str
    reply_markup: str | None = None
    not_before: float = 0.0
    caused_at: float | None = None  # receipt of the Bitrix24 event that caused it, if one did
    message_thread_id: int | None = None  # the forum topic of a project chat (SPEC 13)


async def enqueue(db: Db, messages: Iterable[OutgoingMessage], now: float) -> list[int]:
    """Queue messages inside the caller's transaction (the one that changed the state); their ids."""
    ids = []
    for m in messages:
        cur = await db.execute(
            "INSERT INTO outbox (chat_id, telegram_user_id, kind, text, reply_markup, not_before, created_at, caused_at, "
            "message_thread_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                m.chat_id, m.telegram_user_id, m.kind, m.text, m.reply_markup, max(m.not_before, now), now, m.caused_at,
                m.message_thread_id,
            ),
        )
        ids.append(int(cur.lastrowid or 0))
    return ids


async def due(db: Db, now: float, limit: int, exclude: set[int]) -> list[OutboxRow]:
    """Queued rows whose time has come, oldest first, to chats whose user has not blocked the bot."""
    rows = await fetchall(
        db,
        """SELECT o.id, o.chat_id, o.telegram_user_id, o.kind, o.text, o.reply_markup, o.attempts, o.caused_at,
                  o.message_thread_id
           FROM outbox o LEFT JOIN users u ON u.telegram_user_id = o.telegram_user_id
           WHERE o.status = 'queued' AND o.not_before <= ? AND (o.telegram_user_id IS NULL OR u.blocked = 0)
           ORDER BY o.not_before, o.id LIMIT ?""",
        (now, limit + len(exclude)),
    )
    return [OutboxRow(*r) for r in rows if r[0] not in exclude][:limit]


async def mark_sending(db: Db, row_id: int) -> bool:
    """queued -> sending; False when the row is no longer queued (dropped meanwhile)."""
    cur = await db.execute(
        "UPDATE outbox SET status = 'sending', attempts = attempts + 1 WHERE id = ? AND status = 'queued'", (row_id,)
    )
    return cur.rowcount > 0


async def finish(db: Db, row_id: int, status: str, now: float, error: str | None) -> str | None:
    """Record the final outcome (the text is cleared: it is not kept once it left); returns the row's kind."""
    await db.execute(
        "UPDATE outbox SET status = ?, finished_at = ?, error = ?, text = '' WHERE id = ?", (status, now, error, row_id)
    )
    found = await fetchall(db, "SELECT kind FROM outbox WHERE id = ?", (row_id,))
    return found[0][0] if found else None


async def requeue(db: Db, row_id: int, not_before: float) -> None:
    """Put back a row that certainly did not reach Telegram; later rows to its chat wait for it."""
    await db.execute("UPDATE outbox SET status = 'queued', not_before = ? WHERE id = ?", (not_before, row_id))
    # Rows are taken by (not_before, id): without this the next message to the chat would
    # overtake the one being retried.
    await db.execute(
        "UPDATE outbox SET not_before = ? WHERE status = 'queued' AND id > ? AND not_before < ? "
        "AND chat_id = (SELECT chat_id FROM outbox WHERE id = ?)",
        (not_before, row_id, not_before, row_id),
    )


async def move_row(db: Db, row_id: int, chat_id: int) -> None:
    """A row refused because its group became a supergroup: queued again, to the new chat."""
    await db.execute("UPDATE outbox SET status = 'queued', chat_id = ? WHERE id = ?", (chat_id, row_id))


async def fail_sending(db: Db, now: float) -> list[tuple[int, int | None, str]]:
    """At start: rows left in 'sending' become failed (outcome unknown); returns (id, user, kind)."""
    rows = await fetchall(db, "SELECT id, telegram_user_id, kind FROM outbox WHERE status = 'sending'")
    await db.execute(
        "UPDATE outbox SET status = 'failed', finished_at = ?, error = 'outcome unknown after restart', text = '' "
        "WHERE status = 'sending'",
        (now,),
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def drop_stale(db: Db, kind: str, created_before: float, now: float) -> list[int]:
    """Drop queued rows of a kind older than the cut-off; their ids."""
    rows = await fetchall(
        db, "SELECT id FROM outbox WHERE status = 'queued' AND kind = ? AND created_at < ?", (kind, created_before)
    )
    ids = [r[0] for r in rows]
    await _drop(db, ids, now, "stale")
    return ids


async def queued_for(db: Db, telegram_user_id: int, kinds: Iterable[str] | None = None) -> list[tuple[int, str, float]]:
    """(id, kind, not_before) of a user's queued rows, of these kinds (all when None)."""
    rows = await fetchall(
        db, "SELECT id, kind, not_before FROM outbox WHERE telegram_user_id = ? AND status = 'queued'", (telegram_user_id,)
    )
    wanted = None if kinds is None else set(kinds)
    return [(r[0], r[1], r[2]) for r in rows if wanted is None or r[1] in wanted]


async def queued_to_chat(db: Db, chat_id: int) -> list[int]:
    """Ids of the rows queued to a chat."""
    rows = await fetchall(db, "SELECT id FROM outbox WHERE chat_id = ? AND status = 'queued'", (chat_id,))
    return [r[0] for r in rows]


async def drop(db: Db, row_ids: list[int], now: float, reason: str) -> None:
    """Withdraw these queued rows (a row already sending is left to finish)."""
    await _drop(db, row_ids, now, reason)


async def _drop(db: Db, row_ids: list[int], now: float, reason: str) -> None:
    await execute_in(
        db,
        "UPDATE outbox SET status = 'dropped', finished_at = ?, error = ?, text = '' WHERE status = 'queued' AND id IN ({ids})",
        row_ids,
        before=(now, reason),
    )


async def queued_count(db: Db) -> int:
    """How many rows wait to be sent."""
    (row,) = await fetchall(db, "SELECT COUNT(*) FROM outbox WHERE status = 'queued'")
    return int(row[0])


async def outcomes(db: Db, since: float) -> dict[str, int]:
    """Bulk messages finished since a time, by status."""
    rows = await fetchall(db, "SELECT status, COUNT(*) FROM outbox WHERE finished_at >= ? GROUP BY status", (since,))
    return {r[0]: int(r[1]) for r in rows}


async def delete_finished_before(db: Db, before: float) -> int:
    """Retention: delete sent, failed and dropped rows finished before the cut-off."""
    # `+status`: the range on finished_at (index outbox_finished) is what narrows it; by status the
    # planner would walk every finished row of the 30 days kept.
    cur = await db.execute(
        "DELETE FROM outbox WHERE finished_at < ? AND +status IN ('sent', 'failed', 'dropped')", (before,)
    )
    return cur.rowcount


async def rows(db: Db) -> list[dict[str, Any]]:
    """Every outbox row (tests)."""
    return [dict(r) for r in await fetchall(db, "SELECT * FROM outbox ORDER BY id")]
