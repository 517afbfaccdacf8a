"""Tests for bot.parsing: valid forms of every settings command and a table of invalid and hostile input."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, time

import pytest

from bot import parsing
from bot.model import zone
from bot.parsing import (
    SHOW,
    AlertsRemove,
    AlertsSet,
    DigestEmpty,
    DigestNow,
    DigestSet,
    LinkTarget,
    ParseError,
    QuietSet,
    Toggle,
    parse_alerts,
    parse_code,
    parse_counters_role,
    parse_digest,
    parse_language,
    parse_link_target,
    parse_pause,
    parse_quiet,
    parse_timezone,
)

HOSTS = ("corp.bitrix24.ru", "b24.internal:8443")
TODAY = date(2026, 3, 2)
WEEKDAYS = frozenset(range(5))

HOSTILE: list[str] = [
    "x" * 10_240,
    "1" * 10_240,
    "9:30\x00",
    "\x00",
    "abc\x07",
    "mon\u200bfri",  # zero-width space
    "\u202eftp",  # right-to-left override
    "'; DROP TABLE users; --",
    "1 OR 1=1",
    "<script>alert(1)</script>",
    "%s%s%s%n",
    "{0.__class__}",
    "\ud800",  # lone surrogate
    "../../etc/passwd",
]


def args(text: str) -> list[str]:
    """Split like PTB's context.args."""
    return text.split()


