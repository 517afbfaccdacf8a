"""Tests for bot.redact: one redaction for log lines, httpx records and error texts."""

from __future__ import annotations

import logging

import bot.bitrix
import bot.logs
from bot.bitrix import build_http_client
from bot.redact import RedactFilter, redact

CODE = "fakewebhookcode0123456789"
TOKEN = "123456789:AAE" + "x" * 32


def test_the_formatter_the_httpx_filter_and_bot_bitrix_use_the_same_function():
    assert bot.logs.redact is redact
    assert bot.bitrix.redact is redact


def test_redact_removes_webhook_codes_bot_tokens_and_given_secrets():
    text = f"POST https://a.test/rest/7/{CODE}/batch https://api.telegram.org/bot{TOKEN}/getMe {TOKEN} hunter2"
    cleaned = redact(text, ["hunter2"])
    assert CODE not in cleaned and TOKEN not in cleaned and "hunter2" not in cleaned
    assert "/rest/7/<redacted>/batch" in cleaned
    assert "/bot<redacted>/getMe" in cleaned


async def test_the_httpx_logger_filter_also_hides_a_telegram_token(caplog):
    async with build_http_client():
        pass  # installs the filter on the httpx logger
    assert any(isinstance(f, RedactFilter) for f in logging.getLogger("httpx").filters)
    caplog.set_level(logging.INFO, logger="httpx")
    logging.getLogger("httpx").info("HTTP Request: POST %s", f"https://api.telegram.org/bot{TOKEN}/getMe")
    logging.getLogger("httpx").info("HTTP Request: POST %s", f"https://a.test/rest/1/{CODE}/profile")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "HTTP Request: POST https://api.telegram.org/bot<redacted>/getMe",
        "HTTP Request: POST https://a.test/rest/1/<redacted>/profile",
    ]


def test_a_filter_with_secrets_removes_them_and_never_drops_a_record():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s", ("s3cret-value",), None)
    assert RedactFilter(["s3cret-value"]).filter(record) is True
    assert record.getMessage() == "token=<redacted>"
