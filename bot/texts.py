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
        return str(choice)
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
        ("tasks", "My overdue tasks"),
        ("team", "My team's overdue tasks (heads)"),
        ("settings", "Digest, alerts, quiet hours, time zone"),
        ("digest", "Morning digest: time, days, now"),
        ("alerts", "Alert thresholds"),
        ("quiet", "Quiet hours"),
        ("timezone", "Time zone"),
        ("language", "Language"),
        ("pause", "Pause digests and alerts"),
        ("resume", "End the pause"),
        ("project", "In a group: follow a Bitrix24 project"),
        ("link", "Link your Bitrix24 account"),
        ("unlink", "Unlink your account"),
        ("forget", "Delete everything about me"),
        ("help", "What the bot can do"),
    ],
    "ru": [
        ("counters", "Мои счётчики задач"),
        ("tasks", "Мои просроченные задачи"),
        ("team", "Просрочки моей команды (руководителям)"),
        ("settings", "Сводка, оповещения, тихие часы, часовой пояс"),
        ("digest", "Утренняя сводка: время, дни, сейчас"),
        ("alerts", "Пороги оповещений"),
        ("quiet", "Тихие часы"),
        ("timezone", "Часовой пояс"),
        ("language", "Язык"),
        ("pause", "Приостановить сводки и оповещения"),
        ("resume", "Снять паузу"),
        ("project", "В группе: следить за проектом Битрикс24"),
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
            "/tasks [role] — your overdue tasks\n"
            "/team — heads: your team\n"
            "/link &lt;ID | e-mail | profile URL&gt; — link your account\n"
            "/verify 123456 — confirm the code from Bitrix24\n"
            "/settings — all settings\n"
            "/digest 9:00 mon-fri | off | on | now | empty on|off\n"
            "/alerts overdue 3 | comments 10 | overdue off | off | on\n"
            "/quiet 22:00-08:00 | off\n"
            "/timezone Europe/Moscow | UTC+3\n"
            "/language en | ru\n"
            "/pause 7 | 2026-12-31, /resume\n"
            "/project 12 — in a group: follow a project\n"
            "/unlink — stop all messages; /forget — also delete your data"
        ),
        "ru": (
            "<b>Команды</b>\n"
            "/counters [all|doing|helping|following|created] — счётчики задач\n"
            "/tasks [роль] — просроченные задачи\n"
            "/team — команда (руководителям)\n"
            "/link &lt;ID | e-mail | ссылка на профиль&gt; — привязать аккаунт\n"
            "/verify 123456 — ввести код из Битрикс24\n"
            "/settings — все настройки\n"
            "/digest 9:00 пн-пт | off | on | now | empty on|off\n"
            "/alerts overdue 3 | comments 10 | overdue off | off | on\n"
            "/quiet 22:00-08:00 | off\n"
            "/timezone Europe/Moscow | UTC+3\n"
            "/language en | ru\n"
            "/pause 7 | 2026-12-31, /resume\n"
            "/project 12 — в группе: следить за проектом\n"
            "/unlink — прекратить сообщения; /forget — и удалить данные"
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

# Role and counter labels, as the Bitrix24 interface names them.
ROLE_LABELS: dict[str, dict[str, str]] = {
    "view_all": {"en": "All", "ru": "Все"},
    "view_role_responsible": {"en": "Doing", "ru": "Делаю"},
    "view_role_accomplice": {"en": "Helping", "ru": "Помогаю"},
    "view_role_auditor": {"en": "Following", "ru": "Наблюдаю"},
    "view_role_originator": {"en": "Created by me", "ru": "Поручил"},
}
COUNTER_LABELS: dict[str, dict[str, str]] = {
    "expired": {"en": "Overdue", "ru": "Просрочено"},
    "new_comments": {"en": "New comments", "ru": "Новые комментарии"},
}
DAY_NAMES: dict[str, tuple[str, ...]] = {
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    "ru": ("Пн", "Вт", "Ср", "Чт", "Пт", "Сб", "Вс"),
}


def role_label(lang: str, role: str) -> str:
    """The interface label of a role."""
    return ROLE_LABELS[role].get(lang, ROLE_LABELS[role]["en"])


def counter_label(lang: str, name: str) -> str:
    """The label of a counter; unknown counters keep their raw key."""
    labels = COUNTER_LABELS.get(name)
    return labels.get(lang, labels["en"]) if labels else name


def days_label(lang: str, days: frozenset[int]) -> str:
    """Weekdays as a short phrase: 'Mon–Fri', 'every day', 'Mon, Wed'."""
    names = DAY_NAMES.get(lang, DAY_NAMES["en"])
    ordered = sorted(days)
    if ordered == list(range(7)):
        return t(lang, "every_day")
    if not ordered:
        return t(lang, "no_days")
    if len(ordered) >= 3 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{names[ordered[0]]}–{names[ordered[-1]]}"
    return ", ".join(names[d] for d in ordered)


TEXTS.update(
    {
        "every_day": {"en": "every day", "ru": "каждый день"},
        "no_days": {"en": "no days", "ru": "ни одного дня"},
        # ---- parse errors (keys from bot.parsing) ----
        "input_too_long": {"en": "That is too long (at most {max_chars} characters).", "ru": "Слишком длинно (не больше {max_chars} символов)."},
        "input_bad_characters": {"en": "That contains characters I cannot accept.", "ru": "В этом есть символы, которые я не принимаю."},
        "link_target_invalid": {"en": "Give a Bitrix24 user ID, an e-mail or a profile link.", "ru": "Укажите ID пользователя Битрикс24, e-mail или ссылку на профиль."},
        "link_id_out_of_range": {"en": "A Bitrix24 user ID is a whole number from 1 to {max}.", "ru": "ID пользователя Битрикс24 — целое число от 1 до {max}."},
        "link_email_invalid": {"en": "That e-mail address does not look right.", "ru": "Этот e-mail выглядит неправильно."},
        "link_url_invalid": {"en": "That link is not a Bitrix24 profile link (…/company/personal/user/547/).", "ru": "Это не ссылка на профиль Битрикс24 (…/company/personal/user/547/)."},
        "link_url_wrong_host": {"en": "That link is not on our portal ({hosts}).", "ru": "Эта ссылка не на нашем портале ({hosts})."},
        "digest_args_invalid": {"en": "I did not understand that.", "ru": "Я этого не понял."},
        "digest_time_invalid": {"en": "The time must be H:MM from 0:00 to 23:59.", "ru": "Время — в формате Ч:ММ, от 0:00 до 23:59."},
        "digest_days_invalid": {"en": "Days are daily, weekdays, weekends or mon…sun, e.g. mon-fri or mon,wed.", "ru": "Дни: daily, weekdays, weekends или пн…вс, например пн-пт или пн,ср."},
        "digest_days_wrap": {"en": "A range cannot wrap around the week ({start}-{end}); list the days instead.", "ru": "Диапазон не может переходить через конец недели ({start}-{end}); перечислите дни."},
        "digest_empty_invalid": {"en": "Say /digest empty on or /digest empty off.", "ru": "Напишите /digest empty on или /digest empty off."},
        "digest_tasks_invalid": {"en": "Say /digest tasks on or /digest tasks off.", "ru": "Напишите /digest tasks on или /digest tasks off."},
        "alerts_args_invalid": {"en": "Give a counter and a threshold, or on/off.", "ru": "Укажите счётчик и порог или on/off."},
        "alerts_counter_unknown": {"en": "The counter is overdue or comments.", "ru": "Счётчик — overdue (просрочено) или comments (комментарии)."},
        "alerts_threshold_invalid": {"en": "The threshold is a whole number from {min} to {max}.", "ru": "Порог — целое число от {min} до {max}."},
        "quiet_format_invalid": {"en": "Quiet hours are HH:MM-HH:MM.", "ru": "Тихие часы — в формате ЧЧ:ММ-ЧЧ:ММ."},
        "quiet_start_equals_end": {"en": "Quiet hours must start and end at different times.", "ru": "Начало и конец тихих часов должны различаться."},
        "timezone_unknown": {"en": "I do not know that time zone; use an IANA name or UTC+3.", "ru": "Я не знаю такого часового пояса; укажите имя IANA или UTC+3."},
        "timezone_offset_invalid": {"en": "An offset goes from UTC{min} to UTC{max}, minutes {minutes}.", "ru": "Смещение — от UTC{min} до UTC{max}, минуты {minutes}."},
        "language_unknown": {"en": "Languages: {choices}.", "ru": "Языки: {choices}."},
        "pause_format_invalid": {"en": "Give a number of days or a date YYYY-MM-DD.", "ru": "Укажите число дней или дату ГГГГ-ММ-ДД."},
        "pause_days_out_of_range": {"en": "The pause lasts {min} to {max} days.", "ru": "Пауза — от {min} до {max} дней."},
        "pause_date_out_of_range": {"en": "The date must be from {first} to {last}.", "ru": "Дата — с {first} по {last}."},
        "role_unknown": {"en": "Roles: {choices}.", "ru": "Роли: {choices}."},
        "example": {"en": "Example: <code>{example}</code>", "ru": "Пример: <code>{example}</code>"},
        # ---- linking ----
        "link_private_only": {"en": "Linking works only in a private chat with me.", "ru": "Привязка работает только в личном чате со мной."},
        "link_usage": {
            "en": "Send your Bitrix24 user ID, e-mail or profile link: <code>/link 547</code>",
            "ru": "Пришлите ваш ID в Битрикс24, e-mail или ссылку на профиль: <code>/link 547</code>",
        },
        "link_code_sent": {
            "en": "I sent a one-time code to that account's Bitrix24 notifications. Send it here within 10 minutes: <code>/verify 123456</code> or just the six digits.",
            "ru": "Я отправил одноразовый код в уведомления этого аккаунта Битрикс24. Пришлите его сюда в течение 10 минут: <code>/verify 123456</code> или просто шесть цифр.",
        },
        "link_not_found": {"en": "No active Bitrix24 user matches that.", "ru": "Активного пользователя Битрикс24 с такими данными нет."},
        "link_too_many_lookups": {"en": "Too many lookups; try again in an hour.", "ru": "Слишком много попыток поиска; попробуйте через час."},
        "link_too_many_codes": {"en": "Too many codes were requested; try again in an hour.", "ru": "Запрошено слишком много кодов; попробуйте через час."},
        "link_taken": {
            "en": "That Bitrix24 account is already linked to another Telegram account. Ask an administrator to free it.",
            "ru": "Этот аккаунт Битрикс24 уже привязан к другому аккаунту Telegram. Попросите администратора освободить его.",
        },
        "link_already_yours": {"en": "This account is already linked to you.", "ru": "Этот аккаунт уже привязан к вам."},
        "verify_no_code": {"en": "There is no code waiting. Start with <code>/link 547</code>.", "ru": "Код не ожидается. Начните с <code>/link 547</code>."},
        "verify_usage": {"en": "Send the six digits from the notification: <code>/verify 123456</code>", "ru": "Пришлите шесть цифр из уведомления: <code>/verify 123456</code>"},
        "verify_expired": {"en": "That code has expired. Ask for a new one with /link.", "ru": "Срок кода истёк. Запросите новый через /link."},
        "verify_wrong": {"en": "Wrong code. Tries left: {left}.", "ru": "Неверный код. Осталось попыток: {left}."},
        "verify_dead": {"en": "Wrong code, and no tries are left. Ask for a new one with /link.", "ru": "Неверный код, попыток не осталось. Запросите новый через /link."},
        "linked": {
            "en": "Linked to <b>{name}</b>.\nMorning digest: {time}, {days}, time zone {zone}.",
            "ru": "Аккаунт привязан: <b>{name}</b>.\nУтренняя сводка: {time}, {days}, часовой пояс {zone}.",
        },
        "linked_digest_off": {"en": "Linked to <b>{name}</b>. Time zone {zone}.", "ru": "Аккаунт привязан: <b>{name}</b>. Часовой пояс {zone}."},
        "link_moved_away": {
            "en": "Your Bitrix24 account was linked to another Telegram account with a confirmation code. This chat will get no more messages.",
            "ru": "Ваш аккаунт Битрикс24 привязан к другому аккаунту Telegram с подтверждением кода. Этот чат больше не будет получать сообщений.",
        },
        "unlinked": {"en": "Unlinked. I will send you nothing more. /link links again.", "ru": "Аккаунт отвязан. Больше я ничего не пришлю. /link — привязать снова."},
        "not_linked": {"en": "You have not linked a Bitrix24 account yet: <code>/link 547</code>", "ru": "Вы ещё не привязали аккаунт Битрикс24: <code>/link 547</code>"},
        "forgotten": {"en": "Done: I deleted everything I knew about you.", "ru": "Готово: я удалил всё, что знал о вас."},
        "admin_unlinked": {"en": "Bitrix24 user {bitrix_user_id} is unlinked.", "ru": "Пользователь Битрикс24 {bitrix_user_id} отвязан."},
        "admin_not_linked": {"en": "Bitrix24 user {bitrix_user_id} is not linked.", "ru": "Пользователь Битрикс24 {bitrix_user_id} не привязан."},
        "unlinked_by_admin": {"en": "An administrator unlinked your Bitrix24 account. /link links again.", "ru": "Администратор отвязал ваш аккаунт Битрикс24. /link — привязать снова."},
        "unlinked_inactive": {
            "en": "Your Bitrix24 account is no longer active, so I unlinked it.",
            "ru": "Ваш аккаунт Битрикс24 больше не активен, поэтому я его отвязал.",
        },
        "admins_only": {"en": "Only the bot's administrators can do that.", "ru": "Это могут только администраторы бота."},
        "admin_unlink_usage": {"en": "Give a Bitrix24 user ID: <code>/unlink 547</code>", "ru": "Укажите ID пользователя Битрикс24: <code>/unlink 547</code>"},
        # ---- counters ----
        "counters_title": {"en": "<b>Task counters</b>", "ru": "<b>Счётчики задач</b>"},
        "counters_no_access": {
            "en": "no access to this account's counters (the bot's webhook is probably not an administrator's)",
            "ru": "нет доступа к счётчикам этого аккаунта (вебхук бота, вероятно, не администратора)",
        },
        "counters_none": {"en": "nothing", "ru": "ничего"},
        "counters_updated": {"en": "updated {time}", "ru": "обновлено {time}"},
        "counters_cached": {"en": "read at {time}; the next read is possible in a few seconds", "ru": "прочитано в {time}; следующее чтение — через несколько секунд"},
        "counters_open": {"en": "Open my tasks", "ru": "Открыть мои задачи"},
        "button_all_roles": {"en": "All roles", "ru": "Все роли"},
        "button_refresh": {"en": "⟳ Refresh", "ru": "⟳ Обновить"},
        "reads_too_many": {"en": "Too many reads for now. Try again in {seconds} s.", "ru": "Слишком много запросов. Попробуйте через {seconds} с."},
        # ---- the tasks behind a counter (SPEC 11) ----
        "tasks_title": {"en": "<b>Overdue: {role}</b> ({n})", "ru": "<b>Просрочено: {role}</b> ({n})"},
        "tasks_none": {"en": "Nothing overdue for {role}.", "ru": "Нет просроченных задач: {role}."},
        "tasks_overdue_by": {"en": "overdue by {age}", "ru": "просрочено на {age}"},
        "tasks_age_minutes": {"en": "{n} min", "ru": "{n} мин"},
        "tasks_age_hours": {"en": "{n} h", "ru": "{n} ч"},
        "tasks_age_days": {"en": "{n} d", "ru": "{n} дн."},
        "tasks_untitled": {"en": "Task #{id}", "ru": "Задача #{id}"},
        "tasks_page": {"en": "<i>page {page} of {pages}</i>", "ru": "<i>страница {page} из {pages}</i>"},
        "tasks_count_differs": {
            "en": "The list has {listed}, the counter says {counter}: Bitrix24 recounts with a delay, and the list may include tasks you muted.",
            "ru": "В списке {listed}, счётчик показывает {counter}: Битрикс24 пересчитывает с задержкой, а в списке могут быть задачи, уведомления о которых вы отключили.",
        },
        "button_overdue_role": {"en": "Overdue: {role} ({n})", "ru": "Просрочено: {role} ({n})"},
        "button_overdue_list": {"en": "Show the overdue tasks", "ru": "Показать просроченные задачи"},
        "tasks_unavailable": {
            "en": "Task lists are unavailable on this portal: it does not apply the filter they need. The administrators were told.",
            "ru": "Списки задач на этом портале недоступны: он не применяет нужный им фильтр. Администраторы уведомлены.",
        },
        "admin_task_filter_ignored": {
            "en": "Task lists are off: this portal ignores the tasks.task.list member filter, so a list could show other people's tasks. Nothing was shown. Check the portal version (python -m bot check).",
            "ru": "Списки задач отключены: портал игнорирует фильтр участника в tasks.task.list, и список мог бы показать чужие задачи. Ничего не показано. Проверьте версию портала (python -m bot check).",
        },
        "admin_events_domain": {
            "en": "⚠️ Bitrix24 events: a request with the right token named the portal {domain}, not {expected}; it was rejected. Check BITRIX24_WEBHOOK_URL / BITRIX24_PORTAL_URL, or whether the token is used by another portal.",
            "ru": "⚠️ События Битрикс24: запрос с верным токеном назвал портал {domain}, а не {expected}; он отклонён. Проверьте BITRIX24_WEBHOOK_URL / BITRIX24_PORTAL_URL или не использует ли токен другой портал.",
        },
        "digest_tasks_title": {"en": "<b>Most overdue:</b>", "ru": "<b>Дольше всего просрочены:</b>"},
        "button_previous": {"en": "‹ Previous", "ru": "‹ Назад"},
        "button_next": {"en": "Next ›", "ru": "Далее ›"},
        "button_back_to_counters": {"en": "← Counters", "ru": "← Счётчики"},
        # ---- settings ----
        "settings_title": {"en": "<b>Settings</b>", "ru": "<b>Настройки</b>"},
        "settings_digest": {"en": "Digest: {value}", "ru": "Сводка: {value}"},
        "settings_digest_on": {"en": "{time}, {days}", "ru": "{time}, {days}"},
        "settings_off": {"en": "off", "ru": "выключено"},
        "settings_on": {"en": "on", "ru": "включено"},
        "settings_empty": {"en": "Empty digests: {value}", "ru": "Пустые сводки: {value}"},
        "settings_tasks": {"en": "Overdue tasks in the digest: {value}", "ru": "Просроченные задачи в сводке: {value}"},
        "button_tasks_on": {"en": "Tasks in the digest: turn on", "ru": "Задачи в сводке: включить"},
        "button_tasks_off": {"en": "Tasks in the digest: turn off", "ru": "Задачи в сводке: выключить"},
        "settings_empty_send": {"en": "sent", "ru": "присылать"},
        "settings_empty_skip": {"en": "skipped", "ru": "пропускать"},
        "settings_alerts": {"en": "Alerts: {value}", "ru": "Оповещения: {value}"},
        "settings_threshold": {"en": "{counter} ≥ {threshold}", "ru": "{counter} ≥ {threshold}"},
        "settings_no_thresholds": {"en": "no thresholds", "ru": "порогов нет"},
        "settings_quiet": {"en": "Quiet hours: {value}", "ru": "Тихие часы: {value}"},
        "settings_zone": {"en": "Time zone: {value}", "ru": "Часовой пояс: {value}"},
        "settings_language": {"en": "Language: English", "ru": "Язык: русский"},
        "settings_pause": {"en": "Paused until {date}", "ru": "Пауза до {date}"},
        "settings_hint": {
            "en": "Change with /digest, /alerts, /quiet, /timezone, /language, /pause.",
            "ru": "Изменить: /digest, /alerts, /quiet, /timezone, /language, /pause.",
        },
        "button_digest_on": {"en": "Digest: turn on", "ru": "Сводка: включить"},
        "button_digest_off": {"en": "Digest: turn off", "ru": "Сводка: выключить"},
        "button_alerts_on": {"en": "Alerts: turn on", "ru": "Оповещения: включить"},
        "button_alerts_off": {"en": "Alerts: turn off", "ru": "Оповещения: выключить"},
        "button_empty_on": {"en": "Send empty digests", "ru": "Присылать пустые сводки"},
        "button_empty_off": {"en": "Skip empty digests", "ru": "Пропускать пустые сводки"},
        "button_quiet_off": {"en": "Quiet hours: off", "ru": "Тихие часы: выключить"},
        "button_resume": {"en": "End the pause", "ru": "Снять паузу"},
        "button_settings": {"en": "Change settings", "ru": "Изменить настройки"},
        "current_digest": {"en": "Digest: {value}.", "ru": "Сводка: {value}."},
        "current_alerts": {"en": "Alerts: {value}.", "ru": "Оповещения: {value}."},
        "current_quiet": {"en": "Quiet hours: {value}.", "ru": "Тихие часы: {value}."},
        "current_zone": {"en": "Time zone: {value}.", "ru": "Часовой пояс: {value}."},
        "current_language": {"en": "Language: English.", "ru": "Язык: русский."},
        "current_pause": {"en": "No pause.", "ru": "Паузы нет."},
        "saved": {"en": "Saved.", "ru": "Сохранено."},
        "saved_digest": {"en": "Digest: {value}.", "ru": "Сводка: {value}."},
        "saved_pause": {
            "en": "Paused: no digests or alerts until {date} (that day's digest comes). /resume ends it.",
            "ru": "Пауза: без сводок и оповещений до {date} (сводка этого дня придёт). /resume — снять.",
        },
        "resumed": {"en": "The pause is over.", "ru": "Пауза снята."},
        "not_paused": {"en": "There is no pause.", "ru": "Паузы нет."},
        # ---- digests, alerts, notices ----
        "digest_title": {"en": "<b>Good morning! Your task counters</b>", "ru": "<b>Доброе утро! Ваши счётчики задач</b>"},
        "digest_now_title": {"en": "<b>Your task counters</b>", "ru": "<b>Ваши счётчики задач</b>"},
        "digest_since": {"en": "Changes since the digest of {date}.", "ru": "Изменения со сводки за {date}."},
        "digest_first": {"en": "This is your first digest.", "ru": "Это ваша первая сводка."},
        "digest_quiet_folded": {"en": "During quiet hours:", "ru": "За тихие часы:"},
        "alert": {
            "en": "⚠️ {counter}: <b>{value}</b> (your threshold is {threshold}).",
            "ru": "⚠️ {counter}: <b>{value}</b> (ваш порог {threshold}).",
        },
        "quiet_summary": {"en": "<b>During quiet hours</b>", "ru": "<b>За тихие часы</b>"},
        "quiet_item": {"en": "{counter}: <b>{value}</b> (threshold {threshold})", "ru": "{counter}: <b>{value}</b> (порог {threshold})"},
        "button_snooze_hour": {"en": "Snooze 1 h", "ru": "Отложить на 1 ч"},
        "button_snooze_tomorrow": {"en": "Snooze until tomorrow", "ru": "Отложить до завтра"},
        "snoozed": {"en": "Snoozed until {time}.", "ru": "Отложено до {time}."},
        "bitrix_error": {"en": "I could not read Bitrix24: {reason}", "ru": "Не удалось прочитать Битрикс24: {reason}"},
        "admin_poll_failing": {
            "en": "⚠️ Polling Bitrix24 fails: {reason}",
            "ru": "⚠️ Опрос Битрикс24 не работает: {reason}",
        },
        "admin_poll_recovered": {"en": "✅ Polling Bitrix24 recovered after {duration}.", "ru": "✅ Опрос Битрикс24 восстановился через {duration}."},
        "admin_no_access": {
            "en": "every linked user's counters read as no access: the webhook is probably not a portal administrator's",
            "ru": "счётчики всех привязанных пользователей недоступны: вебхук, вероятно, не администратора портала",
        },
        "admin_cycle_stretched": {
            "en": "ℹ️ One poll cycle for {users} users needs about {needed} s under the rate limit and time budget, more than POLL_INTERVAL_SECONDS={interval}; cycles run back to back every {actual} s.",
            "ru": "ℹ️ Цикл опроса {users} пользователей требует около {needed} с при ограничениях частоты и времени, больше POLL_INTERVAL_SECONDS={interval}; циклы идут подряд раз в {actual} с.",
        },
    }
)

TEXTS.update(
    {
        "stats": {
            "en": (
                "<b>Bot statistics</b>\n"
                "Linked users: {linked}, active: {active}\n"
                "Last poll: {last_poll}\n"
                "Poll interval: {interval} s\n"
                "Bitrix24 requests in the last hour: {requests}, failed: {failed}\n"
                "Time budget used (tasks.task.counters.get, 10 min): {budget} s of {budget_limit} s\n"
                "Messages in the last hour: sent {sent}, failed {msg_failed}; queued now: {queued}\n"
                "Users whose counters read as no access: {no_access}"
            ),
            "ru": (
                "<b>Статистика бота</b>\n"
                "Привязано пользователей: {linked}, активных: {active}\n"
                "Последний опрос: {last_poll}\n"
                "Интервал опроса: {interval} с\n"
                "Запросов к Битрикс24 за час: {requests}, с ошибкой: {failed}\n"
                "Использовано времени (tasks.task.counters.get, 10 мин): {budget} с из {budget_limit} с\n"
                "Сообщений за час: отправлено {sent}, с ошибкой {msg_failed}; в очереди: {queued}\n"
                "Пользователей без доступа к счётчикам: {no_access}"
            ),
        },
        "stats_events": {
            "en": "\nBitrix24 events since start: received {received}, rejected {rejected}, refreshes {refreshes}; last valid event: {last}",
            "ru": "\nСобытия Битрикс24 с запуска: получено {received}, отклонено {rejected}, обновлений {refreshes}; последнее верное: {last}",
        },
        "stats_ago": {"en": "{age} ago", "ru": "{age} назад"},
        "stats_never": {"en": "none yet", "ru": "ещё не было"},
        "stats_poll_ok": {"en": "{time} UTC, {ok} of {users} users read", "ru": "{time} UTC, прочитано {ok} из {users}"},
        "stats_poll_failed": {"en": "{time} UTC, failed: {cause}", "ru": "{time} UTC, ошибка: {cause}"},
        "unknown_command": {"en": "I do not know that command. /help lists what I can do.", "ru": "Я не знаю такой команды. /help — что я умею."},
    }
)

TEXTS.update(
    {
        # ---- team view (SPEC 12) ----
        "team_title": {"en": "<b>Team</b>: {departments} · {n} people", "ru": "<b>Команда</b>: {departments} · человек: {n}"},
        "team_more_departments": {"en": " and {n} more", "ru": " и ещё {n}"},
        "team_overdue": {"en": "overdue {n}", "ru": "просрочено {n}"},
        "team_comments": {"en": "new comments {n}", "ru": "новых комментариев {n}"},
        "team_more_busy": {"en": "{n} more with overdue tasks or new comments", "ru": "Ещё {n} с просрочками или новыми комментариями"},
        "team_more_quiet": {"en": "{n} more: nothing overdue, no new comments", "ru": "Ещё {n}: ничего не просрочено, новых комментариев нет"},
        "team_unread": {"en": "{n} could not be read: try Refresh later", "ru": "Не удалось прочитать: {n}; обновите позже"},
        "team_empty": {"en": "Nobody else is in your departments.", "ru": "Кроме вас, в ваших отделах никого нет."},
        "team_not_head": {"en": "You head no department in Bitrix24, so there is no team to show.", "ru": "Вы не руководите ни одним отделом в Битрикс24, показывать нечего."},
        "team_scope_missing": {
            "en": "Team views are off: the administrator must add the scope <b>department</b> to the bot's Bitrix24 webhook.",
            "ru": "Просмотр команды выключен: администратор должен добавить вебхуку бота в Битрикс24 право <b>department</b>.",
        },
        "team_off": {
            "en": "Team views are off on this bot (links are not verified with a code).",
            "ru": "Просмотр команды в этом боте выключен (привязка не подтверждается кодом).",
        },
        "team_unavailable": {
            "en": "Team views are unavailable on this portal: it does not apply the department filter they need. The administrators were told.",
            "ru": "Просмотр команды на этом портале недоступен: он не применяет нужный фильтр по отделу. Администраторы уведомлены.",
        },
        "admin_team_filter_ignored": {
            "en": "Team views show nothing: this portal ignores the user.get UF_DEPARTMENT filter, so a team could include the whole company. Check the portal version (python -m bot check).",
            "ru": "Просмотр команды ничего не показывает: портал игнорирует фильтр UF_DEPARTMENT в user.get, и в команду попала бы вся компания. Проверьте версию портала (python -m bot check).",
        },
        "team_not_member": {"en": "This person is not on your team.", "ru": "Этот человек не в вашей команде."},
        "team_person_title": {"en": "{name}: ", "ru": "{name}: "},
        "button_team_person": {"en": "{name} ({n})", "ru": "{name} ({n})"},
        "button_back_to_team": {"en": "← Team", "ru": "← Команда"},
        "digest_team": {
            "en": "<b>Team:</b> {overdue} overdue across {behind} of {people} people ({names})",
            "ru": "<b>Команда:</b> просрочено {overdue} у {behind} из {people} человек ({names})",
        },
        "digest_team_clear": {
            "en": "<b>Team:</b> nothing overdue among {people} people",
            "ru": "<b>Команда:</b> просрочек нет ни у кого из {people} человек",
        },
        "digest_team_invalid": {"en": "Say /digest team on or /digest team off.", "ru": "Напишите /digest team on или /digest team off."},
        "settings_team": {"en": "Team line in the digest (heads): {value}", "ru": "Строка команды в сводке (руководителям): {value}"},
        "button_team_on": {"en": "Team in the digest: turn on", "ru": "Команда в сводке: включить"},
        "button_team_off": {"en": "Team in the digest: turn off", "ru": "Команда в сводке: выключить"},
    }
)

# Project chats (SPEC 13).
TEXTS.update(
    {
        "project_target_invalid": {
            "en": "Give the project's ID or its address, e.g. https://portal/workgroups/group/12/.",
            "ru": "Укажите ID проекта или его адрес, например https://portal/workgroups/group/12/.",
        },
        "project_url_wrong_host": {
            "en": "That address is not on this portal ({hosts}).",
            "ru": "Этот адрес не на нашем портале ({hosts}).",
        },
        "project_refused": {
            "en": "Only a linked owner or moderator of the project can connect it here.",
            "ru": "Подключить проект здесь может только его владелец или модератор с привязанным аккаунтом.",
        },
        "project_too_many": {
            "en": "Too many /project tries this hour. Try again later.",
            "ru": "Слишком много попыток /project за час. Попробуйте позже.",
        },
        "project_one_per_chat": {
            "en": "This chat already follows {project}. One project per chat: /project off first.",
            "ru": "Этот чат уже следит за проектом {project}. Один проект на чат: сначала /project off.",
        },
        "project_offer": {
            "en": (
                "Connect the Bitrix24 project <b>{project}</b> to this chat?\n"
                "Everyone in this chat, now or joining later, will see the project's overdue tasks and who is "
                "responsible for them (/project), and a digest at {time}, {days} ({zone}). No one's personal counters."
            ),
            "ru": (
                "Подключить проект Битрикс24 <b>{project}</b> к этому чату?\n"
                "Все в этом чате, сейчас и в будущем, увидят просроченные задачи проекта и ответственных за них "
                "(/project), а также сводку в {time}, {days} ({zone}). Личных счётчиков здесь не будет."
            ),
        },
        "project_offer_not_open": {
            "en": "This project is not open: in Bitrix24 only its members see its tasks. Here everyone in the chat will.",
            "ru": "Это закрытый проект: в Битрикс24 его задачи видят только участники. Здесь их увидят все в чате.",
        },
        "button_connect": {"en": "Connect", "ru": "Подключить"},
        "button_cancel": {"en": "Cancel", "ru": "Отмена"},
        "project_offer_lapsed": {
            "en": "This offer has lapsed. Send /project again.",
            "ru": "Предложение устарело. Отправьте /project ещё раз.",
        },
        "project_offer_cancelled": {"en": "Cancelled: nothing was connected.", "ru": "Отменено: ничего не подключено."},
        "project_not_yours": {
            "en": "Only the person who sent /project can answer this.",
            "ru": "Ответить может только тот, кто отправил /project.",
        },
        "project_connected": {
            "en": "This chat now follows <b>{project}</b>. /project shows its overdue tasks; the digest settings: /project digest.",
            "ru": "Теперь этот чат следит за проектом <b>{project}</b>. /project — просроченные задачи; настройки сводки: /project digest.",
        },
        "project_off": {"en": "This chat no longer follows its project.", "ru": "Этот чат больше не следит за проектом."},
        "project_not_bound": {"en": "This chat follows no project.", "ru": "Этот чат не следит ни за одним проектом."},
        "project_usage": {
            "en": "This chat follows no project. A project's owner or moderator connects it: <code>/project 12</code>.",
            "ru": "Этот чат не следит за проектом. Подключает владелец или модератор проекта: <code>/project 12</code>.",
        },
        "project_suspended": {
            "en": (
                "⏸ Updates about {project} are paused: the person who connected it can no longer vouch for this chat. "
                "Any linked owner or moderator of the project can take it over with /project &lt;ID&gt;."
            ),
            "ru": (
                "⏸ Сообщения о проекте {project} приостановлены: подключивший его больше не может отвечать за этот чат. "
                "Любой владелец или модератор проекта может продолжить: /project &lt;ID&gt;."
            ),
        },
        "project_suspended_view": {
            "en": "Updates about {project} are paused. An owner or moderator of the project can take it over with /project &lt;ID&gt;.",
            "ru": "Сообщения о проекте {project} приостановлены. Владелец или модератор проекта может продолжить: /project &lt;ID&gt;.",
        },
        "project_gone": {
            "en": "The project {project} no longer exists in Bitrix24: this chat stops following it.",
            "ru": "Проекта {project} больше нет в Битрикс24: этот чат перестаёт за ним следить.",
        },
        "project_archived": {
            "en": "The project {project} is archived in Bitrix24: its digest is paused until it is reopened.",
            "ru": "Проект {project} в архиве Битрикс24: сводка приостановлена, пока его не вернут.",
        },
        "project_view_title": {"en": "<b>{project}</b>: {n} overdue", "ru": "<b>{project}</b>: просрочено {n}"},
        "project_view_none": {"en": "<b>{project}</b>: nothing overdue.", "ru": "<b>{project}</b>: просроченных задач нет."},
        "project_digest_title": {"en": "☀️ <b>{project}</b>: {n} overdue", "ru": "☀️ <b>{project}</b>: просрочено {n}"},
        "project_digest_none": {"en": "☀️ <b>{project}</b>: nothing overdue.", "ru": "☀️ <b>{project}</b>: просроченных задач нет."},
        "project_digest_change": {"en": "({delta} since the last digest)", "ru": "({delta} с прошлой сводки)"},
        "project_by_person": {"en": "By person: {people}", "ru": "По людям: {people}"},
        "project_who_may": {
            "en": "Only an owner or moderator of the project, or a bot administrator, can change this.",
            "ru": "Это может изменить только владелец или модератор проекта либо администратор бота.",
        },
        "project_scope": {
            "en": "Project chats are off: the Bitrix24 administrator must add the sonet_group scope to the bot's webhook.",
            "ru": "Чаты проектов выключены: администратор Битрикс24 должен добавить вебхуку бота право sonet_group.",
        },
        "project_disabled": {
            "en": "Project chats are off on this bot (LINK_VERIFICATION=none).",
            "ru": "Чаты проектов в этом боте выключены (LINK_VERIFICATION=none).",
        },
        "project_wrong_chat": {
            "en": "Projects can be connected only to a group without a public @username.",
            "ru": "Проект можно подключить только к группе без публичного @username.",
        },
        "project_private": {
            "en": "/project works in a group: add me to your team's group and send <code>/project 12</code> there (the project's ID or address).",
            "ru": "/project работает в группе: добавьте меня в группу команды и отправьте там <code>/project 12</code> (ID или адрес проекта).",
        },
        "project_anonymous": {
            "en": "I do not take commands sent on behalf of a chat. Send it from your own account.",
            "ru": "Я не принимаю команды от имени чата. Отправьте её от своего аккаунта.",
        },
        "project_refresh_failed": {"en": "Could not read Bitrix24 now.", "ru": "Не удалось прочитать Битрикс24."},
        "project_current_zone": {"en": "The digest's time zone.", "ru": "Часовой пояс сводки."},
        "project_current_language": {"en": "The chat's language.", "ru": "Язык чата."},
        "project_saved": {
            "en": "Saved. Project digest: {digest}, zone {zone}, empty digests {empty}, language {language}.",
            "ru": "Сохранено. Сводка проекта: {digest}, пояс {zone}, пустые сводки: {empty}, язык {language}.",
        },
        "stats_projects": {"en": "Project chats: {n}", "ru": "Чаты проектов: {n}"},
        "stats_project_line": {
            "en": "chat {chat_id}: {project} (#{group_id}), binder {binder}, {state}",
            "ru": "чат {chat_id}: {project} (#{group_id}), подключил {binder}, {state}",
        },
        "stats_project_active": {"en": "active", "ru": "активен"},
        "stats_project_suspended": {"en": "suspended", "ru": "приостановлен"},
        "stats_project_removed": {"en": "bot removed", "ru": "бот удалён из чата"},
        "stats_project_archived": {"en": "project archived", "ru": "проект в архиве"},
        "stats_more": {"en": "… and {n} more", "ru": "… и ещё {n}"},
    }
)