# ---------------------------------------------------------------- /link


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("547", LinkTarget("id", 547)),
        ("  547 ", LinkTarget("id", 547)),
        ("1", LinkTarget("id", 1)),
        ("2147483647", LinkTarget("id", 2147483647)),
        ("anna@corp.example", LinkTarget("email", "anna@corp.example")),
        ("Anna.Petrova+b24@Corp.Example.COM", LinkTarget("email", "anna.petrova+b24@corp.example.com")),
        ("https://corp.bitrix24.ru/company/personal/user/547/", LinkTarget("id", 547)),
        ("https://corp.bitrix24.ru/company/personal/user/547", LinkTarget("id", 547)),
        ("http://corp.bitrix24.ru/company/personal/user/547/", LinkTarget("id", 547)),
        ("HTTPS://CORP.Bitrix24.RU/company/personal/user/547/", LinkTarget("id", 547)),
        ("https://corp.bitrix24.ru:443/company/personal/user/547/", LinkTarget("id", 547)),
        ("https://corp.bitrix24.ru/company/personal/user/547/?IFRAME=Y#top", LinkTarget("id", 547)),
        ("https://b24.internal:8443/company/personal/user/12/", LinkTarget("id", 12)),
    ],
)
def test_link_target_accepts_ids_emails_and_profile_urls(text: str, expected: LinkTarget) -> None:
    assert parse_link_target(text, HOSTS) == expected


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("", parsing.ERR_LINK_TARGET),
        ("anna", parsing.ERR_LINK_TARGET),
        ("547 548", parsing.ERR_LINK_TARGET),
        ("-5", parsing.ERR_LINK_TARGET),
        ("5.5", parsing.ERR_LINK_TARGET),
        ("\u0661\u0662", parsing.ERR_LINK_TARGET),  # Arabic-Indic digits
        ("0", parsing.ERR_LINK_ID_RANGE),
        ("2147483648", parsing.ERR_LINK_ID_RANGE),
        ("99999999999999999999999", parsing.ERR_LINK_ID_RANGE),
        ("anna@", parsing.ERR_LINK_EMAIL),
        ("@corp.example", parsing.ERR_LINK_EMAIL),
        ("anna@@corp.example", parsing.ERR_LINK_EMAIL),
        ("anna@corp", parsing.ERR_LINK_EMAIL),
        ("an..na@corp.example", parsing.ERR_LINK_EMAIL),
        ("anna@corp..example", parsing.ERR_LINK_EMAIL),
        ("anna@-corp.example", parsing.ERR_LINK_EMAIL),
        ('"anna"@corp.example', parsing.ERR_LINK_EMAIL),
        ("a" * 65 + "@corp.example", parsing.ERR_LINK_EMAIL),
        ("https://evil.example/company/personal/user/547/", parsing.ERR_LINK_HOST),
        ("https://corp.bitrix24.ru.evil.example/company/personal/user/547/", parsing.ERR_LINK_HOST),
        ("https://corp.bitrix24.ru:8443/company/personal/user/547/", parsing.ERR_LINK_HOST),
        ("https://b24.internal/company/personal/user/547/", parsing.ERR_LINK_HOST),
        ("https://corp.bitrix24.ru@evil.example/company/personal/user/547/", parsing.ERR_LINK_URL),
        ("https://evil.example@corp.bitrix24.ru/company/personal/user/547/", parsing.ERR_LINK_URL),
        ("https://corp.bitrix24.ru/company/personal/user/abc/", parsing.ERR_LINK_URL),
        ("https://corp.bitrix24.ru/company/personal/user/547/tasks/", parsing.ERR_LINK_URL),
        ("https://corp.bitrix24.ru/company/personal/user/0/", parsing.ERR_LINK_ID_RANGE),
        ("https://corp.bitrix24.ru/", parsing.ERR_LINK_URL),
        ("https://[::1/company/personal/user/547/", parsing.ERR_LINK_URL),
        ("https://corp.bitrix24.ru:99999/company/personal/user/547/", parsing.ERR_LINK_URL),
        ("https://corp.bitrix24.ru:abc/company/personal/user/547/", parsing.ERR_LINK_URL),
        ("https:///company/personal/user/547/", parsing.ERR_LINK_URL),
        ("ftp://corp.bitrix24.ru/company/personal/user/547/", parsing.ERR_LINK_TARGET),
        ("javascript:alert(1)", parsing.ERR_LINK_TARGET),
        ("x" * 10_240, parsing.ERR_TOO_LONG),
        ("547\x00", parsing.ERR_BAD_CHARACTERS),
        ("anna@corp.example\x00", parsing.ERR_BAD_CHARACTERS),
    ],
)
def test_link_target_rejects_invalid_input_with_a_key(text: str, key: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_link_target(text, HOSTS)
    assert info.value.key == key
    assert info.value.example == parsing.EXAMPLE_LINK


def test_link_wrong_host_error_names_the_allowed_hosts() -> None:
    with pytest.raises(ParseError) as info:
        parse_link_target("https://evil.example/company/personal/user/1/", HOSTS)
    assert info.value.params == {"hosts": "b24.internal:8443, corp.bitrix24.ru"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123456", "123456"),
        ("123 456", "123456"),
        ("123-456", "123456"),
        (" 12 34 56 ", "123456"),
        ("123\u2013456", "123456"),
        ("000000", "000000"),
        ("12345", None),
        ("1234567", None),
        ("12a456", None),
        ("", None),
        ("\u0661\u0662\u0663\u0664\u0665\u0666", None),
        ("123456\x00", None),
        ("1" * 10_240, None),
        ("/verify 123456", None),
    ],
)
def test_code_is_six_digits_with_spaces_and_dashes_ignored(text: str, expected: str | None) -> None:
    assert parse_code(text) == expected


