"""One refresh of every linked user's counters feeds alerts; digests read what falls due (SPEC section 7)."""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from bot import alerts as alert_rules
from bot import render
from bot.bitrix import BitrixClient, Counters, NoAccess
from bot.config import Settings
from bot.errors import BitrixError
from bot.model import ROLES
from bot.schedule import Due, due_digests, next_digest_due, read_lead_time
from bot.storage import Audience, OutgoingMessage, PollUpdate, Storage
from bot.texts import pick_language, t

log = logging.getLogger(__name__)

COUNTERS_METHOD = "tasks.task.counters.get"
TIME_BUDGET_SECONDS = 480.0  # per method per 10 minutes: the Bitrix24 docs' example limit
TIME_BUDGET_SHARE = 0.8  # keep a fifth of the budget for /counters, digests and other apps
BUDGET_WINDOW = 600.0
NOTICE_REPEAT_SECONDS = 6 * 3600.0
TRANSIENT_MIN_SECONDS = 300.0
TRANSIENT_MIN_CYCLES = 2
PERMANENT_CAUSES = frozenset({"auth", "scope", "plan", "portal_gone", "no_access", "permission"})
DIGEST_LOOKAHEAD = timedelta(minutes=30)
MASS_UNLINK_MIN = 10


@dataclass(frozen=True)
class CycleResult:
    """What one poll cycle came to."""

    users: int
    ok: int
    no_access: int
    failed: int
    cause: str | None  # why the whole cycle failed, None when it did not
    error: BitrixError | None
    requests: int
    seconds: float


def language_for(audience: Audience, default: str) -> str:
    """The language to write to a linked user in."""
    return pick_language(audience.settings.language, audience.language_code, default)


def cycle_cause(results: dict[int, Any]) -> tuple[str | None, BitrixError | None]:
    """The cause of a failed cycle: every user erred (the first error's kind) or every user read as []."""
    if not results:
        return None, None
    values = list(results.values())
    if any(isinstance(v, Counters) for v in values):
        return None, None
    errors = [v for v in values if isinstance(v, BitrixError)]
    if errors:
        return errors[0].kind, errors[0]
    return "no_access", None


def notice_decisions(
    states: dict[str, tuple[float, float | None, bool]],
    cause: str | None,
    now: float,
    failing_cycles: int,
) -> tuple[dict[str, tuple[float, float | None, bool]], list[tuple[str, str, float]]]:
    """Pure: new notice state and the notices to send: ('failing', cause, since) or ('recovered', cause, since)."""
    out = dict(states)
    notices: list[tuple[str, str, float]] = []
    if cause is None:
        for c, (first, told, active) in states.items():
            if active and told is not None:
                notices.append(("recovered", c, first))
        return {}, notices
    for c in list(out):
        if c != cause:
            first, told, active = out[c]
            if active and told is not None:
                notices.append(("recovered", c, first))
            del out[c]
    first, told, _ = out.get(cause, (now, None, True))
    permanent = cause in PERMANENT_CAUSES
    persisted = failing_cycles >= TRANSIENT_MIN_CYCLES and now - first >= TRANSIENT_MIN_SECONDS
    if (permanent or persisted) and (told is None or now - told >= NOTICE_REPEAT_SECONDS):
        notices.append(("failing", cause, first))
        told = now
    out[cause] = (first, told, True)
    return out, notices


def budget_interval(cycle_method_seconds: float, interval: float) -> float:
    """The poll interval that keeps the counters method under its share of the 10-minute time budget."""
    allowed = TIME_BUDGET_SECONDS * TIME_BUDGET_SHARE
    if cycle_method_seconds <= 0:
        return interval
    cycles = allowed / cycle_method_seconds  # cycles that fit in one window
    return max(interval, BUDGET_WINDOW / cycles) if cycles > 0 else BUDGET_WINDOW


def rate_bound_seconds(requests: int, rate: float, burst: int) -> float:
    """How long `requests` take under the client leaky bucket: a burst at once, then `rate` a second."""
    return max(0.0, (requests - burst) / rate)


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{max(minutes, 1)} min"


