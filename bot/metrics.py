"""Prometheus metrics on a registry of the bot's own (one per Application, so tests stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """The figures /metrics exports and /stats shows."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.linked_users = Gauge("bot_linked_users", "Linked users", registry=r)
        self.active_users = Gauge("bot_active_users", "Linked users who are polled (not blocked, allowed)", registry=r)
        self.poll_cycles = Counter("bot_poll_cycles", "Poll cycles by result", ["result"], registry=r)
        self.poll_duration = Histogram(
            "bot_poll_cycle_seconds", "Duration of a poll cycle", registry=r,
            buckets=(1, 5, 15, 30, 60, 90, 120, 300, 600, 1800),
        )
        self.bitrix_requests = Counter("bot_bitrix24_requests", "Bitrix24 HTTP requests by outcome", ["outcome"], registry=r)
        self.bitrix_503 = Counter("bot_bitrix24_http_503", "QUERY_LIMIT_EXCEEDED answers received", registry=r)
        self.bitrix_429 = Counter("bot_bitrix24_http_429", "OPERATION_TIME_LIMIT answers received", registry=r)
        self.messages = Counter("bot_messages", "Outgoing bulk messages by outcome", ["outcome"], registry=r)
        self.queue_length = Gauge("bot_outbox_queued", "Bulk messages waiting in the outbox", registry=r)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