# ---------------------------------------------------------------- /digest


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SHOW),
        ("off", Toggle(False)),
        ("ON", Toggle(True)),
        ("now", DigestNow()),
        ("empty on", DigestEmpty(True)),
        ("empty OFF", DigestEmpty(False)),
        ("9:30", DigestSet(time(9, 30), None)),
        ("09:30", DigestSet(time(9, 30), None)),
        ("0:00", DigestSet(time(0, 0), None)),
        ("23:59", DigestSet(time(23, 59), None)),
        ("9:30 daily", DigestSet(time(9, 30), frozenset(range(7)))),
        ("9:30 weekdays", DigestSet(time(9, 30), WEEKDAYS)),
        ("9:30 Weekends", DigestSet(time(9, 30), frozenset({5, 6}))),
        ("9:30 mon-fri", DigestSet(time(9, 30), WEEKDAYS)),
        ("9:30 MON-Fri", DigestSet(time(9, 30), WEEKDAYS)),
        ("9:30 mon,wed,fri", DigestSet(time(9, 30), frozenset({0, 2, 4}))),
        ("9:30 mon, wed", DigestSet(time(9, 30), frozenset({0, 2}))),
        ("9:30 mon wed", DigestSet(time(9, 30), frozenset({0, 2}))),
        ("9:30 mon - fri", DigestSet(time(9, 30), WEEKDAYS)),
        ("9:30 mon\u2013wed", DigestSet(time(9, 30), frozenset({0, 1, 2}))),
        ("9:30 sat,sun", DigestSet(time(9, 30), frozenset({5, 6}))),
        ("9:30 sun", DigestSet(time(9, 30), frozenset({6}))),
        ("9:30 wed-wed", DigestSet(time(9, 30), frozenset({2}))),
        ("9:30 mon-tue,thu-fri", DigestSet(time(9, 30), frozenset({0, 1, 3, 4}))),
        ("9:30 Monday-Friday", DigestSet(time(9, 30), WEEKDAYS)),
        ("9:30 пн-пт", DigestSet(time(9, 30), WEEKDAYS)),
        ("9:30 ПН,СР,ПТ", DigestSet(time(9, 30), frozenset({0, 2, 4}))),
        ("9:30 сб-вс", DigestSet(time(9, 30), frozenset({5, 6}))),
        ("9:30 будни", DigestSet(time(9, 30), WEEKDAYS)),
        ("9:30 mon,mon", DigestSet(time(9, 30), frozenset({0}))),
    ],
)
def test_digest_accepts_every_documented_form(text: str, expected: object) -> None:
    assert parse_digest(args(text)) == expected


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("later", parsing.ERR_DIGEST_ARGS),
        ("on please", parsing.ERR_DIGEST_ARGS),
        ("off 9:30", parsing.ERR_DIGEST_ARGS),
        ("now now", parsing.ERR_DIGEST_ARGS),
        ("empty", parsing.ERR_DIGEST_EMPTY),
        ("empty yes", parsing.ERR_DIGEST_EMPTY),
        ("empty on off", parsing.ERR_DIGEST_EMPTY),
        ("24:00", parsing.ERR_DIGEST_TIME),
        ("9:60", parsing.ERR_DIGEST_TIME),
        ("9:5", parsing.ERR_DIGEST_TIME),
        ("930", parsing.ERR_DIGEST_TIME),
        ("9.30", parsing.ERR_DIGEST_TIME),
        ("009:30", parsing.ERR_DIGEST_TIME),
        ("-1:00", parsing.ERR_DIGEST_ARGS),
        ("\u0669:30", parsing.ERR_DIGEST_ARGS),
        ("9:30 someday", parsing.ERR_DIGEST_DAYS),
        ("9:30 mon-", parsing.ERR_DIGEST_DAYS),
        ("9:30 -fri", parsing.ERR_DIGEST_DAYS),
        ("9:30 mon-wed-fri", parsing.ERR_DIGEST_DAYS),
        ("9:30 ,", parsing.ERR_DIGEST_DAYS),
        ("9:30 fri-mon", parsing.ERR_DIGEST_DAYS_WRAP),
        ("9:30 вс-пн", parsing.ERR_DIGEST_DAYS_WRAP),
    ],
)
def test_digest_rejects_invalid_input_with_a_key(text: str, key: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_digest(args(text))
    assert info.value.key == key


def test_digest_wrap_around_error_names_the_days() -> None:
    with pytest.raises(ParseError) as info:
        parse_digest(["9:30", "Fri-Mon"])
    assert info.value.params == {"start": "fri", "end": "mon"}


# ---------------------------------------------------------------- /alerts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SHOW),
        ("off", Toggle(False)),
        ("On", Toggle(True)),
        ("overdue 3", AlertsSet("expired", 3)),
        ("expired 1", AlertsSet("expired", 1)),
        ("Просрочено 9999", AlertsSet("expired", 9999)),
        ("comments 10", AlertsSet("new_comments", 10)),
        ("new_comments 5", AlertsSet("new_comments", 5)),
        ("комментарии 2", AlertsSet("new_comments", 2)),
        ("overdue 007", AlertsSet("expired", 7)),
        ("overdue off", AlertsRemove("expired")),
        ("COMMENTS OFF", AlertsRemove("new_comments")),
    ],
)
def test_alerts_accepts_every_documented_form(text: str, expected: object) -> None:
    assert parse_alerts(args(text)) == expected


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("total 3", parsing.ERR_ALERTS_COUNTER),
        ("wo_deadline 3", parsing.ERR_ALERTS_COUNTER),
        ("3", parsing.ERR_ALERTS_COUNTER),
        ("off now", parsing.ERR_ALERTS_COUNTER),
        ("overdue", parsing.ERR_ALERTS_ARGS),
        ("overdue 3 4", parsing.ERR_ALERTS_ARGS),
        ("overdue 0", parsing.ERR_ALERTS_THRESHOLD),
        ("overdue -1", parsing.ERR_ALERTS_THRESHOLD),
        ("overdue +1", parsing.ERR_ALERTS_THRESHOLD),
        ("overdue 1.5", parsing.ERR_ALERTS_THRESHOLD),
        ("overdue 10000", parsing.ERR_ALERTS_THRESHOLD),
        ("overdue 1e3", parsing.ERR_ALERTS_THRESHOLD),
        ("overdue \u0661", parsing.ERR_ALERTS_THRESHOLD),
        ("overdue \uff11", parsing.ERR_ALERTS_THRESHOLD),  # full-width 1
        ("overdue ²", parsing.ERR_ALERTS_THRESHOLD),
        ("overdue 1_000", parsing.ERR_ALERTS_THRESHOLD),
        ("overdue on", parsing.ERR_ALERTS_THRESHOLD),
    ],
)
def test_alerts_rejects_invalid_input_with_a_key(text: str, key: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_alerts(args(text))
    assert info.value.key == key


def test_threshold_error_carries_the_range() -> None:
    with pytest.raises(ParseError) as info:
        parse_alerts(["overdue", "0"])
    assert info.value.params == {"min": 1, "max": 9999}


# ---------------------------------------------------------------- /quiet


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SHOW),
        ("off", Toggle(False)),
        ("22:00-07:00", QuietSet(time(22, 0), time(7, 0))),
        ("22:00 - 07:00", QuietSet(time(22, 0), time(7, 0))),
        ("22:00 -07:00", QuietSet(time(22, 0), time(7, 0))),
        ("13:00-14:30", QuietSet(time(13, 0), time(14, 30))),
        ("0:00-6:00", QuietSet(time(0, 0), time(6, 0))),
        ("23:59\u201400:00", QuietSet(time(23, 59), time(0, 0))),
    ],
)
def test_quiet_accepts_every_documented_form(text: str, expected: object) -> None:
    assert parse_quiet(args(text)) == expected


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("on", parsing.ERR_QUIET_FORMAT),
        ("22:00", parsing.ERR_QUIET_FORMAT),
        ("22:00-", parsing.ERR_QUIET_FORMAT),
        ("22-07", parsing.ERR_QUIET_FORMAT),
        ("22:00-07:00-08:00", parsing.ERR_QUIET_FORMAT),
        ("24:00-07:00", parsing.ERR_QUIET_FORMAT),
        ("22:00-07:60", parsing.ERR_QUIET_FORMAT),
        ("22:00 07:00", parsing.ERR_QUIET_FORMAT),
        ("07:00-07:00", parsing.ERR_QUIET_EQUAL),
        ("7:00-07:00", parsing.ERR_QUIET_EQUAL),
    ],
)
def test_quiet_rejects_invalid_input_with_a_key(text: str, key: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_quiet(args(text))
    assert info.value.key == key


# ---------------------------------------------------------------- /timezone


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SHOW),
        ("Europe/Moscow", "Europe/Moscow"),
        ("europe/moscow", "Europe/Moscow"),
        ("AMERICA/NEW_YORK", "America/New_York"),
        ("america/argentina/buenos_aires", "America/Argentina/Buenos_Aires"),
        ("Etc/GMT-3", "Etc/GMT-3"),
        ("UTC", "UTC"),
        ("utc", "UTC"),
        ("GMT", "UTC"),
        ("UTC+0", "UTC"),
        ("UTC-0", "UTC"),
        ("UTC+00:00", "UTC"),
        ("UTC+3", "UTC+03:00"),
        ("utc+03:00", "UTC+03:00"),
        ("GMT+3", "UTC+03:00"),
        ("UTC +3", "UTC+03:00"),
        ("UTC-5", "UTC-05:00"),
        ("UTC\u22125", "UTC-05:00"),  # minus sign
        ("UTC+5:30", "UTC+05:30"),
        ("UTC+0530", "UTC+05:30"),
        ("UTC+5:45", "UTC+05:45"),
        ("UTC-12", "UTC-12:00"),
        ("UTC+14", "UTC+14:00"),
        ("UTC+14:00", "UTC+14:00"),
        ("UTC-9:30", "UTC-09:30"),
    ],
)
def test_timezone_accepts_iana_names_in_any_case_and_offsets(text: str, expected: object) -> None:
    result = parse_timezone(args(text))
    assert result == expected
    if isinstance(result, str):
        zone(result)  # the stored form is one bot.model.zone understands


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Mars/Olympus", parsing.ERR_TIMEZONE_UNKNOWN),
        ("Moscow", parsing.ERR_TIMEZONE_UNKNOWN),
        ("localtime", parsing.ERR_TIMEZONE_UNKNOWN),
        ("Factory", parsing.ERR_TIMEZONE_UNKNOWN),
        ("../../etc/passwd", parsing.ERR_TIMEZONE_UNKNOWN),
        ("/etc/localtime", parsing.ERR_TIMEZONE_UNKNOWN),
        ("+3", parsing.ERR_TIMEZONE_UNKNOWN),
        ("UTC+3:5", parsing.ERR_TIMEZONE_UNKNOWN),
        ("UTC+\u0663", parsing.ERR_TIMEZONE_UNKNOWN),
        ("UTC+14:30", parsing.ERR_TIMEZONE_OFFSET),
        ("UTC+15", parsing.ERR_TIMEZONE_OFFSET),
        ("UTC-12:30", parsing.ERR_TIMEZONE_OFFSET),
        ("UTC-13", parsing.ERR_TIMEZONE_OFFSET),
        ("UTC+3:07", parsing.ERR_TIMEZONE_OFFSET),
        ("UTC+3:60", parsing.ERR_TIMEZONE_OFFSET),
        ("UTC+99", parsing.ERR_TIMEZONE_OFFSET),
    ],
)
def test_timezone_rejects_invalid_input_with_a_key(text: str, key: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_timezone(args(text))
    assert info.value.key == key


# ---------------------------------------------------------------- /language, /pause, /counters


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", SHOW), ("en", "en"), ("EN", "en"), ("ru", "ru"), ("Ru", "ru"), ("русский", "ru")],
)
def test_language_accepts_en_and_ru_in_any_case(text: str, expected: object) -> None:
    assert parse_language(args(text)) == expected