class Coordinator:
    """Polls view_all for every active linked user, decides alerts, reads and queues digests, tells admins."""

    def __init__(self, settings: Settings, storage: Storage, bitrix: BitrixClient, clock, metrics, wake) -> None:
        self._settings = settings
        self._storage = storage
        self._bitrix = bitrix
        self._clock = clock
        self._metrics = metrics
        self._wake = wake
        self.last_success_at: float | None = None
        self.last_result: CycleResult | None = None
        self._failing_cycles = 0
        self._next_poll_at = 0.0
        self._told_stretch = False
        self.effective_interval = float(settings.poll_interval_seconds)
        self.no_access_users: set[int] = set()
        self.history: deque[tuple[float, int, int]] = deque()  # (time, requests, errors) after each cycle

    def requests_last_hour(self) -> tuple[int, int]:
        """Bitrix24 requests and failed requests in about the last hour (since start if shorter)."""
        stats = self._bitrix.stats
        errors = stats.requests_total - stats.outcomes.get("ok", 0)
        now = self._clock.timestamp()
        older = [h for h in self.history if now - h[0] >= 3600]
        _, requests_then, errors_then = older[-1] if older else (0.0, 0, 0)
        return stats.requests_total - requests_then, errors - errors_then

    def _remember(self) -> None:
        stats = self._bitrix.stats
        now = self._clock.timestamp()
        self.history.append((now, stats.requests_total, stats.requests_total - stats.outcomes.get("ok", 0)))
        while len(self.history) > 1 and now - self.history[1][0] >= 3600:
            self.history.popleft()

    # ---- polling -----------------------------------------------------------------------------

    def _audience_filter(self, audience: dict[int, Audience]) -> dict[int, Audience]:
        return {tid: a for tid, a in audience.items() if self._settings.is_allowed(tid)}

    async def poll_cycle(self) -> CycleResult | None:
        """One refresh; a failed one changes nothing and alerts nobody."""
        now = self._clock.timestamp()
        if now < self._next_poll_at:
            return None  # the time budget asked for a longer interval
        started = self._clock.timestamp()
        audience = self._audience_filter(await self._storage.audience())
        linked, _ = await self._storage.link_counts()
        self._metrics.linked_users.set(linked)
        self._metrics.active_users.set(len(audience))
        by_bitrix = {a.link.bitrix_user_id: a for a in audience.values()}
        requests_before = self._bitrix.stats.requests_total
        method_before = self._bitrix.method_time_used(COUNTERS_METHOD)
        results = {}
        if by_bitrix:
            read = await self._bitrix.counters(list(by_bitrix), ("view_all",))
            results = {bid: roles.get("view_all") for bid, roles in read.items()}
        now_dt = self._clock.now()
        updates: list[PollUpdate] = []
        messages: list[OutgoingMessage] = []
        ok = no_access = failed = 0
        self.no_access_users = set()
        for bid, result in results.items():
            who = by_bitrix[bid]
            if isinstance(result, Counters):
                ok += 1
                update, sent = self._decide(who, result, now_dt)
                updates.append(update)
                messages += sent
            elif isinstance(result, NoAccess):
                no_access += 1
                self.no_access_users.add(bid)
            else:
                failed += 1
        await self._storage.apply_poll(updates, messages, self._clock.timestamp())
        if messages:
            self._wake()
        cause, error = cycle_cause(results)
        seconds = self._clock.timestamp() - started
        result = CycleResult(
            users=len(results), ok=ok, no_access=no_access, failed=failed, cause=cause, error=error,
            requests=self._bitrix.stats.requests_total - requests_before, seconds=seconds,
        )
        self.last_result = result
        self._metrics.poll_cycles.labels("ok" if cause is None else "failed").inc()
        self._metrics.poll_duration.observe(seconds)
        if cause is None:
            self.last_success_at = self._clock.timestamp()
            self._failing_cycles = 0
        else:
            self._failing_cycles += 1
            log.warning("poll cycle failed for all %d users: %s", len(results), cause)
        if failed and cause is None:
            log.info("poll cycle: %d of %d users could not be read; their state is kept", failed, len(results))
        self._remember()
        await self._admin_notices(cause, error)
        await self._pace(len(results), self._bitrix.method_time_used(COUNTERS_METHOD) - method_before, seconds)
        return result

    def _decide(self, who: Audience, counters: Counters, now: datetime) -> tuple[PollUpdate, list[OutgoingMessage]]:
        settings = who.settings
        values = {name: counters.get(name) for name in counters.values}
        lang = language_for(who, self._settings.default_language)
        messages: list[OutgoingMessage] = []
        states = who.states
        summary = None
        if not alert_rules.summary_folds_into_digest(settings, now):
            summary = alert_rules.quiet_summary(settings, states, values, now)
        if summary is not None:
            states = summary.states
            if summary.items:
                messages.append(self._message(who, "quiet", render.render_quiet_summary(lang, summary.items)))
        outcome = alert_rules.evaluate(settings, states, values, now)
        for alert in outcome.send:
            text = render.render_alert(lang, alert, portal_url=self._settings.bitrix24_portal_url, bitrix_user_id=who.link.bitrix_user_id)
            markup = render.alert_keyboard(lang, alert.counter).to_json()
            messages.append(self._message(who, "alert", text, markup))
        return PollUpdate(who.link.telegram_user_id, outcome.states, values), messages

    @staticmethod
    def _message(who: Audience, kind: str, text: str, markup: str | None = None, not_before: float = 0.0) -> OutgoingMessage:
        return OutgoingMessage(who.link.telegram_user_id, who.link.chat_id, kind, text, markup, not_before)

    async def _pace(self, users: int, method_seconds: float, cycle_seconds: float) -> None:
        """Lengthen the interval before the time budget binds; tell admins once when a cycle cannot fit."""
        interval = float(self._settings.poll_interval_seconds)
        by_budget = budget_interval(method_seconds, interval)
        by_rate = rate_bound_seconds(
            math.ceil(users / 50), self._settings.bitrix24_requests_per_second, self._settings.bitrix24_burst
        )
        needed = max(by_budget, by_rate, cycle_seconds)
        self.effective_interval = max(interval, needed)
        self._next_poll_at = self._clock.timestamp() - cycle_seconds + by_budget if by_budget > interval else 0.0
        if needed > interval and not self._told_stretch:
            self._told_stretch = True
            log.warning(
                "a poll cycle for %d users needs %.0f s (time budget %.0f s, rate %.0f s), more than the %d s interval",
                users, needed, by_budget, by_rate, self._settings.poll_interval_seconds,
            )
            await self._tell_admins(
                "admin_cycle_stretched",
                users=users, needed=round(needed), interval=self._settings.poll_interval_seconds, actual=round(needed),
            )
        elif needed <= interval:
            self._told_stretch = False

    # ---- admin notices -----------------------------------------------------------------------

    async def _admin_messages(self, key: str, **values: Any) -> list[OutgoingMessage]:
        out = []
        for admin_id in sorted(await self._storage.known_user_ids(self._settings.admin_telegram_user_ids)):
            user = await self._storage.get_user(admin_id)
            lang = pick_language(user.language if user else None, user.language_code if user else None, self._settings.default_language)
            rendered = {k: (v(lang) if callable(v) else v) for k, v in values.items()}
            out.append(OutgoingMessage(admin_id, user.chat_id, "notice", t(lang, key, **rendered)))
        return out

    async def _tell_admins(self, key: str, **values: Any) -> None:
        messages = await self._admin_messages(key, **values)
        if messages:
            await self._storage.queue(messages, self._clock.timestamp())
            self._wake()

    async def _admin_notices(self, cause: str | None, error: BitrixError | None) -> None:
        now = self._clock.timestamp()
        states = await self._storage.admin_notice_state()
        new_states, notices = notice_decisions(states, cause, now, self._failing_cycles)
        messages: list[OutgoingMessage] = []
        for what, c, since in notices:
            if what == "failing":
                log.error("telling admins: polling fails (%s)", c)

                def reason(lang: str, err: BitrixError | None = error, c: str = c) -> str:
                    return t(lang, "admin_no_access") if c == "no_access" or err is None else err.text(lang)

                messages += await self._admin_messages("admin_poll_failing", reason=reason)
            else:
                log.info("telling admins: polling recovered (%s)", c)
                messages += await self._admin_messages("admin_poll_recovered", duration=_duration(now - since))
        if new_states != states or messages:
            await self._storage.save_admin_notices(new_states, messages, now)
            if messages:
                self._wake()

    # ---- digests -----------------------------------------------------------------------------

    async def digest_tick(self) -> int:
        """Read and queue every digest that is due, or will be before the reads could finish; returns how many."""
        now = self._clock.now()
        audience = self._audience_filter(await self._storage.audience())
        current: list[tuple[Audience, Due]] = []
        upcoming: list[tuple[Audience, Due]] = []
        for who in audience.values():
            s = who.settings
            saved_at = datetime.fromtimestamp(who.digest_saved_at, timezone.utc)
            due = due_digests(s, now, who.last_digest_date, saved_at)
            if due is not None:
                if due.skip:
                    await self._skip(who, due)
                else:
                    current.append((who, due))
                continue
            nxt = next_digest_due(s, now)
            if nxt is not None and nxt[1] - now <= DIGEST_LOOKAHEAD:
                ahead = due_digests(s, nxt[1], who.last_digest_date, saved_at)
                # A paused occurrence is recorded as skipped when it falls due, by the branch above.
                if ahead is not None and not ahead.skip and ahead.due_at_utc == nxt[1]:
                    upcoming.append((who, ahead))
        lead = read_lead_time(len(current) + len(upcoming), 1.0 / self._settings.bitrix24_requests_per_second)
        batch = current + [(w, d) for w, d in upcoming if d.due_at_utc - now <= lead]
        if not batch:
            return 0
        read = await self._bitrix.counters([w.link.bitrix_user_id for w, _ in batch], ROLES)
        queued = 0
        for who, due in batch:
            results = read.get(who.link.bitrix_user_id, {})
            if not results or any(isinstance(r, BitrixError) for r in results.values()):
                continue  # unreadable: tried again next tick, skipped once 2 hours late
            queued += await self._queue_digest(who, due, results, now)
        if queued:
            self._wake()
        return queued

    async def _skip(self, who: Audience, due: Due) -> None:
        log.info("digest of %s for telegram_user_id=%d skipped (%s)", due.local_date, who.link.telegram_user_id, due.reason)
        await self._storage.record_digest(
            who.link.telegram_user_id, due.local_date, due.due_at_utc.timestamp(), "skipped", None, None, None,
            self._clock.timestamp(),
        )

    async def _queue_digest(self, who: Audience, due: Due, results: dict[str, Any], now: datetime) -> int:
        tid = who.link.telegram_user_id
        counters = {role: dict(r.values) for role, r in results.items() if isinstance(r, Counters)}
        shown = [
            v for r in results.values() if isinstance(r, Counters) for n, v in render.counter_items(r)
        ]
        everything_zero = all(isinstance(r, Counters) for r in results.values()) and not any(shown)
        if everything_zero and not who.settings.digest_empty:
            await self._skip(who, replace(due, skip=True, reason="empty"))
            return 0
        previous = await self._storage.last_sent_digest(tid)
        lang = language_for(who, self._settings.default_language)
        quiet_items: tuple = ()
        states = None
        if who.states and any(s.held for s in who.states.values()) and alert_rules.summary_folds_into_digest(who.settings, now):
            snapshot = await self._storage.snapshot(tid)
            view_all = counters.get("view_all") or snapshot or {}
            summary = alert_rules.quiet_summary(who.settings, who.states, view_all, max(now, due.due_at_utc))
            if summary is not None:
                quiet_items, states = summary.items, summary.states
        text = render.render_digest(
            lang, results, previous[1] if previous else None, previous[0] if previous else None,
            scheduled=True, read_at=now.astimezone(who.settings.tz()), portal_url=self._settings.bitrix24_portal_url,
            bitrix_user_id=who.link.bitrix_user_id, quiet_items=quiet_items,
        )
        message = self._message(who, "digest", text, not_before=due.due_at_utc.timestamp())
        recorded = await self._storage.record_digest(
            tid, due.local_date, due.due_at_utc.timestamp(), "sent", counters, message, states, now.timestamp()
        )
        return int(recorded)

    # ---- daily re-check ----------------------------------------------------------------------

    async def recheck_links(self) -> int:
        """Unlink users Bitrix24 no longer reports as active (and tell them once); returns how many."""
        audience = await self._storage.audience()
        if not audience:
            return 0
        by_bitrix = {a.link.bitrix_user_id: a for a in audience.values()}
        active = await self._bitrix.users_by_ids(list(by_bitrix))
        gone = [a for bid, a in by_bitrix.items() if bid not in active]
        if len(by_bitrix) >= MASS_UNLINK_MIN and len(gone) > len(by_bitrix) / 2:
            # More likely a misconfigured webhook (scope, filters) than half the company leaving at once.
            log.warning("daily re-check: %d of %d linked users look inactive; unlinking nobody", len(gone), len(by_bitrix))
            return 0
        now = self._clock.timestamp()
        for who in gone:
            await self._storage.unlink(who.link.telegram_user_id, now)
            lang = language_for(who, self._settings.default_language)
            await self._storage.queue([self._message(who, "notice", t(lang, "unlinked_inactive"))], now)
            log.info("telegram_user_id=%d unlinked: bitrix_user_id=%d is no longer active", who.link.telegram_user_id, who.link.bitrix_user_id)
        await self._storage.mark_checked([a.link.telegram_user_id for a in audience.values()], now)
        if gone:
            self._wake()
        return len(gone)
