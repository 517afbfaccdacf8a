"""Pure: the team view of SPEC section 12 (a head's people and their counters), its buttons and the digest's team line."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.bitrix import BitrixUser, Counters
from bot.render import ROLE_SHORT, fit, short_names
from bot.texts import Html, t

MAX_DEPARTMENT_NAMES = 5
MAX_LINES = 30
MAX_BUTTONS = 10
MAX_DIGEST_NAMES = 5
DOING = "view_role_responsible"  # a person's button opens the tasks they are responsible for (SPEC 12)


@dataclass(frozen=True)
class Member:
    """One person of a head's team and their view_all counters (None: could not be read)."""

    user: BitrixUser
    counters: Counters | None

    @property
    def overdue(self) -> int:
        """Their `expired` counter, 0 when unknown."""
        return self.counters.get("expired") if self.counters is not None else 0

    @property
    def comments(self) -> int:
        """Their `new_comments` counter, 0 when unknown."""
        return self.counters.get("new_comments") if self.counters is not None else 0


@dataclass(frozen=True)
class TeamView:
    """A head's team as shown: the departments (head's own first), the people, when it was read."""

    department_names: tuple[str, ...]
    members: tuple[Member, ...]
    read_at: float

    def member(self, bitrix_user_id: int) -> Member | None:
        """The member with this Bitrix24 ID, if they are on the team."""
        return next((m for m in self.members if m.user.bitrix_user_id == bitrix_user_id), None)


def ranked(members: Sequence[Member]) -> list[Member]:
    """Most overdue first, then most new comments, then by name."""
    return sorted(members, key=lambda m: (-m.overdue, -m.comments, m.user.full_name.casefold(), m.user.bitrix_user_id))


def _departments_line(lang: str, names: Sequence[str]) -> str:
    shown = ", ".join(html.escape(name or "—") for name in names[:MAX_DEPARTMENT_NAMES])
    if len(names) > MAX_DEPARTMENT_NAMES:
        shown += t(lang, "team_more_departments", n=len(names) - MAX_DEPARTMENT_NAMES)
    return shown


def member_line(lang: str, member: Member) -> str:
    """`Anna Petrova — overdue 3 · new comments 5` (a zero counter left out)."""
    parts = []
    if member.overdue:
        parts.append(t(lang, "team_overdue", n=member.overdue))
    if member.comments:
        parts.append(t(lang, "team_comments", n=member.comments))
    return f"{html.escape(member.user.full_name)} — " + " · ".join(parts)


def render_team(lang: str, view: TeamView) -> str:
    """The /team message: departments, the number of people, one line per person with something to show."""
    lines: list[str] = [t(lang, "team_title", departments=Html(_departments_line(lang, view.department_names)), n=len(view.members))]
    if not view.members:
        lines.append(t(lang, "team_empty"))
        return "\n".join(lines)
    unread = [m for m in view.members if m.counters is None]
    showing = [m for m in ranked(view.members) if m.counters is not None and (m.overdue or m.comments)]
    quiet = len(view.members) - len(showing) - len(unread)
    lines += [member_line(lang, m) for m in showing[:MAX_LINES]]
    if len(showing) > MAX_LINES:
        lines.append(t(lang, "team_more_busy", n=len(showing) - MAX_LINES))
    if quiet:
        lines.append(t(lang, "team_more_quiet", n=quiet))
    if unread:
        lines.append(t(lang, "team_unread", n=len(unread)))
    return fit("\n".join(lines))


def team_keyboard(lang: str, view: TeamView) -> InlineKeyboardMarkup:
    """One button per person with overdue tasks (up to 10), opening their `doing` list; refresh."""
    buttons = [
        InlineKeyboardButton(
            t(lang, "button_team_person", name=m.user.full_name, n=m.overdue),
            callback_data=f"t:{ROLE_SHORT[DOING]}:0:{m.user.bitrix_user_id}",
        )
        for m in ranked(view.members)
        if m.overdue > 0
    ][:MAX_BUTTONS]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    rows.append([InlineKeyboardButton(t(lang, "button_refresh"), callback_data="tm:r")])
    return InlineKeyboardMarkup(rows)


def digest_team_line(lang: str, members: Sequence[Member]) -> str:
    """`Team: 5 overdue across 2 of 14 people (Anna 3, Boris 2)`, or that nothing is overdue."""
    behind = [m for m in ranked(members) if m.overdue > 0]
    if not behind:
        return t(lang, "digest_team_clear", people=len(members))
    names = short_names(m.user for m in members)
    listed = ", ".join(f"{html.escape(names[m.user.bitrix_user_id])} {m.overdue}" for m in behind[:MAX_DIGEST_NAMES])
    if len(behind) > MAX_DIGEST_NAMES:
        listed += ", …"
    return t(
        lang, "digest_team", overdue=sum(m.overdue for m in behind), behind=len(behind), people=len(members),
        names=Html(listed),
    )