@pytest.mark.parametrize("text", ["de", "en ru", "e n", "english!"])
def test_language_rejects_anything_else(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_language(args(text))
    assert info.value.key == parsing.ERR_LANGUAGE
    assert info.value.params == {"choices": "en, ru"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SHOW),
        ("1", date(2026, 3, 3)),
        ("7", date(2026, 3, 9)),
        ("365", date(2027, 3, 2)),
        ("2026-03-03", date(2026, 3, 3)),
        ("2027-03-02", date(2027, 3, 2)),
        ("2026-12-31", date(2026, 12, 31)),
    ],
)
def test_pause_accepts_days_or_a_return_date(text: str, expected: object) -> None:
    assert parse_pause(args(text), TODAY) == expected


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("0", parsing.ERR_PAUSE_DAYS),
        ("366", parsing.ERR_PAUSE_DAYS),
        ("999999999", parsing.ERR_PAUSE_DAYS),
        ("-1", parsing.ERR_PAUSE_FORMAT),
        ("1.5", parsing.ERR_PAUSE_FORMAT),
        ("7 days", parsing.ERR_PAUSE_FORMAT),
        ("week", parsing.ERR_PAUSE_FORMAT),
        ("\u0667", parsing.ERR_PAUSE_FORMAT),
        ("2026-02-30", parsing.ERR_PAUSE_FORMAT),
        ("2026-3-5", parsing.ERR_PAUSE_FORMAT),
        ("05.03.2026", parsing.ERR_PAUSE_FORMAT),
        ("2026-03-02", parsing.ERR_PAUSE_DATE),  # today
        ("2026-03-01", parsing.ERR_PAUSE_DATE),
        ("2027-03-03", parsing.ERR_PAUSE_DATE),
    ],
)
def test_pause_rejects_invalid_input_with_a_key(text: str, key: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_pause(args(text), TODAY)
    assert info.value.key == key


def test_pause_date_error_carries_the_allowed_range() -> None:
    with pytest.raises(ParseError) as info:
        parse_pause(["2020-01-01"], TODAY)
    assert info.value.params == {"first": "2026-03-03", "last": "2027-03-02"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("all", "view_all"),
        ("doing", "view_role_responsible"),
        ("Helping", "view_role_accomplice"),
        ("FOLLOWING", "view_role_auditor"),
        ("created", "view_role_originator"),
        ("все", "view_all"),
        ("Делаю", "view_role_responsible"),
        ("помогаю", "view_role_accomplice"),
        ("наблюдаю", "view_role_auditor"),
        ("поручил", "view_role_originator"),
    ],
)
def test_counters_role_accepts_english_and_russian_names(text: str, expected: str | None) -> None:
    assert parse_counters_role(args(text)) == expected


