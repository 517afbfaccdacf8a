"""Logging to stdout, one line per event, with every secret redacted (SPEC sections 3 and 10)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import IO

from bot.redact import redact

__all__ = ["RedactingFormatter", "redact", "setup_logging"]


class RedactingFormatter(logging.Formatter):
    """Formats the whole record, traceback included, then scrubs secrets from the result."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        """Format, then redact; a multi-line traceback is kept on continuation lines."""
        return redact(super().format(record), self.secrets)


def setup_logging(level: str, secrets: Iterable[str], stream: IO[str] | None = None) -> None:
    """Route every logger to stdout through the redacting formatter; DEBUG lowers only the bot's own."""
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(RedactingFormatter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    wanted = logging.getLevelName(level)
    # Below INFO the libraries log what passes through them: python-telegram-bot every update and
    # every request's parameters (message texts, the bot's replies, /verify codes), aiosqlite every
    # statement with its arguments (the outbox's texts). SPEC 10 promises no message text in logs,
    # so everything but the bot's own loggers stays at INFO or above whatever LOG_LEVEL says.
    root.setLevel(max(logging.INFO, wanted))
    logging.getLogger("bot").setLevel(wanted)
    # httpx logs every URL at INFO, and both URLs carry a secret: keep it at WARNING.
    for noisy in ("httpx", "httpcore", "apscheduler.executors.default", "apscheduler.scheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, wanted))
