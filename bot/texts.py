"""Every user-facing string, in English and Russian; values are HTML-escaped when filled in."""

from __future__ import annotations

import html
from typing import Any

LANGUAGES = ("en", "ru")


class Html(str):
    """Text that is already valid Telegram HTML and must not be escaped again."""


def pick_language(choice: str | None, telegram_code: str | None, default: str) -> str:
    """The user's /language choice, else Telegram's language_code when en or ru, else the default."""
    if choice in LANGUAGES:
        return choice  # type: ignore[return-value]
    code = (telegram_code or "").split("-")[0].lower()
    return code if code in LANGUAGES else default


def t(lang: str, key: str, **values: Any) -> Html:
    """The text `key` in `lang`, with values escaped for Telegram HTML."""
    entry = TEXTS[key]
    template = entry.get(lang) or entry["en"]
    safe = {k: v if isinstance(v, Html) else html.escape(str(v), quote=False) for k, v in values.items()}
    return Html(template.format(**safe) if safe else template)


# Commands shown in Telegram's menu (setMyCommands), per language.
COMMANDS: dict[str, list[tuple[str, str]]] = {
    "en": [
        ("counters", "My task counters"),
        ("settings", "Digest, alerts, quiet hours, time zone"),
        ("digest", "Morning digest: time, days, now"),
        ("alerts", "Alert thresholds"),
        ("quiet", "Quiet hours"),
        ("timezone", "Time zone"),
        ("language", "Language"),
        ("pause", "Pause digests and alerts"),
        ("resume", "End the pause"),
        ("link", "Link your Bitrix24 account"),
        ("unlink", "Unlink your account"),
        ("forget", "Delete everything about me"),
        ("help", "What the bot can do"),
    ],
    "ru": [
        ("counters", "Мои счётчики задач"),
        ("settings", "Сводка, оповещения, тихие часы, часовой пояс"),
        ("digest", "Утренняя сводка: время, дни, сейчас"),
        ("alerts", "Пороги оповещений"),
        ("quiet", "Тихие часы"),
        ("timezone", "Часовой пояс"),
        ("language", "Язык"),
        ("pause", "Приостановить сводки и оповещения"),
        ("resume", "Снять паузу"),
        ("link", "Привязать аккаунт Битрикс24"),
        ("unlink", "Отвязать аккаунт"),
        ("forget", "Удалить все данные обо мне"),
        ("help", "Что умеет бот"),
    ],
}

TEXTS: dict[str, dict[str, str]] = {
    "start": {
        "en": (
            "Hello! I bring your Bitrix24 task counters to Telegram: overdue tasks and unread comments, "
            "on demand, as a morning digest and as alerts.\n\n"
            "First link your account: <code>/link 547</code>, <code>/link you@company.com</code> or "
            "<code>/link https://portal/company/personal/user/547/</code>.\n\nSee /help for everything else."
        ),
        "ru": (
            "Привет! Я показываю ваши счётчики задач Битрикс24 в Telegram: просроченные задачи и новые "
            "комментарии — по запросу, утренней сводкой и оповещениями.\n\n"
            "Сначала привяжите аккаунт: <code>/link 547</code>, <code>/link you@company.com</code> или "
            "<code>/link https://portal/company/personal/user/547/</code>.\n\nОстальное — в /help."
        ),
    },
    "start_linked": {
        "en": "Hello, {name}! Your account is linked. /counters shows your counters, /settings your settings.",
        "ru": "Здравствуйте, {name}! Аккаунт привязан. /counters — счётчики, /settings — настройки.",
    },
    "help": {
        "en": (
            "<b>Commands</b>\n"
            "/counters [all|doing|helping|following|created] — your task counters\n"
            "/link &lt;ID | e-mail | profile URL&gt; — link your Bitrix24 account\n"
            "/verify 123456 — confirm the code sent to you in Bitrix24\n"
            "/settings — all settings with buttons\n"
            "/digest 9:00 mon-fri | off | on | now | empty on|off\n"
            "/alerts overdue 3 | comments 10 | overdue off | off | on\n"
            "/quiet 22:00-08:00 | off\n"
            "/timezone Europe/Moscow | UTC+3\n"
            "/language en | ru\n"
            "/pause 7 | 2026-12-31, /resume\n"
            "/unlink — stop all messages; /forget — also delete everything about you"
        ),
        "ru": (
            "<b>Команды</b>\n"
            "/counters [all|doing|helping|following|created] — счётчики задач\n"
            "/link &lt;ID | e-mail | ссылка на профиль&gt; — привязать аккаунт Битрикс24\n"
            "/verify 123456 — подтвердить код, пришедший вам в Битрикс24\n"
            "/settings — все настройки с кнопками\n"
            "/digest 9:00 пн-пт | off | on | now | empty on|off\n"
            "/alerts overdue 3 | comments 10 | overdue off | off | on\n"
            "/quiet 22:00-08:00 | off\n"
            "/timezone Europe/Moscow | UTC+3\n"
            "/language en | ru\n"
            "/pause 7 | 2026-12-31, /resume\n"
            "/unlink — прекратить все сообщения; /forget — ещё и удалить все данные о вас"
        ),
    },
    "private_bot": {
        "en": "Sorry, this bot is private to one company. Ask your Bitrix24 administrator for access.",
        "ru": "Извините, этот бот работает только для сотрудников одной компании. Обратитесь к администратору Битрикс24.",
    },
    "group_refusal": {
        "en": "Write to me in private: I never show personal data in a group.",
        "ru": "Напишите мне в личные сообщения: в группе я не показываю личные данные.",
    },
    "internal_error": {
        "en": "Something went wrong on my side. Please try again in a minute.",
        "ru": "У меня что-то пошло не так. Попробуйте через минуту.",
    },
}
