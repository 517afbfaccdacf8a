"""Bitrix24 client package: the only code that knows Bitrix24 URLs, envelopes, batch and limits."""

from bot.bitrix.budget import (
    BUDGET_WINDOW,
    BULK_SHARE,
    DEFAULT_BLOCK,
    DEFAULT_LIMIT,
    TimeBudget,
)
from bot.bitrix.client import (
    BATCH_SIZE,
    COUNTERS_IN_FLIGHT,
    COUNTERS_METHOD,
    INTERACTIVE_DEADLINE,
    BitrixClient,
)
from bot.bitrix.results import (
    NO_ACCESS,
    BatchResult,
    BitrixUser,
    CounterResult,
    Counters,
    NoAccess,
    Operating,
)
from bot.bitrix.transport import (
    BitrixStats,
    CircuitBreaker,
    LeakyBucket,
    RedactFilter,
    build_http_client,
    normalize_webhook_url,
    php_query,
    redact,
)

__all__ = [
    "BATCH_SIZE",
    "BUDGET_WINDOW",
    "BULK_SHARE",
    "COUNTERS_IN_FLIGHT",
    "COUNTERS_METHOD",
    "DEFAULT_BLOCK",
    "DEFAULT_LIMIT",
    "INTERACTIVE_DEADLINE",
    "NO_ACCESS",
    "BatchResult",
    "BitrixClient",
    "BitrixStats",
    "BitrixUser",
    "CircuitBreaker",
    "CounterResult",
    "Counters",
    "LeakyBucket",
    "NoAccess",
    "Operating",
    "RedactFilter",
    "TimeBudget",
    "build_http_client",
    "normalize_webhook_url",
    "php_query",
    "redact",
]
