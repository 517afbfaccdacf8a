"""Pure rendering of messages and inline keyboards from data (counters, settings, digests, alerts)."""

from __future__ import annotations

import html
import re
from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.alerts import Alert
from bot.bitrix import BitrixUser, CounterResult, Counters, NoAccess
from bot.errors import BitrixError
from bot.model import HIDDEN_COUNTERS, ROLE_ALIASES, ROLES, UserSettings
from bot.texts import Html, counter_label, days_label, role_label, t

MAX_TEXT = 4096
ROLE_SHORT = {role: short for short, role in ROLE_ALIASES.items()}
EVERY_ROLE = "every"
KNOWN_ORDER = ("expired", "new_comments")


def visible(text: str) -> int:
    """A message's length as Telegram counts it: after entity parsing, in UTF-16 code units (an emoji is 2)."""
    return len(html.unescape(re.sub(r"<[^>]*>", "", text)).encode("utf-16-le")) // 2


def fit(text: str) -> str:
    """Keep a message within Telegram's 4096 visible characters by dropping whole trailing lines."""
    if visible(text) <= MAX_TEXT:
        return text
    lines = text.split("\n")
    while lines and visible("\n".join(lines) + "\n…") > MAX_TEXT:
        lines.pop()
    return "\n".join(lines) + "\n…"


def tasks_url(portal_url: str, bitrix_user_id: int) -> str:
    """The user's task list in the portal."""
    return f"{portal_url.rstrip('/')}/company/personal/user/{bitrix_user_id}/tasks/"


def counter_items(counters: Counters) -> list[tuple[str, int]]:
    """Shown counters in a stable order: the documented ones first, unknown names after, `total` hidden."""
    names = [n for n in KNOWN_ORDER] + sorted(n for n in counters.values if n not in KNOWN_ORDER and n not in HIDDEN_COUNTERS)
    return [(n, counters.get(n)) for n in names]


def _delta(value: int, before: int | None) -> str:
    if before is None or before == value:
        return ""
    return f" ({value - before:+d})"


def role_line(
    lang: str, role: str, result: CounterResult, previous: Mapping[str, int] | None = None, compare: bool = False
) -> str:
    """One role's counters on one line; no access and errors are said plainly, never as zeros."""
    label = f"<b>{html.escape(role_label(lang, role))}</b>"
    if isinstance(result, NoAccess):
        return f"{label}: {t(lang, 'counters_no_access')}"
    if isinstance(result, BitrixError):
        return f"{label}: {html.escape(result.text(lang))}"
    parts = []
    for name, value in counter_items(result):
        before = (previous or {}).get(name, 0) if compare else None
        parts.append(f"{html.escape(counter_label(lang, name))} {value}{_delta(value, before)}")
    return f"{label}: " + (" · ".join(parts) if parts else t(lang, "counters_none"))


def render_counters(
    lang: str,
    results: Mapping[str, CounterResult],
    roles: Sequence[str],
    *,
    full_name: str,
    read_at: datetime,
    cached: bool,
    portal_url: str,
    bitrix_user_id: int,
) -> str:
    """The /counters message: every asked role, 'updated HH:MM' and one link to the task list."""
    lines = [f"{t(lang, 'counters_title')} · {html.escape(full_name)}"]
    lines += [role_line(lang, role, results[role]) for role in roles if role in results]
    stamp = read_at.strftime("%H:%M")
    footer = t(lang, "counters_cached", time=stamp) if cached else t(lang, "counters_updated", time=stamp)
    lines.append(f"<i>{footer}</i>")
    lines.append(f'<a href="{html.escape(tasks_url(portal_url, bitrix_user_id))}">{t(lang, "counters_open")}</a>')
    return fit("\n".join(lines))


def overdue_buttons(lang: str, results: Mapping[str, CounterResult], roles: Sequence[str]) -> list[list[InlineKeyboardButton]]:
    """One "Overdue: <role> (N)" button per shown role with overdue tasks (SPEC 11): t:<role>:0, edited in place."""
    buttons = [
        InlineKeyboardButton(
            t(lang, "button_overdue_role", role=role_label(lang, role), n=result.get("expired")),
            callback_data=f"t:{ROLE_SHORT[role]}:0",
        )
        for role in roles
        if isinstance(result := results.get(role), Counters) and result.get("expired") > 0
    ][:5]
    return [buttons[i : i + 2] for i in range(0, len(buttons), 2)]


