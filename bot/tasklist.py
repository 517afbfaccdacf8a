"""Pure: the overdue-task list message of SPEC section 11 (one page of up to 10 tasks) and its buttons.

Bitrix24 answers pages of 50 tasks; the bot shows pages of 10 out of such a block, most overdue
first (the read orders by DEADLINE then ID). Callback data carries the role and the page only,
never the viewer: the viewer is the presser's current link, checked on every press.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.render import MAX_TEXT, ROLE_SHORT, visible
from bot.texts import role_label, t

PAGE_SIZE = 10
BLOCK_SIZE = 50  # one tasks.task.list page
TITLE_MAX = 80  # code points, cut before HTML escaping
PROJECT_MAX = 40


class ListedTask(Protocol):
    """What the list shows of a task (bot.bitrix's Task has these fields)."""

    @property
    def task_id(self) -> int:
        """The task's ID."""

    @property
    def title(self) -> str:
        """Its title, as Bitrix24 gave it."""

    @property
    def deadline(self) -> datetime | None:
        """Its deadline (aware), if any."""

    @property
    def group_id(self) -> int | None:
        """Its project, if any."""

    @property
    def group_name(self) -> str | None:
        """Its project's name, if known."""


def cut(text: str, limit: int) -> str:
    """At most `limit` code points, the last one "…" when cut."""
    text = " ".join(text.split())  # a title may carry newlines: one line per task
    return text if len(text) <= limit else text[: limit - 1] + "…"


def overdue_age(lang: str, deadline: datetime, now: datetime) -> str:
    """How long ago the deadline passed: "N min" under an hour, "N h" under a day, else "N d"."""
    seconds = max(0.0, (now - deadline).total_seconds())
    if seconds < 3600:
        return t(lang, "tasks_age_minutes", n=max(1, int(seconds // 60)))
    if seconds < 86400:
        return t(lang, "tasks_age_hours", n=int(seconds // 3600))
    return t(lang, "tasks_age_days", n=int(seconds // 86400))


def task_url(portal_url: str, viewer_bitrix_id: int, task: ListedTask) -> str:
    """The task's page: under its project when it has one, else under the viewer's tasks."""
    root = portal_url.rstrip("/")
    if task.group_id:
        return f"{root}/workgroups/group/{task.group_id}/tasks/task/view/{task.task_id}/"
    return f"{root}/company/personal/user/{viewer_bitrix_id}/tasks/task/view/{task.task_id}/"


def task_line(lang: str, task: ListedTask, *, portal_url: str, viewer_bitrix_id: int, now: datetime) -> str:
    """`<a href="…">title</a> — overdue by 3 d · project`."""
    title = html.escape(cut(task.title, TITLE_MAX) or t(lang, "tasks_untitled", id=task.task_id))
    link = f'<a href="{html.escape(task_url(portal_url, viewer_bitrix_id, task))}">{title}</a>'
    parts = [link]
    if task.deadline is not None:
        parts.append(" — " + t(lang, "tasks_overdue_by", age=overdue_age(lang, task.deadline, now)))
    if task.group_name:
        parts.append(" · " + html.escape(cut(task.group_name, PROJECT_MAX)))
    return "".join(parts)


def page_count(total: int) -> int:
    """How many pages of PAGE_SIZE a list of `total` tasks makes (at least one)."""
    return max(1, -(-total // PAGE_SIZE))


def block_of(page: int) -> int:
    """The `start` of the Bitrix24 page of 50 that holds this page of 10."""
    return (page * PAGE_SIZE) // BLOCK_SIZE * BLOCK_SIZE


def render_task_page(
    lang: str,
    role: str,
    block: Sequence[ListedTask],
    *,
    block_start: int,
    page: int,
    total: int,
    counter: int | None,
    portal_url: str,
    viewer_bitrix_id: int,
    now: datetime,
) -> str:
    """One page of the list: header, up to 10 task lines, and the footer when list and counter differ.

    `block` is the Bitrix24 page of 50 starting at `block_start` that holds `page`; `total` is the
    list's total; `counter` the `expired` counter last read for the role (None when unknown).
    """
    label = role_label(lang, role)  # t() escapes it
    head: list[str] = []
    items: list[str] = []
    tail: list[str] = []
    if total == 0:
        head.append(t(lang, "tasks_none", role=label))
    else:
        head.append(t(lang, "tasks_title", role=label, n=total))
        first = page * PAGE_SIZE - block_start
        shown = block[first : first + PAGE_SIZE]
        items = [task_line(lang, task, portal_url=portal_url, viewer_bitrix_id=viewer_bitrix_id, now=now) for task in shown]
        if page_count(total) > 1:
            tail.append(t(lang, "tasks_page", page=page + 1, pages=page_count(total)))
    if counter is not None and counter != total:
        tail.append("<i>" + t(lang, "tasks_count_differs", listed=total, counter=counter) + "</i>")
    return fit_lines(head, items, tail)


def fit_lines(head: list[str], items: list[str], tail: list[str]) -> str:
    """Join the lines, dropping task lines from the end until Telegram's 4096 UTF-16 units fit."""
    items = list(items)
    while True:
        text = "\n".join([*head, *items, *tail])
        if visible(text) <= MAX_TEXT or not items:
            return text
        items.pop()


def task_keyboard(
    lang: str, role: str, page: int, total: int, *, back_to_counters: bool, person: int | None = None
) -> InlineKeyboardMarkup:
    """Previous / next page when there are more, refresh, and the way back to the counters (or the team, for a person's list)."""
    short = ROLE_SHORT[role]
    tail = f":{person}" if person is not None else ""
    row = []
    if page > 0:
        row.append(InlineKeyboardButton(t(lang, "button_previous"), callback_data=f"t:{short}:{page - 1}{tail}"))
    if page + 1 < page_count(total):
        row.append(InlineKeyboardButton(t(lang, "button_next"), callback_data=f"t:{short}:{page + 1}{tail}"))
    rows = [row] if row else []
    last = [InlineKeyboardButton(t(lang, "button_refresh"), callback_data=f"tr:{short}:{page}{tail}")]
    if person is not None:
        last.append(InlineKeyboardButton(t(lang, "button_back_to_team"), callback_data="tm:v"))
    elif back_to_counters:
        last.append(InlineKeyboardButton(t(lang, "button_back_to_counters"), callback_data="c:every"))
    rows.append(last)
    return InlineKeyboardMarkup(rows)


def parse_callback(data: str) -> tuple[str, int, bool, int | None] | None:
    """`t:<role>:<page>[:<person>]` (open or page) or `tr:…` (refresh) as (role, page, refresh, person); None if forged.

    The person (SPEC 12) is a team member's Bitrix24 ID; the viewer is never in the data.
    """
    parts = data.split(":")
    if len(parts) not in (3, 4) or parts[0] not in ("t", "tr") or not parts[2].isdigit() or len(parts[2]) > 4:
        return None
    person: int | None = None
    if len(parts) == 4:
        if not parts[3].isdigit() or len(parts[3]) > 10 or int(parts[3]) <= 0:
            return None
        person = int(parts[3])
    role = {short: r for r, short in ROLE_SHORT.items()}.get(parts[1])
    if role is None or (person is not None and role != "view_role_responsible"):
        return None  # a team member's list is their `doing` list only: other roles stay counts (SPEC 12)
    return role, int(parts[2]), parts[0] == "tr", person
