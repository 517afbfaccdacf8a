"""Tests for bot.logs: at LOG_LEVEL=DEBUG the bot's own lines appear, no library's request bodies (SPEC 10)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.logs import setup_logging
from tests.harness import Harness
from tests.test_linking import ANNA, code_sent_to


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging changes process-wide state: put the root handlers and levels back afterwards."""
    names = ("bot", "httpx", "httpcore", "apscheduler.executors.default", "apscheduler.scheduler")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("restore_logging")
def test_debug_lowers_only_the_bots_own_loggers() -> None:
    setup_logging("DEBUG", (), stream=io.StringIO())
    assert logging.getLogger("bot.bitrix").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("bot").isEnabledFor(logging.DEBUG)
    for library in ("telegram", "telegram.ext.ExtBot", "telegram.ext.Application", "aiosqlite", "aiohttp.access"):
        assert not logging.getLogger(library).isEnabledFor(logging.DEBUG), library
        assert logging.getLogger(library).isEnabledFor(logging.INFO), library
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)  # its URLs carry the secrets


@pytest.mark.usefixtures("restore_logging")
def test_warning_silences_the_bots_info_lines_too() -> None:
    setup_logging("WARNING", (), stream=io.StringIO())
    assert not logging.getLogger("bot.storage").isEnabledFor(logging.INFO)
    assert not logging.getLogger("telegram.ext.Application").isEnabledFor(logging.INFO)
    assert logging.getLogger("telegram.ext.Application").isEnabledFor(logging.WARNING)


@pytest.mark.usefixtures("restore_logging")
async def test_a_verify_at_debug_logs_the_bots_debug_lines_but_no_code_and_no_message_text(tmp_path: Path) -> None:
    h = Harness(tmp_path, LOG_LEVEL="DEBUG")
    h.b24.add_user(ANNA, "Anna", "Smith")
    h.b24.set_counters(ANNA, "view_all", expired=3, new_comments=5)
    stream = io.StringIO()
    setup_logging(h.settings.log_level, h.settings.secrets, stream=stream)
    async with h, h.polling():  # real getUpdates, update queue and sendMessage calls, as in production
        await h.together(h.tg.message(42, "/link 547"), answers=1, chat_id=42)
        code = code_sent_to(h, ANNA)
        answers = await h.together(h.tg.message(42, f"/verify {code}"), answers=2, chat_id=42)
    assert "Anna Smith" in answers[0] and "Overdue 3" in answers[1]  # it really linked
    text = stream.getvalue()
    assert " DEBUG bot.bitrix: bitrix " in text  # the bot's own DEBUG lines are kept
    assert " INFO telegram.ext.Application: " in text  # and the libraries' INFO lines
    assert code not in text
    assert "/verify" not in text and "/link 547" not in text
    assert "Anna Smith" not in text and "one-time code" not in text
    for sent in h.tg.texts(42):
        assert sent not in text