@pytest.mark.parametrize("text", ["view_all", "mine", "doing helping", "0"])
def test_counters_role_rejects_unknown_roles(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_counters_role(args(text))
    assert info.value.key == parsing.ERR_ROLE


# ---------------------------------------------------------------- hostile input, every parser

ARG_PARSERS: list[tuple[str, Callable[[list[str]], object]]] = [
    ("digest", parse_digest),
    ("alerts", parse_alerts),
    ("quiet", parse_quiet),
    ("timezone", parse_timezone),
    ("language", parse_language),
    ("pause", lambda a: parse_pause(a, TODAY)),
    ("counters", parse_counters_role),
]


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize(("name", "parser"), ARG_PARSERS)
def test_hostile_arguments_give_a_clean_parse_error(
    name: str, parser: Callable[[list[str]], object], hostile: str
) -> None:
    for words in ([hostile], ["9:30", hostile], [hostile] * 3, ["overdue", hostile]):
        with pytest.raises(ParseError) as info:
            parser(words)
        assert info.value.key in parsing.ALL_KEYS


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_link_targets_give_a_clean_parse_error_and_codes_give_none(hostile: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_link_target(hostile, HOSTS)
    assert info.value.key in parsing.ALL_KEYS
    assert parse_code(hostile) is None


@pytest.mark.parametrize(
    ("words", "key"),
    [
        (["x" * 10_240], parsing.ERR_TOO_LONG),
        (["a"] * 5000, parsing.ERR_TOO_LONG),
        (["9:30\x00"], parsing.ERR_BAD_CHARACTERS),
        (["mon\u200bfri"], parsing.ERR_BAD_CHARACTERS),
    ],
)
def test_overlong_and_control_input_have_their_own_keys(words: list[str], key: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_digest(words)
    assert info.value.key == key


def test_a_bare_string_instead_of_a_word_list_is_refused_cleanly() -> None:
    with pytest.raises(ParseError):
        parse_digest("9:30 mon-fri")  # type: ignore[arg-type]


def test_every_error_key_is_a_distinct_string() -> None:
    assert len(set(parsing.ALL_KEYS)) == len(parsing.ALL_KEYS) == 28
