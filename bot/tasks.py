"""Pure rules about the tasks behind a counter (SPEC 11): which listed rows belong to a user's role."""

from __future__ import annotations

from datetime import datetime

from bot.bitrix.results import Task

__all__ = ["OVERDUE_STATUSES", "row_fits"]

# Real statuses the `expired` counter counts: 2 pending, 3 in progress (reference 1.1).
OVERDUE_STATUSES = frozenset({2, 3})


def row_fits(task: Task, bitrix_user_id: int, role: str, now: datetime) -> bool:
    """Whether a listed row is one the role's `expired` counter could count: member in the role, status 2/3, deadline before now.

    Bitrix24 silently ignores filter keys it does not know and the admin's webhook sees
    every task, so one row that does not fit means the portal did not apply the filter.
    """
    if task.status not in OVERDUE_STATUSES or task.deadline is None or not task.deadline < now:
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
