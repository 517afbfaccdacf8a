"""One redaction for every log line and error text: bot tokens, webhook codes, given secrets."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["RedactFilter", "redact"]

_PATTERNS = (
    # Telegram Bot API URLs: https://api.telegram.org/bot<token>/method
    (re.compile(r"/bot\d+:[A-Za-z0-9_-]+"), "/bot<redacted>"),
    # A bare bot token: <bot id>:<35 or so characters>
    (re.compile(r"\b\d{6,12}:[A-Za-z0-9_-]{30,}"), "<redacted-token>"),
    # Bitrix24 inbound webhooks: /rest/<user id>/<webhook code>/ (webhooks.md)
    (re.compile(r"(/rest/\d+/)[^/\s?#\"'<>]+"), r"\1<redacted>"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove the given secret strings, bot tokens and webhook codes from text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactFilter(logging.Filter):
    """A logging filter that redacts a record's message in place (for loggers such as httpx)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drop it."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record must not break logging; leave it alone
            return True
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
