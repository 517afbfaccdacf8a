"""SQL of task_members: the linked members last seen on each task an event named (SPEC 9, 14).

Bitrix24 events carry only a task ID and a task's former members cannot be read back, so
this is the memory of who was on a task. Only linked people are kept; a task known to have
no linked member keeps one row with bitrix_user_id NONE, so a comment on it costs no read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bot.storage.core import Db, execute_in, fetchall, fetchall_in

NONE = 0  # the marker row of a task with no linked member


async def members_of(db: Db, task_ids: Sequence[int]) -> dict[int, set[int]]:
    """The cached linked members of these tasks; a task never cached is absent, one without linked members maps to {}."""
    out: dict[int, set[int]] = {}
    for task_id, bitrix_user_id in await fetchall_in(
        db, "SELECT task_id, bitrix_user_id FROM task_members WHERE task_id IN ({ids})", task_ids
    ):
        found = out.setdefault(task_id, set())
        if bitrix_user_id != NONE:
            found.add(bitrix_user_id)
    return out


async def replace(db: Db, members: dict[int, set[int]], now: float) -> None:
    """Each task's cached members become exactly the given linked ones (none: the marker row)."""
    await delete_tasks(db, members)
    await db.executemany(
        "INSERT INTO task_members (task_id, bitrix_user_id, seen_at) VALUES (?, ?, ?)",
        [(task_id, bitrix_user_id, now) for task_id, people in members.items() for bitrix_user_id in (people or {NONE})],
    )


async def delete_tasks(db: Db, task_ids: Iterable[int]) -> int:
    """Forget deleted tasks; how many rows went."""
    return await execute_in(db, "DELETE FROM task_members WHERE task_id IN ({ids})", task_ids)


async def delete_user(db: Db, bitrix_user_id: int) -> None:
    """Forget one person on every task (unlinked or forgotten: only linked members are kept)."""
    await db.execute("DELETE FROM task_members WHERE bitrix_user_id = ?", (bitrix_user_id,))


async def delete_unseen_before(db: Db, before: float) -> int:
    """Rows not refreshed by an event since `before` (SPEC 9: 30 days); how many went."""
    cur = await db.execute("DELETE FROM task_members WHERE seen_at < ?", (before,))
    return cur.rowcount


async def count(db: Db) -> int:
    """Rows in the cache."""
    (row,) = await fetchall(db, "SELECT COUNT(*) FROM task_members")
    return int(row[0])
