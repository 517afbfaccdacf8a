"""Bitrix24 outbound-webhook events (SPEC 14): the listener that checks them and the work they set off."""

from bot.events.intake import EVENT_NAMES, PATH, EventsServer, TaskEvent, Verdict, judge
from bot.events.work import LAST_EVENT_KEY, EventWork

__all__ = ["EVENT_NAMES", "LAST_EVENT_KEY", "PATH", "EventWork", "EventsServer", "TaskEvent", "Verdict", "judge"]