def counters_keyboard(
    lang: str, current: str, results: Mapping[str, CounterResult] | None = None, roles: Sequence[str] = ()
) -> InlineKeyboardMarkup:
    """Overdue-list buttons, role buttons and Refresh; callback data is t:…, c:<role short name> or c:every."""
    row1 = [
        InlineKeyboardButton(("• " if ROLE_SHORT[r] == current else "") + role_label(lang, r), callback_data=f"c:{ROLE_SHORT[r]}")
        for r in ROLES[:3]
    ]
    row2 = [
        InlineKeyboardButton(("• " if ROLE_SHORT[r] == current else "") + role_label(lang, r), callback_data=f"c:{ROLE_SHORT[r]}")
        for r in ROLES[3:]
    ]
    row3 = [
        InlineKeyboardButton(("• " if current == EVERY_ROLE else "") + t(lang, "button_all_roles"), callback_data=f"c:{EVERY_ROLE}"),
        InlineKeyboardButton(t(lang, "button_refresh"), callback_data=f"c:{current}"),
    ]
    return InlineKeyboardMarkup([*overdue_buttons(lang, results or {}, roles), row1, row2, row3])


def zone_label(settings: UserSettings) -> str:
    """The user's zone as shown: IANA name or UTC+03:00."""
    return settings.timezone


def digest_value(lang: str, settings: UserSettings) -> str:
    """'09:00, Mon–Fri' or 'off'."""
    if not settings.digest_enabled:
        return t(lang, "settings_off")
    return t(lang, "settings_digest_on", time=settings.digest_time.strftime("%H:%M"), days=Html(days_label(lang, settings.digest_days)))


def alerts_value(lang: str, settings: UserSettings) -> str:
    """'on: Overdue ≥ 1' or 'off (Overdue ≥ 1)'."""
    items = [
        t(lang, "settings_threshold", counter=counter_label(lang, c), threshold=v)
        for c, v in sorted(settings.thresholds.items(), key=lambda kv: KNOWN_ORDER.index(kv[0]) if kv[0] in KNOWN_ORDER else 9)
    ]
    listing = ", ".join(items) if items else t(lang, "settings_no_thresholds")
    state = t(lang, "settings_on") if settings.alerts_enabled else t(lang, "settings_off")
    return f"{state}: {listing}"


def quiet_value(lang: str, settings: UserSettings) -> str:
    """'22:00–07:00' or 'off'."""
    if settings.quiet_start is None or settings.quiet_end is None:
        return t(lang, "settings_off")
    return f"{settings.quiet_start:%H:%M}–{settings.quiet_end:%H:%M}"


def render_settings(lang: str, settings: UserSettings, *, full_name: str | None) -> str:
    """The /settings message."""
    lines = [t(lang, "settings_title") + (f" · {html.escape(full_name)}" if full_name else "")]
    lines.append(t(lang, "settings_digest", value=Html(digest_value(lang, settings))))
    lines.append(
        t(lang, "settings_empty", value=t(lang, "settings_empty_send") if settings.digest_empty else t(lang, "settings_empty_skip"))
    )
    lines.append(t(lang, "settings_tasks", value=t(lang, "settings_on") if settings.digest_tasks else t(lang, "settings_off")))
    lines.append(t(lang, "settings_team", value=t(lang, "settings_on") if settings.digest_team else t(lang, "settings_off")))
    lines.append(t(lang, "settings_alerts", value=Html(alerts_value(lang, settings))))
    lines.append(t(lang, "settings_quiet", value=quiet_value(lang, settings)))
    lines.append(t(lang, "settings_zone", value=zone_label(settings)))
    lines.append(t(lang, "settings_language"))
    if settings.pause_until:
        lines.append(t(lang, "settings_pause", date=settings.pause_until.isoformat()))
    lines.append(f"<i>{t(lang, 'settings_hint')}</i>")
    return "\n".join(lines)


def settings_keyboard(lang: str, settings: UserSettings) -> InlineKeyboardMarkup:
    """Toggles for what a button does better than typing."""
    rows = [
        [
            InlineKeyboardButton(
                t(lang, "button_digest_off" if settings.digest_enabled else "button_digest_on"),
                callback_data="s:digest_off" if settings.digest_enabled else "s:digest_on",
            ),
            InlineKeyboardButton(
                t(lang, "button_alerts_off" if settings.alerts_enabled else "button_alerts_on"),
                callback_data="s:alerts_off" if settings.alerts_enabled else "s:alerts_on",
            ),
        ],
        [
            InlineKeyboardButton(
                t(lang, "button_empty_off" if settings.digest_empty else "button_empty_on"),
                callback_data="s:empty_off" if settings.digest_empty else "s:empty_on",
            ),
            InlineKeyboardButton(
                t(lang, "button_tasks_off" if settings.digest_tasks else "button_tasks_on"),
                callback_data="s:tasks_off" if settings.digest_tasks else "s:tasks_on",
            ),
        ],
        [
            InlineKeyboardButton(
                t(lang, "button_team_off" if settings.digest_team else "button_team_on"),
                callback_data="s:team_off" if settings.digest_team else "s:team_on",
            ),
            InlineKeyboardButton("English" if lang == "ru" else "Русский", callback_data="s:lang_en" if lang == "ru" else "s:lang_ru"),
        ],
    ]
    extra = []
    if settings.quiet_start is not None:
        extra.append(InlineKeyboardButton(t(lang, "button_quiet_off"), callback_data="s:quiet_off"))
    if settings.pause_until is not None:
        extra.append(InlineKeyboardButton(t(lang, "button_resume"), callback_data="s:resume"))
    if extra:
        rows.append(extra)
    return InlineKeyboardMarkup(rows)


