"""Pure: the messages of a project chat (SPEC 13): the offer, the view, the digest, "By person"."""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.bitrix.results import Task
from bot.model import UserSettings
from bot.tasklist import PROJECT_MAX, TITLE_MAX, cut, fit_lines, overdue_age
from bot.texts import Html, days_label, t

VIEW_TASKS = 10
DIGEST_TASKS = 5
NAME_MAX = 40

# Callback data: the only buttons that work in groups. Offers carry only the offer's id.
CONNECT = "pj:c:"
CANCEL = "pj:x:"
REFRESH = "pj:r"


def group_task_url(portal_url: str, group_id: int, task_id: int) -> str:
    """A task in a project (reference 1.6)."""
    return f"{portal_url.rstrip('/')}/workgroups/group/{group_id}/tasks/task/view/{task_id}/"


def by_person(lang: str, tasks: Sequence[Task], short: Mapping[int, str]) -> str:
    """`By person: Anna 3 · Boris 1` from the tasks' responsible people, most first."""
    counts = Counter(task.responsible_id for task in tasks if task.responsible_id is not None)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], short.get(item[0], ""), item[0]))
    parts = [f"{html.escape(cut(short.get(i, f'#{i}'), NAME_MAX))} {n}" for i, n in ordered]
    return t(lang, "project_by_person", people=Html(" · ".join(parts)))


def project_task_line(
    lang: str, task: Task, group_id: int, names: Mapping[int, str], *, portal_url: str, now: datetime
) -> str:
    """`<a href="…">title</a> — overdue by 3 d · Anna Smith`."""
    title = html.escape(cut(task.title, TITLE_MAX) or t(lang, "tasks_untitled", id=task.task_id))
    link = f'<a href="{html.escape(group_task_url(portal_url, group_id, task.task_id))}">{title}</a>'
    parts = [link]
    if task.deadline is not None:
        parts.append(" — " + t(lang, "tasks_overdue_by", age=overdue_age(lang, task.deadline, now)))
    if task.responsible_id is not None:
        name = names.get(task.responsible_id, f"#{task.responsible_id}")
        parts.append(" · " + html.escape(cut(name, NAME_MAX)))
    return "".join(parts)


def render_view(
    lang: str, group_id: int, group_name: str, tasks: Sequence[Task], names: Mapping[int, str],
    short: Mapping[int, str], *, total: int | None = None, portal_url: str, now: datetime, read_at: datetime,
) -> str:
    """The on-demand view: name, count, the 10 most overdue with their responsible person, By person, when read."""
    name = cut(group_name, PROJECT_MAX)
    updated = "<i>" + t(lang, "counters_updated", time=read_at.strftime("%H:%M")) + "</i>"
    if not tasks:
        return "\n".join([t(lang, "project_view_none", project=name), updated])
    head: list[str] = [t(lang, "project_view_title", project=name, n=max(total or 0, len(tasks)))]
    items = [
        project_task_line(lang, task, group_id, names, portal_url=portal_url, now=now) for task in tasks[:VIEW_TASKS]
    ]
    return fit_lines(head, items, [by_person(lang, tasks, short), updated])


def render_digest(
    lang: str, group_id: int, group_name: str, tasks: Sequence[Task], names: Mapping[int, str],
    short: Mapping[int, str], previous: int | None, *, total: int | None = None, portal_url: str, now: datetime,
) -> str:
    """The project digest: name, count with the change since the last digest sent, the 5 most overdue, By person."""
    name = cut(group_name, PROJECT_MAX)
    count = max(total or 0, len(tasks))
    change = ""
    if previous is not None and previous != count:
        change = " " + t(lang, "project_digest_change", delta=f"{count - previous:+d}")
    if not tasks:
        return t(lang, "project_digest_none", project=name) + change
    head: list[str] = [t(lang, "project_digest_title", project=name, n=count) + change]
    items = [
        project_task_line(lang, task, group_id, names, portal_url=portal_url, now=now) for task in tasks[:DIGEST_TASKS]
    ]
    return fit_lines(head, items, [by_person(lang, tasks, short)])


def render_offer(lang: str, group_name: str, settings: UserSettings, *, opened: bool) -> str:
    """What the chat will see once connected; in bold when the project is not open."""
    text = t(
        lang, "project_offer", project=cut(group_name, PROJECT_MAX), time=settings.digest_time.strftime("%H:%M"),
        days=Html(days_label(lang, settings.digest_days)), zone=settings.timezone,
    )
    if not opened:
        text = Html(text + "\n\n<b>" + t(lang, "project_offer_not_open") + "</b>")
    return text


def offer_keyboard(lang: str, offer_id: int) -> InlineKeyboardMarkup:
    """Connect / Cancel, carrying only the offer's id."""
    return InlineKeyboardMarkup([[
        InlineKeyboardButton(t(lang, "button_connect"), callback_data=f"{CONNECT}{offer_id}"),
        InlineKeyboardButton(t(lang, "button_cancel"), callback_data=f"{CANCEL}{offer_id}"),
    ]])


def refresh_keyboard(lang: str) -> InlineKeyboardMarkup:
    """The project view's refresh."""
    return InlineKeyboardMarkup([[InlineKeyboardButton(t(lang, "button_refresh"), callback_data=REFRESH)]])


def parse_offer_callback(data: str) -> tuple[str, int] | None:
    """`pj:c:<id>` / `pj:x:<id>` as ("connect" | "cancel", id); None if forged."""
    for prefix, action in ((CONNECT, "connect"), (CANCEL, "cancel")):
        if data.startswith(prefix):
            rest = data[len(prefix):]
            if rest.isdigit() and len(rest) <= 12:
                return action, int(rest)
    return None
