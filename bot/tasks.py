"""Pure rules about the tasks behind a counter (SPEC 11): which listed rows belong to a user's role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.bitrix import INTERACTIVE_DEADLINE, BitrixClient
from bot.bitrix.results import Task, TaskPage
from bot.reader import WINDOW_SECONDS, SharedReads
from bot.tasklist import block_of, page_count

__all__ = ["OVERDUE_STATUSES", "TaskListView", "TaskLists", "TaskListsUnavailable", "project_row_fits", "row_fits"]

BLOCK_FREE_SECONDS = 60.0  # SPEC 11: pages inside a fetched block of 50 are free for 60 s

# Real statuses the `expired` counter counts: 2 pending, 3 in progress (reference 1.1).
OVERDUE_STATUSES = frozenset({2, 3})


def row_fits(task: Task, bitrix_user_id: int, role: str, now: datetime) -> bool:
    """Whether a listed row is one the role's `expired` counter could count: member in the role, status 2/3, deadline before now.

    Bitrix24 silently ignores filter keys it does not know and the admin's webhook sees
    every task, so one row that does not fit means the portal did not apply the filter.
    """
    if task.status not in OVERDUE_STATUSES:
        return False
    if task.deadline is None and not task.deadline_unreadable:
        return False  # the `<DEADLINE` filter passes no task without a deadline
    if task.deadline is not None and not task.deadline < now:
        return False
    responsible = task.responsible_id == bitrix_user_id
    accomplice = bitrix_user_id in task.accomplices
    auditor = bitrix_user_id in task.auditors
    creator = task.created_by == bitrix_user_id
    if role == "view_all":
        return responsible or accomplice or auditor or creator
    if role == "view_role_responsible":
        return responsible
    if role == "view_role_accomplice":
        return accomplice
    if role == "view_role_auditor":
        return auditor
    if role == "view_role_originator":
        return creator and task.created_by != task.responsible_id
    return False


def project_row_fits(task: Task, group_id: int, now: datetime) -> bool:
    """Whether a listed row is an overdue task of this project (SPEC 13): its group, status 2/3, deadline before now."""
    if task.group_id != group_id or task.status not in OVERDUE_STATUSES:
        return False
    if task.deadline is None:
        return task.deadline_unreadable
    return task.deadline < now


class TaskListsUnavailable(Exception):
    """The portal did not apply the list's filter (a returned row does not fit): lists stay off."""


@dataclass(frozen=True)
class TaskListView:
    """One page to show: the Bitrix24 block of 50 holding it, the list's total, when it was read."""

    role: str
    page: int
    block_start: int
    block: tuple[Task, ...]
    total: int
    read_at: float
    cached: bool


class TaskLists:
    """A user's overdue tasks for one role, read on demand through SharedReads (SPEC 11).

    A refresh re-reads after the 10 s window of its kind; a page inside a block of 50 read less
    than 60 s ago costs nothing. Every row is checked with `row_fits` before anything is shown.
    """

    def __init__(
        self,
        bitrix: BitrixClient,
        clock: Any,
        reads: SharedReads,
        on_ignored_filter: Callable[[], Awaitable[None]],
    ) -> None:
        self._bitrix = bitrix
        self._clock = clock
        self._reads = reads
        self._on_ignored_filter = on_ignored_filter

    @staticmethod
    def _window(refresh: bool) -> float:
        return WINDOW_SECONDS if refresh else BLOCK_FREE_SECONDS

    @staticmethod
    def _key(bitrix_user_id: int, role: str, block_start: int, viewer: int | None) -> tuple[int, tuple]:
        """(whose cap, read key): a head's read of a team member's list counts against the head (SPEC 11, 12)."""
        if viewer is None or viewer == bitrix_user_id:
            return bitrix_user_id, ("tasks", role, block_start)
        return viewer, ("person", bitrix_user_id, role, block_start)

    def refused(self, bitrix_user_id: int, role: str, page: int, *, refresh: bool, viewer: int | None = None) -> float | None:
        """Seconds to wait when this read would pass the viewer's per-minute cap, else None."""
        cap, key = self._key(bitrix_user_id, role, block_of(page), viewer)
        return self._reads.refused(cap, key, self._window(refresh))

    async def page(
        self, bitrix_user_id: int, role: str, page: int, *, refresh: bool, viewer: int | None = None
    ) -> TaskListView:
        """The page of `bitrix_user_id`'s list to show (clamped to the last one), read for `viewer` (default: that user).

        Raises TaskListsUnavailable, BitrixError, TooManyReads.
        """
        block_start = block_of(page)
        cap, key = self._key(bitrix_user_id, role, block_start, viewer)

        async def fetch() -> TaskPage:
            now = self._clock.now()
            found = await self._bitrix.overdue_tasks(
                bitrix_user_id, role, now, start=block_start, deadline=INTERACTIVE_DEADLINE
            )
            if any(not row_fits(task, bitrix_user_id, role, now) for task in found.tasks):
                await self._on_ignored_filter()
                raise TaskListsUnavailable(role)
            return found

        read = await self._reads.read(cap, key, self._window(refresh), fetch)
        found: TaskPage = read.value
        total = found.total if found.total is not None else block_start + len(found.tasks)
        last_page = page_count(total) - 1
        if page > last_page and block_of(last_page) != block_start:
            return await self.page(bitrix_user_id, role, last_page, refresh=False, viewer=viewer)
        return TaskListView(
            role=role, page=min(page, last_page), block_start=block_start, block=found.tasks, total=total,
            read_at=read.read_at, cached=read.cached,
        )
