"""Services: everything handlers and jobs need, built once and reached through a typed context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from telegram.ext import CallbackContext, ExtBot

from bot.account import Accounts
from bot.bitrix import BitrixClient
from bot.clock import Clock
from bot.config import Settings
from bot.coordinator import Coordinator
from bot.events import EventsServer, EventWork, Verdict
from bot.linking import Linker
from bot.metrics import Metrics
from bot.projects import Projects
from bot.reader import CounterReader
from bot.storage import Storage
from bot.tasks import TaskLists
from bot.team import TeamViews

if TYPE_CHECKING:
    from bot.delivery import OutboxWorker
    from bot.supervise import Supervisor


@dataclass
class Services:
    """Built once in __main__ (or a test) from settings and I/O objects, then passed in."""

    settings: Settings
    storage: Storage
    clock: Clock
    bitrix: BitrixClient
    metrics: Metrics = field(default_factory=Metrics)
    started_at: float = 0.0
    outbox: OutboxWorker | None = None
    supervisor: Supervisor | None = None

    def __post_init__(self) -> None:
        self.accounts = Accounts(self.settings, self.storage, self.clock, self.wake_outbox)
        self.linker = Linker(self.settings, self.storage, self.bitrix, self.clock, self.accounts)
        self.reader = CounterReader(self.bitrix, self.clock)
        self.coordinator = Coordinator(self.settings, self.storage, self.bitrix, self.clock, self.metrics, self.accounts)
        self.task_lists = TaskLists(self.bitrix, self.clock, self.reader.reads, self.coordinator.task_filter_ignored)
        self.team = TeamViews(
            self.settings, self.storage, self.bitrix, self.clock, self.reader.reads, self.coordinator.team_filter_ignored
        )
        self.accounts.link_ended.append(self.team.forget)  # a user's team cache goes with their link (SPEC 12)
        self.coordinator.team = self.team
        self.projects = Projects(
            self.settings, self.storage, self.bitrix, self.clock, self.wake_outbox, self.coordinator.task_filter_ignored
        )
        # Bitrix24 events (SPEC 14): the work exists only when the outbound webhook's token is set;
        # the listener is started with the jobs.
        self.events: EventWork | None = None
        if self.settings.events_on:
            self.events = EventWork(
                self.settings, self.storage, self.bitrix, self.coordinator.refresh, self.clock, self.metrics,
                poll_idle=self.coordinator.poll_idle,
            )
        self.events_server: EventsServer | None = None
        self.metrics.watch(self)

    def count_event(self, verdict: Verdict) -> None:
        """Metrics of one request to the events endpoint: received by event name, rejected or ignored by reason."""
        if verdict.name is not None:
            self.metrics.events_received.labels(verdict.name).inc()
        if verdict.reason != "ok":
            self.metrics.events_rejected.labels(verdict.reason).inc()

    def events_server_for(self) -> EventsServer:
        """A listener wired to this bot's event work, metrics and admin notice (not started)."""
        work = self.events
        if work is None:
            raise RuntimeError("events are off: BITRIX24_EVENTS_TOKEN is not set")
        return EventsServer(
            token=self.settings.bitrix24_events_token,
            domains=self.settings.portal_domains,
            accept=work.add,
            count=self.count_event,
            domain_mismatch=self.coordinator.events_domain_mismatch,
            clock=self.clock.timestamp,
        )

    def wake_outbox(self) -> None:
        """New bulk messages were queued."""
        if self.outbox is not None:
            self.outbox.wake()


class BotContext(CallbackContext[ExtBot, dict, dict, dict]):
    """CallbackContext with typed access to the services."""

    @property
    def services(self) -> Services:
        """The bot's services."""
        return self.application.bot_data["services"]