def render_digest(
    lang: str,
    results: Mapping[str, CounterResult],
    previous: Mapping[str, Mapping[str, int]] | None,
    previous_date: date | None,
    *,
    scheduled: bool,
    read_at: datetime,
    portal_url: str,
    bitrix_user_id: int,
    quiet_items: Sequence[Alert] = (),
    task_lines: Sequence[str] = (),
    team_line: str | None = None,
) -> str:
    """A digest: every role, with the change since the last scheduled digest that was sent, and the most overdue tasks."""
    lines: list[str] = [t(lang, "digest_title" if scheduled else "digest_now_title")]
    compare = previous is not None
    for role in ROLES:
        if role in results:
            lines.append(role_line(lang, role, results[role], (previous or {}).get(role), compare=compare))
    if task_lines:
        lines.append(t(lang, "digest_tasks_title"))
        lines += task_lines
    lines.append(
        f"<i>{t(lang, 'digest_since', date=previous_date.isoformat())}</i>" if previous_date else f"<i>{t(lang, 'digest_first')}</i>"
    )
    if quiet_items:
        lines.append(t(lang, "digest_quiet_folded"))
        lines += [quiet_line(lang, a) for a in quiet_items]
    lines.append(f"<i>{t(lang, 'counters_updated', time=read_at.strftime('%H:%M'))}</i>")
    lines.append(f'<a href="{html.escape(tasks_url(portal_url, bitrix_user_id))}">{t(lang, "counters_open")}</a>')
    if team_line:
        lines.append(team_line)  # a head's digest ends with the team line (SPEC 12)
    return fit("\n".join(lines))


def quiet_line(lang: str, alert: Alert) -> str:
    """One held counter in a quiet-hours summary."""
    return t(lang, "quiet_item", counter=counter_label(lang, alert.counter), value=alert.value, threshold=alert.threshold)


def render_alert(lang: str, alert: Alert, *, portal_url: str, bitrix_user_id: int) -> str:
    """An alert message."""
    text = t(lang, "alert", counter=counter_label(lang, alert.counter), value=alert.value, threshold=alert.threshold)
    return f'{text}\n<a href="{html.escape(tasks_url(portal_url, bitrix_user_id))}">{t(lang, "counters_open")}</a>'


def alert_keyboard(lang: str, counter: str) -> InlineKeyboardMarkup:
    """Snooze buttons for one counter (z:<counter>:h, z:<counter>:t); under an overdue alert, its task list too."""
    rows = [
        [
            InlineKeyboardButton(t(lang, "button_snooze_hour"), callback_data=f"z:{counter}:h"),
            InlineKeyboardButton(t(lang, "button_snooze_tomorrow"), callback_data=f"z:{counter}:t"),
        ]
    ]
    if counter == "expired":
        rows.append([overdue_list_button(lang)])
    return InlineKeyboardMarkup(rows)


def overdue_list_button(lang: str) -> InlineKeyboardButton:
    """Opens the overdue list of all roles as a new message, so the message it sits under stays (tn:<role>)."""
    return InlineKeyboardButton(t(lang, "button_overdue_list"), callback_data="tn:all")


def render_quiet_summary(lang: str, items: Sequence[Alert]) -> str:
    """The end-of-quiet-hours message."""
    return "\n".join([t(lang, "quiet_summary")] + [quiet_line(lang, a) for a in items])


def short_names(people: Iterable[BitrixUser]) -> dict[int, str]:
    """First names (team lines, "By person"); a last-name initial where two of these people share a first name."""
    users = list(people)
    firsts = Tally((u.first_name or u.full_name).casefold() for u in users)
    out = {}
    for u in users:
        first = u.first_name or u.full_name
        if firsts[first.casefold()] > 1 and u.last_name:
            first = f"{first} {u.last_name[0]}."
        out[u.bitrix_user_id] = first
    return out
