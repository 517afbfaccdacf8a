"""Settings: defaults, every variable validated, secrets never echoed."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from bot.config import SettingsError, load_settings, read_dotenv

TOKEN = "123456:FAKE-token_abcdefghijklmnopqrstuvwxyz012"
HOOK = "https://corp.bitrix24.com/rest/1/fakewebhookcode0123456789/"
BASE = {"TELEGRAM_BOT_TOKEN": TOKEN, "BITRIX24_WEBHOOK_URL": HOOK}


def test_defaults_fill_every_optional_setting(tmp_path: Path) -> None:
    s = load_settings(BASE, tmp_path / "none.env")
    assert s.telegram_api_base_url == "https://api.telegram.org"
    assert s.bitrix24_portal_url == "https://corp.bitrix24.com"
    assert s.database_path == Path("data/bot.sqlite3")
    assert (s.poll_interval_seconds, s.bitrix24_requests_per_second, s.bitrix24_burst) == (300, 2.0, 50)
    assert (s.default_timezone, s.default_digest_time, s.default_language) == ("UTC", time(9, 0), "en")
    assert s.link_verification == "code" and s.health_port is None
    assert TOKEN not in repr(s) and "fakewebhookcode" not in repr(s)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("https://corp.bitrix24.com/rest/1/abc123/", HOOK.replace("fakewebhookcode0123456789", "abc123")),
        ("https://corp.bitrix24.com/rest/1/abc123", "https://corp.bitrix24.com/rest/1/abc123/"),
        ("https://corp.bitrix24.com/rest/1/abc123/profile.json", "https://corp.bitrix24.com/rest/1/abc123/"),
        ("https://corp.bitrix24.com/rest/1/abc123/user.current", "https://corp.bitrix24.com/rest/1/abc123/"),
        ("http://10.0.0.5:8080/rest/7/abc123/", "http://10.0.0.5:8080/rest/7/abc123/"),
    ],
)
def test_webhook_url_is_normalised(raw: str, expected: str, tmp_path: Path) -> None:
    s = load_settings({**BASE, "BITRIX24_WEBHOOK_URL": raw}, tmp_path / "none.env")
    assert s.bitrix24_webhook_url == expected


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("TELEGRAM_BOT_TOKEN", "not-a-token", "TELEGRAM_BOT_TOKEN:"),
        ("TELEGRAM_API_BASE_URL", "http://127.0.0.1:8081/bot", "without /bot"),
        ("TELEGRAM_API_BASE_URL", "ftp://x", "TELEGRAM_API_BASE_URL:"),
        ("BITRIX24_WEBHOOK_URL", "https://corp.bitrix24.com/rest/abc/", "BITRIX24_WEBHOOK_URL:"),
        ("BITRIX24_WEBHOOK_URL", "http://corp.bitrix24.com/rest/1/secretcode9/", "https://"),
        ("BITRIX24_PORTAL_URL", "corp.bitrix24.com", "BITRIX24_PORTAL_URL:"),
        ("BITRIX24_CA_FILE", "/nonexistent/ca.pem", "BITRIX24_CA_FILE:"),
        ("POLL_INTERVAL_SECONDS", "0", "POLL_INTERVAL_SECONDS:"),
        ("POLL_INTERVAL_SECONDS", "86401", "POLL_INTERVAL_SECONDS:"),
        ("POLL_INTERVAL_SECONDS", "five", "POLL_INTERVAL_SECONDS:"),
        ("BITRIX24_REQUESTS_PER_SECOND", "0", "BITRIX24_REQUESTS_PER_SECOND:"),
        ("BITRIX24_BURST", "-1", "BITRIX24_BURST:"),
        ("DEFAULT_TIMEZONE", "Mars/Olympus", "DEFAULT_TIMEZONE:"),
        ("DEFAULT_DIGEST_TIME", "25:00", "DEFAULT_DIGEST_TIME:"),
        ("DEFAULT_LANGUAGE", "de", "DEFAULT_LANGUAGE:"),
        ("LINK_VERIFICATION", "maybe", "LINK_VERIFICATION:"),
        ("LINK_VERIFICATION", "none", "ALLOWED_TELEGRAM_USER_IDS"),
        ("ALLOWED_TELEGRAM_USER_IDS", "12, -5", "ALLOWED_TELEGRAM_USER_IDS:"),
        ("ADMIN_TELEGRAM_USER_IDS", "abc", "ADMIN_TELEGRAM_USER_IDS:"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL:"),
        ("HEALTH_PORT", "70000", "HEALTH_PORT:"),
    ],
)
def test_each_bad_setting_is_named_in_one_line(name: str, value: str, fragment: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({**BASE, name: value}, tmp_path / "none.env")
    assert len(info.value.problems) == 1
    assert fragment in info.value.problems[0]
    assert "secretcode9" not in str(info.value) and TOKEN not in str(info.value)


def test_ca_file_must_hold_pem_certificates(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate", encoding="utf-8")
    with pytest.raises(SettingsError, match="BITRIX24_CA_FILE: is not a PEM bundle"):
        load_settings({**BASE, "BITRIX24_CA_FILE": str(bogus)}, tmp_path / "none.env")


def test_missing_required_settings_are_all_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({}, tmp_path / "none.env")
    assert [p.split(":")[0] for p in info.value.problems] == ["TELEGRAM_BOT_TOKEN", "BITRIX24_WEBHOOK_URL"]


def test_dotenv_fills_only_unset_variables(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "# comment\nexport TELEGRAM_BOT_TOKEN='" + TOKEN + "'\n"
        f'BITRIX24_WEBHOOK_URL="{HOOK}"\nLOG_LEVEL=debug  # inline\nPOLL_INTERVAL_SECONDS=60\nDEFAULT_LANGUAGE=\n',
        encoding="utf-8",
    )
    assert read_dotenv(env)["LOG_LEVEL"] == "debug"
    s = load_settings({"POLL_INTERVAL_SECONDS": "120", "DEFAULT_LANGUAGE": ""}, env)
    assert s.telegram_bot_token == TOKEN and s.log_level == "DEBUG"
    assert s.poll_interval_seconds == 120  # the environment wins over .env
    assert s.default_language == "en"  # empty means unset


def test_dotenv_reads_what_python_dotenv_reads_taking_values_literally(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "export   A=plain\n"
        "B='single # not a comment'\n"
        'C="double \\"quoted\\" # kept"\n'
        "D=unquoted # a comment\n"
        "E=has#hash\n"
        "F=p$ss${HOME}\n"
        "G='line one\nline two'\n"
        "H\n"
        "  I = spaced  \n",
        encoding="utf-8",
    )
    assert read_dotenv(env) == {
        "A": "plain",
        "B": "single # not a comment",
        "C": 'double "quoted" # kept',
        "D": "unquoted",
        "E": "has#hash",
        "F": "p$ss${HOME}",  # no expansion: a `$` in a secret stays as written
        "G": "line one\nline two",
        "I": "spaced",
    }  # H has no `=`: left out, never an empty setting
    assert read_dotenv(tmp_path / "missing.env") == {}


def test_allow_list_accepts_commas_and_spaces_and_admins_are_always_allowed(tmp_path: Path) -> None:
    s = load_settings(
        {**BASE, "ALLOWED_TELEGRAM_USER_IDS": "1, 2 3", "ADMIN_TELEGRAM_USER_IDS": "9", "LINK_VERIFICATION": "none"},
        tmp_path / "none.env",
    )
    assert s.allowed_telegram_user_ids == {1, 2, 3}
    assert s.is_allowed(2) and s.is_allowed(9) and not s.is_allowed(4)


EVENTS = "jvh9y1ulvt2m6k5or90v9mg8nn32ozas"


def test_events_are_off_by_default_and_on_with_the_token(tmp_path: Path) -> None:
    off = load_settings(BASE, tmp_path / "none.env")
    assert not off.events_on and (off.events_port, off.events_bind_address, off.events_public_url) == (8090, "127.0.0.1", "")
    on = load_settings({**BASE, "BITRIX24_EVENTS_TOKEN": EVENTS, "EVENTS_BIND_ADDRESS": "0.0.0.0"}, tmp_path / "none.env")
    assert on.events_on and on.events_bind_address == "0.0.0.0"
    assert EVENTS in on.secrets and EVENTS not in repr(on)
    assert on.portal_domains == {"corp.bitrix24.com"}


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"BITRIX24_EVENTS_TOKEN": "short"}, "BITRIX24_EVENTS_TOKEN: must be the application token"),
        ({"BITRIX24_EVENTS_TOKEN": EVENTS + " x"}, "BITRIX24_EVENTS_TOKEN: must be the application token"),
        ({"BITRIX24_EVENTS_TOKEN": EVENTS, "HEALTH_PORT": "8090"}, "EVENTS_PORT: must differ from HEALTH_PORT"),
        ({"BITRIX24_EVENTS_TOKEN": EVENTS, "HEALTH_PORT": "8080", "EVENTS_PORT": "8080"}, "EVENTS_PORT: must differ"),
        ({"EVENTS_PORT": "70000"}, "EVENTS_PORT: must be a whole number from 1 to 65535"),
        ({"EVENTS_BIND_ADDRESS": "example.com"}, "EVENTS_BIND_ADDRESS: must be an IP address"),
        ({"EVENTS_PUBLIC_URL": "bot.example.com/events"}, "EVENTS_PUBLIC_URL: must be an http(s) URL"),
    ],
)
def test_bad_event_settings_are_named_and_the_token_never_echoed(env: dict[str, str], problem: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({**BASE, **env}, tmp_path / "none.env")
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems
    for value in env.values():
        if value.startswith(("short", EVENTS)):
            assert value not in str(err.value)
