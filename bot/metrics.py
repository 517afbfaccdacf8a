"""Prometheus metrics on a registry of the bot's own (one per Application, so tests stay apart)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class _BitrixCollector(Collector):
    """Reads the Bitrix24 client's own counts at scrape time, so there is one source of truth."""

    def __init__(self, services: Any) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        stats = self._services.bitrix.stats
        requests = CounterMetricFamily("bot_bitrix24_requests", "Bitrix24 HTTP requests by outcome", labels=["outcome"])
        for outcome, count in sorted(stats.outcomes.items()):
            requests.add_metric([outcome], count)
        yield requests
        yield CounterMetricFamily("bot_bitrix24_http_503", "QUERY_LIMIT_EXCEEDED (503) answers received", value=stats.http_503)
        yield CounterMetricFamily("bot_bitrix24_http_429", "OPERATION_TIME_LIMIT (429) answers received", value=stats.http_429)
        yield CounterMetricFamily("bot_bitrix24_retries", "Bitrix24 requests retried", value=stats.retries)
        coordinator = self._services.coordinator
        yield GaugeMetricFamily(
            "bot_bitrix24_method_time_seconds",
            "tasks.task.counters.get execution time in the last 10 minutes (time budget)",
            value=self._services.bitrix.method_time_used("tasks.task.counters.get"),
        )
        yield GaugeMetricFamily("bot_poll_interval_seconds", "Effective poll interval", value=coordinator.effective_interval)
        yield GaugeMetricFamily("bot_no_access_users", "Users whose counters read as [] in the last cycle", value=len(coordinator.no_access_users))
        last = coordinator.last_success_at
        yield GaugeMetricFamily("bot_last_poll_success_timestamp", "When the last poll cycle succeeded", value=last or 0)


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
        self.messages = Counter("bot_messages", "Outgoing bulk messages by outcome", ["outcome"], registry=r)
        self.queue_length = Gauge("bot_outbox_queued", "Bulk messages waiting in the outbox", registry=r)
        self.events_received = Counter(
            "bot_events_received", "Valid Bitrix24 events received, by event name", ["event"], registry=r
        )
        self.events_rejected = Counter(
            "bot_events_rejected", "Requests to the events endpoint rejected or ignored, by reason", ["reason"], registry=r
        )
        self.event_refreshes = Counter("bot_event_refreshes", "Users' counters read again because of an event", registry=r)
        self.event_latency = Histogram(
            "bot_event_to_sent_seconds", "From an event's receipt to the alert it caused being sent", registry=r,
            buckets=(0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300),
        )
        self.event_overflow = Counter("bot_events_overflow", "Events dropped because pending work was full", registry=r)
        self.event_shed = Counter("bot_events_shed", "Event tasks and refreshes shed for the time budget", registry=r)
        self.event_failures = Counter("bot_event_read_failures", "Failed reads of an event's task members", registry=r)
        self.worker_errors = Counter(
            "bot_worker_errors", "Failures caught in background work, by worker (it logs them and goes on)", ["worker"], registry=r
        )

    @staticmethod
    def total(counter: Counter) -> int:
        """A counter's value summed over its labels."""
        return int(sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total")))

    def watch(self, services: Any) -> None:
        """Export the Bitrix24 client's and the coordinator's figures too."""
        self.registry.register(_BitrixCollector(services))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
