"""One refresh of every linked user's counters feeds alerts; digests read what falls due (SPEC section 7)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from telegram import InlineKeyboardMarkup

from bot import alerts as alert_rules
from bot import render, tasklist, teamview
from bot.account import Accounts
from bot.bitrix import BATCH_SIZE, BitrixClient, CircuitBreaker, CounterResult, Counters, NoAccess, Priority
from bot.bitrix.results import Task
from bot.config import Settings
from bot.errors import BitrixError
from bot.model import ROLES
from bot.schedule import Due, due_digests, next_digest_due, read_lead_time
from bot.storage import (
    Audience,
    Db,
    OutgoingMessage,
    Storage,
    alerts,
    audience,
    digests,
    limits,
    links,
    meta,
    outbox,
    task_members,
    users,
)
from bot.tasks import row_fits
from bot.teamview import Member
from bot.texts import t

log = logging.getLogger(__name__)

COUNTERS_METHOD = "tasks.task.counters.get"
BUDGET_KEY = "time_budget"  # the client's time-budget window, kept across restarts (meta)
NOTICE_REPEAT_SECONDS = 6 * 3600.0
TRANSIENT_MIN_SECONDS = 300.0
TRANSIENT_MIN_CYCLES = 2
PERMANENT_CAUSES = frozenset({"auth", "scope", "plan", "portal_gone", "no_access", "permission"})
DIGEST_LOOKAHEAD = timedelta(minutes=30)
MASS_UNLINK_MIN = 10
RECHECK_EVERY = 24 * 3600.0
OUTBOX_KEEP_SECONDS = 30 * 86400.0  # SPEC 9: sent and failed rows are deleted after 30 days
DIGEST_LOG_KEEP_DAYS = 60
LIMIT_RECORDS_KEEP_SECONDS = 2 * 3600.0  # the longest limit window is one hour
APPLY_CHUNK = 50  # users decided per transaction: short transactions, few commits
# Scheduled work goes in chunks: read a chunk, decide it, write it, drop it, so memory does not
# grow with the number of users (SPEC 8). Read chunks are whole batches, so the request bounds
# ceil(N/50) and ceil(D/10) of SPEC 8 still hold.
POLL_CHUNK = 1000  # users whose view_all is read at a time: 20 batches of 50
DIGEST_CHUNK = 200  # due users whose five roles are read at a time: 20 batches of 10
SCAN_PAGE = 500  # users looked at at a time when finding whose digest is due
RECHECK_CHUNK = 500  # links re-read at a time: 10 user.get requests of 50
STATE_KEY = "coordinator"
TASKS_METHOD = "tasks.task.list"
DIGEST_TASK_LINES = 3  # SPEC 11: the digest shows up to 3 most overdue tasks
TASK_FILTER_KEY = "notice:task_filter_ignored"  # when admins were last told the portal ignores the list filter
TEAM_FILTER_KEY = "notice:team_filter_ignored"  # ... and the user.get UF_DEPARTMENT filter (SPEC 12)
EVENTS_DOMAIN_KEY = "notice:events_domain"  # admins were told an event with the right token named another domain
TASK_MEMBERS_KEEP_SECONDS = 30 * 86400.0  # SPEC 9: task-member rows of tasks unseen for 30 days


class TeamSource(Protocol):
    """Where heads' digests get their team members and counters (bot.team.TeamViews)."""

    async def digest_teams(self, heads: Mapping[int, int]) -> dict[int, tuple[Member, ...]]:
        """Telegram ID -> the members of that due head's team; never raises."""
        ...


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
    finished_at: float = 0.0
    skipped: int = 0  # read, but unlinked, moved, blocked or forgotten before the write
    broken: int = 0  # their decision failed (bad stored data): logged, the others went on


@dataclass
class ReadTally:
    """What the reads of a cycle came to so far, chunk by chunk: counts, the first error, who read as []."""

    ok: int = 0
    no_access: int = 0
    failed: int = 0
    first_error: BitrixError | None = None
    no_access_users: set[int] = field(default_factory=set)

    @property
    def users(self) -> int:
        """Users counted so far."""
        return self.ok + self.no_access + self.failed

    def add(self, bitrix_user_id: int, value: CounterResult) -> None:
        """Count one user's view_all result."""
        if isinstance(value, Counters):
            self.ok += 1
        elif isinstance(value, NoAccess):
            self.no_access += 1
            self.no_access_users.add(bitrix_user_id)
        else:
            self.failed += 1
            self.first_error = self.first_error or value

    def cause(self) -> tuple[str | None, BitrixError | None]:
        """The cause of a failed cycle: every user erred (the first error's kind) or every user read as []."""
        if self.ok or not self.users:
            return None, None
        if self.first_error is not None:
            return self.first_error.kind, self.first_error
        return "no_access", None


def repeating_failure(values: Iterable[CounterResult]) -> BitrixError | None:
    """The error of a chunk whose every read failed in a way that would fail the next chunks too, else None.

    The client's CircuitBreaker does this inside one call; across the chunks of a cycle the
    coordinator does it, so that a revoked webhook or a portal that does not answer costs one
    round of requests, not one per chunk.
    """
    first: CounterResult | None = None
    for value in values:
        if not isinstance(value, BitrixError):
            return None
        first = first or value
    return first if isinstance(first, CircuitBreaker.TRIPS) else None


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


def rate_bound_seconds(requests: int, rate: float, burst: int) -> float:
    """How long `requests` take under the client leaky bucket: a burst at once, then `rate` a second."""
    return max(0.0, (requests - burst) / rate)


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{max(minutes, 1)} min"


# One digest to settle: the user as read before, the occurrence, the roles read (None: record it
# as skipped), its task lines and, for a head, their team.
_Settle = tuple[Audience, Due, dict[str, CounterResult] | None, tuple[Task, ...], tuple[Member, ...] | None]


@dataclass
class _DigestRound:
    """One digest tick's state across its chunks."""

    lines_wanted: list[_Settle] = field(default_factory=list)  # read, waiting for their task lines (fewer than 50 between chunks)
    stopped: BitrixError | None = None  # a whole chunk failed in a way that would repeat: no more reads this tick
    lines_off: bool = False  # the portal ignored the list filter: no more task lines this tick
    lines_shed: int = 0  # users whose task lines the time budget left out
    teams: dict[int, tuple[Member, ...]] = field(default_factory=dict)  # due heads' team members, by Telegram ID
    queued: int = 0


class Coordinator:
    """Polls view_all for every active linked user, decides alerts, reads and queues digests, tells admins.

    Every decision is a unit of work: the network read happens first, then one transaction
    re-reads what the decision depends on (link, settings, alert states, digest log) and
    writes the outcome with the messages it causes. A change a user made during the read is
    therefore seen, never overwritten.
    """

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        bitrix: BitrixClient,
        clock: Any,
        metrics: Any,
        accounts: Accounts,
    ) -> None:
        self._settings = settings
        self._storage = storage
        self._bitrix = bitrix
        self._clock = clock
        self._metrics = metrics
        self._accounts = accounts
        self.last_success_at: float | None = None
        self.last_result: CycleResult | None = None
        self._failing_cycles = 0
        self._told_stretch = False
        self.effective_interval = float(settings.poll_interval_seconds)
        self.no_access_users: set[int] = set()
        self.history: deque[tuple[float, int, int]] = deque()  # (time, requests, errors) after each cycle
        self.poll_idle = asyncio.Event()  # clear while a poll cycle runs
        self.poll_idle.set()
        self.team: TeamSource | None = None  # the team lines of heads' digests (SPEC 12), set by Services

    # ---- state kept across restarts ---------------------------------------------------------

    async def restore(self) -> None:
        """Read back what the last run knew: failing cycles, the stretch notice, the last good cycle."""
        self._bitrix.budget.restore(await meta.get_json(self._storage.db, BUDGET_KEY), self._clock.timestamp())
        saved = await meta.get_json(self._storage.db, STATE_KEY) or {}
        self._failing_cycles = int(saved.get("failing_cycles", 0))
        self._told_stretch = bool(saved.get("told_stretch", False))
        self.effective_interval = max(float(self._settings.poll_interval_seconds), float(saved.get("interval", 0)))

    async def _save_state(self, db: Db) -> None:
        await meta.put_json(db, BUDGET_KEY, self._bitrix.budget.export())
        await meta.put_json(
            db,
            STATE_KEY,
            {"failing_cycles": self._failing_cycles, "told_stretch": self._told_stretch, "interval": self.effective_interval},
        )

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

    def _allowed(self, found: dict[int, Audience]) -> dict[int, Audience]:
        return {tid: a for tid, a in found.items() if self._settings.is_allowed(tid)}

    async def poll_cycle(self) -> CycleResult:
        """One refresh of every active linked user; event work waits while it runs (SPEC 14: never delays a poll)."""
        self.poll_idle.clear()
        try:
            return await self._poll_cycle()
        finally:
            self.poll_idle.set()

    async def _poll_cycle(self) -> CycleResult:
        """One refresh of every active linked user, POLL_CHUNK at a time; a failed read changes nothing and alerts nobody.

        Each chunk is read, decided and dropped before the next is read. Once a whole chunk failed
        in a way that would repeat, the rest of the cycle is not read: those users count as
        failed with that error.
        """
        started = self._clock.timestamp()
        linked, _ = await links.counts(self._storage.db)
        self._metrics.linked_users.set(linked)
        requests_before = self._bitrix.stats.requests_total
        tally = ReadTally()
        stopped: BitrixError | None = None
        skipped = broken = 0
        after = 0
        while page := await links.active_after(self._storage.db, after, POLL_CHUNK):
            after = page[-1].telegram_user_id
            by_bitrix = {link.bitrix_user_id: link for link in page if self._settings.is_allowed(link.telegram_user_id)}
            if not by_bitrix:
                continue
            read_started = self._clock.timestamp()
            results: dict[int, CounterResult]
            if stopped is not None:
                results = dict.fromkeys(by_bitrix, stopped)
            else:
                read = await self._bitrix.counters(list(by_bitrix), ("view_all",), bulk=True)
                results = {bid: roles.get("view_all") or NoAccess() for bid, roles in read.items()}
                stopped = repeating_failure(results.values())
                if stopped is not None:
                    log.warning("poll: a whole chunk failed (%s %s); the rest of the cycle is not read", stopped.kind, stopped.code)
            readings: dict[int, tuple[int, Counters]] = {}
            for bid, value in results.items():
                tally.add(bid, value)
                if isinstance(value, Counters):
                    readings[by_bitrix[bid].telegram_user_id] = (bid, value)
            page_skipped, page_broken = await self.apply_readings(readings, read_started=read_started)
            skipped += page_skipped
            broken += page_broken
        self.no_access_users = tally.no_access_users
        self._metrics.active_users.set(tally.users)
        cause, error = tally.cause()
        users = tally.users
        now = self._clock.timestamp()
        result = CycleResult(
            users=users, ok=tally.ok, no_access=tally.no_access, failed=tally.failed, cause=cause, error=error,
            requests=self._bitrix.stats.requests_total - requests_before, seconds=now - started,
            finished_at=now, skipped=skipped, broken=broken,
        )
        self.last_result = result
        self._metrics.poll_cycles.labels("ok" if cause is None else "failed").inc()
        self._metrics.poll_duration.observe(result.seconds)
        if cause is None:
            self.last_success_at = now
            self._failing_cycles = 0
        else:
            self._failing_cycles += 1
            log.warning("poll cycle failed for all %d users: %s", users, cause)
        if tally.failed and cause is None:
            log.info("poll cycle: %d of %d users could not be read; their state is kept", tally.failed, users)
        self._remember()
        stretch = self._pace(users, result.seconds)
        await self._admin_notices(cause, error, stretch)
        return result

    async def apply_readings(
        self,
        readings: dict[int, tuple[int, Counters]],
        *,
        read_started: float,
        caused: Mapping[int, float] | None = None,
    ) -> tuple[int, int]:
        """Decide alerts for fresh view_all reads, APPLY_CHUNK users per transaction; returns (skipped, broken).

        Inside the transaction each user is re-read: one unlinked, moved, blocked or forgotten
        since the read is skipped; one whose last read is newer than this one keeps it. That
        ordering is what lets a poll and an event refresh of the same user overlap: whichever
        read began later decides, once. `caused` maps a user to the receipt time of the event
        behind this read (kept on the messages, for their latency).
        """
        skipped = broken = 0
        queued = False
        items = list(readings.items())
        for start in range(0, len(items), APPLY_CHUNK):
            chunk = items[start : start + APPLY_CHUNK]
            async with self._storage.transaction() as db:
                tids = [tid for tid, _ in chunk]
                fresh = await audience.load(db, tids)
                read_times = await alerts.read_times(db, tids)
                now = self._clock.now()
                for tid, (bid, counters) in chunk:
                    current = fresh.get(tid)
                    if current is None or current.link.bitrix_user_id != bid or not self._settings.is_allowed(tid):
                        skipped += 1
                        continue
                    if read_times.get(tid, float("-inf")) > read_started:
                        skipped += 1  # a later read of this user was already applied
                        continue
                    try:
                        async with Storage.savepoint(db):
                            states, messages = self._decide(
                                current, counters, now, read_started, (caused or {}).get(tid)
                            )
                            await alerts.replace_states(db, tid, states)
                            await alerts.save_snapshot(db, tid, dict(counters.values), read_started)
                            await outbox.enqueue(db, messages, now.timestamp())
                            queued = queued or bool(messages)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        broken += 1
                        self._metrics.worker_errors.labels("poll_user").inc()
                        log.error("poll: the decision for telegram_user_id=%d failed; the others go on", tid, exc_info=True)
        if queued:
            self._accounts.wake()
        return skipped, broken

    async def refresh(self, who: Mapping[int, int], caused: Mapping[int, float]) -> dict[int, bool]:
        """An event refresh (SPEC 14): read view_all of these users (Telegram -> Bitrix24 ID) and decide as a poll does.

        The read waits at event priority (after users, digests and polls) and goes through
        apply_readings, so it counts as a poll for every SPEC 7 rule. Returns, per user read,
        whether the counters differ from the last read before this one.
        """
        tids = [tid for tid in who if self._settings.is_allowed(tid)]
        if not tids:
            return {}
        started = self._clock.timestamp()
        before = await alerts.snapshots_of(self._storage.db, tids)
        read = await self._bitrix.counters([who[tid] for tid in tids], ("view_all",), bulk=True, priority=Priority.EVENT)
        readings: dict[int, tuple[int, Counters]] = {}
        for tid in tids:
            value = read.get(who[tid], {}).get("view_all")
            if isinstance(value, Counters):
                readings[tid] = (who[tid], value)
        await self.apply_readings(readings, read_started=started, caused=caused)
        return {tid: dict(counters.values) != before.get(tid) for tid, (_, counters) in readings.items()}

    def _decide(
        self, who: Audience, counters: Counters, now: datetime, read_started: float, caused_at: float | None = None
    ) -> tuple[dict, list[OutgoingMessage]]:
        settings = who.settings
        values = {name: counters.get(name) for name in counters.values}
        lang = self._accounts.language(settings.language, who.language_code)
        messages: list[OutgoingMessage] = []
        states = who.states
        summary = None
        if not alert_rules.summary_folds_into_digest(settings, now):
            summary = alert_rules.quiet_summary(settings, states, values, now)
        if summary is not None:
            states = summary.states
            if summary.items:
                messages.append(self._message(who, "quiet", render.render_quiet_summary(lang, summary.items)))
        outcome = alert_rules.evaluate(
            settings, states, values, now,
            read_at=datetime.fromtimestamp(read_started, UTC),
            regrow_gap=timedelta(seconds=self._settings.poll_interval_seconds),
        )
        for alert in outcome.send:
            text = render.render_alert(lang, alert, portal_url=self._settings.bitrix24_portal_url, bitrix_user_id=who.link.bitrix_user_id)
            markup = render.alert_keyboard(lang, alert.counter).to_json()
            messages.append(replace(self._message(who, "alert", text, markup), caused_at=caused_at))
        return outcome.states, messages

    @staticmethod
    def _message(who: Audience, kind: str, text: str, markup: str | None = None, not_before: float = 0.0) -> OutgoingMessage:
        return OutgoingMessage(who.link.chat_id, who.link.telegram_user_id, kind, text, markup, not_before)

    def _pace(self, users_count: int, cycle_seconds: float) -> dict[str, Any] | None:
        """The interval the next cycle needs (rate bound, time budget, this cycle's length); the figures when stretched.

        The client itself never lets bulk reads pass their share of the time budget in any
        10-minute window (it waits before a batch); this only schedules the next cycle and
        tells admins once that cycles take longer than POLL_INTERVAL_SECONDS.
        """
        interval = float(self._settings.poll_interval_seconds)
        by_budget = self._bitrix.budget.stretch_needed(COUNTERS_METHOD, users_count, interval) or 0.0
        by_rate = rate_bound_seconds(
            math.ceil(users_count / 50), self._settings.bitrix24_requests_per_second, self._settings.bitrix24_burst
        )
        needed = max(by_budget, by_rate, cycle_seconds)
        self.effective_interval = max(interval, needed)
        if needed <= interval:
            self._told_stretch = False
            return None
        if self._told_stretch:
            return None
        self._told_stretch = True
        log.warning(
            "a poll cycle for %d users needs %.0f s (time budget %.0f s, rate %.0f s), more than the %d s interval",
            users_count, needed, by_budget, by_rate, self._settings.poll_interval_seconds,
        )
        return {"users": users_count, "needed": round(needed), "interval": self._settings.poll_interval_seconds,
                "actual": round(needed)}

    # ---- admin notices -----------------------------------------------------------------------

    async def _admin_messages(self, db: Db, key: str, **values: Any) -> list[OutgoingMessage]:
        """Inside a transaction: one message per admin who wrote to the bot, in their language."""
        out = []
        for admin_id, user in sorted((await users.reachable(db, self._settings.admin_telegram_user_ids)).items()):
            lang = self._accounts.language_of(user)
            rendered = {k: (v(lang) if callable(v) else v) for k, v in values.items()}
            out.append(OutgoingMessage(user.chat_id, admin_id, "notice", t(lang, key, **rendered)))
        return out

    async def _admin_notices(self, cause: str | None, error: BitrixError | None, stretch: dict[str, Any] | None) -> None:
        """Decide and queue the admin notices of this cycle, and keep the coordinator's state, in one transaction."""
        now = self._clock.timestamp()
        async with self._storage.transaction() as db:
            states = await meta.notice_states(db)
            new_states, notices = notice_decisions(states, cause, now, self._failing_cycles)
            messages: list[OutgoingMessage] = []
            for what, c, since in notices:
                if what == "failing":
                    log.error("telling admins: polling fails (%s)", c)

                    def reason(lang: str, err: BitrixError | None = error, c: str = c) -> str:
                        return t(lang, "admin_no_access") if c == "no_access" or err is None else err.text(lang)

                    messages += await self._admin_messages(db, "admin_poll_failing", reason=reason)
                else:
                    log.info("telling admins: polling recovered (%s)", c)
                    messages += await self._admin_messages(db, "admin_poll_recovered", duration=_duration(now - since))
            if stretch is not None:
                messages += await self._admin_messages(db, "admin_cycle_stretched", **stretch)
            if new_states != states:
                await meta.replace_notice_states(db, new_states)
            await outbox.enqueue(db, messages, now)
            await self._save_state(db)
        if messages:
            self._accounts.wake()

    async def task_filter_ignored(self) -> None:
        """The portal returned a task that does not fit the list's filter: lists are off; admins told once per 6 h."""
        log.error("the portal ignores the tasks.task.list member filter: task lists are off")
        await self._filter_notice(TASK_FILTER_KEY, "admin_task_filter_ignored")

    async def team_filter_ignored(self) -> None:
        """user.get returned someone outside the asked departments: team views show nothing; admins told once per 6 h."""
        await self._filter_notice(TEAM_FILTER_KEY, "admin_team_filter_ignored")

    async def _filter_notice(self, key: str, text_key: str) -> None:
        now = self._clock.timestamp()
        async with self._storage.transaction() as db:
            last = await meta.get_json(db, key)
            if isinstance(last, (int, float)) and now - last < NOTICE_REPEAT_SECONDS:
                return
            messages = await self._admin_messages(db, text_key)
            await outbox.enqueue(db, messages, now)
            await meta.put_json(db, key, now)
        if messages:
            self._accounts.wake()

    async def events_domain_mismatch(self, domain: str) -> None:
        """An event with the right token named another portal (SPEC 14): admins are told once, ever."""
        now = self._clock.timestamp()
        async with self._storage.transaction() as db:
            if await meta.get_json(db, EVENTS_DOMAIN_KEY) is not None:
                return
            messages = await self._admin_messages(
                db, "admin_events_domain", domain=domain[:100], expected=self._settings.portal_host or self._settings.webhook_host
            )
            await outbox.enqueue(db, messages, now)
            await meta.put_json(db, EVENTS_DOMAIN_KEY, {"at": now, "domain": domain[:100]})
        if messages:
            self._accounts.wake()

    # ---- digests -----------------------------------------------------------------------------

    def _due(self, who: Audience, now: datetime) -> tuple[Due | None, Due | None]:
        """(due now, due within the look-ahead) for one user."""
        s = who.settings
        saved_at = datetime.fromtimestamp(who.digest_saved_at, UTC)
        due = due_digests(s, now, who.last_digest_date, saved_at)
        if due is not None:
            return due, None
        nxt = next_digest_due(s, now)
        if nxt is not None and nxt[1] - now <= DIGEST_LOOKAHEAD:
            ahead = due_digests(s, nxt[1], who.last_digest_date, saved_at)
            # A paused occurrence is recorded as skipped when it falls due, by the branch above.
            if ahead is not None and not ahead.skip and ahead.due_at_utc == nxt[1]:
                return None, ahead
        return None, None

    async def digest_tick(self) -> int:
        """Read and queue every digest that is due, or will be before the reads could finish; returns how many.

        Two passes, in chunks. The first looks at every user, SCAN_PAGE at a time, records the
        digests to skip and keeps only the IDs of those to read: how many they are sets how early
        the reads start. The second reads the roles of DIGEST_CHUNK of them at a time and queues
        their digests before it reads the next ones, so memory does not grow with the number of
        digests due at once. Task lines are read 50 users at a time (a read user waits in
        `lines_wanted` until 50 are gathered), so that the round still costs ceil(D'/50) for them.
        The team members of the due heads are read once, before the first chunk, in ceil(P/50)
        (SPEC 12): only heads' teams are kept for the round.
        """
        now = self._clock.now()
        current, upcoming, team_wanted = await self._find_due(now)
        lead = read_lead_time(len(current) + len(upcoming), 1.0 / self._settings.bitrix24_requests_per_second)
        batch = current + [tid for tid, due_at in upcoming if due_at - now.timestamp() <= lead.total_seconds()]
        del current, upcoming
        digest_round = _DigestRound()
        if batch:
            digest_round.teams = await self._digest_teams({tid: team_wanted[tid] for tid in batch if tid in team_wanted})
        del team_wanted
        for start in range(0, len(batch), DIGEST_CHUNK):
            if digest_round.stopped is not None:
                break  # the rest are read again next tick, and skipped once 2 hours late
            chunk = await self._still_due(batch[start : start + DIGEST_CHUNK], now, lead)
            if chunk:
                await self._read_digest_chunk(digest_round, chunk)
            while len(digest_round.lines_wanted) >= BATCH_SIZE:
                await self._settle_with_task_lines(digest_round, BATCH_SIZE)
        await self._settle_with_task_lines(digest_round, len(digest_round.lines_wanted))
        if digest_round.lines_shed:
            log.info("digest: task lines left out for %d users: the tasks.task.list time budget runs short", digest_round.lines_shed)
        return digest_round.queued

    async def _find_due(self, now: datetime) -> tuple[list[int], list[tuple[int, float]], dict[int, int]]:
        """First pass: record the digests to skip.

        Returns the users due now, (user, due time) of those due within the look-ahead, and the
        Bitrix24 IDs of those of them who want a team line (Telegram ID -> Bitrix24 ID).
        """
        current: list[int] = []
        upcoming: list[tuple[int, float]] = []
        team_wanted: dict[int, int] = {}
        after = 0
        while page := await audience.page(self._storage.db, after, SCAN_PAGE):
            after = page[-1].link.telegram_user_id
            skips: list[_Settle] = []
            for who in page:
                if not self._settings.is_allowed(who.link.telegram_user_id):
                    continue
                try:
                    due, ahead = self._due(who, now)
                except ValueError:  # a stored zone this system's tzdata does not know: this user only
                    self._metrics.worker_errors.labels("digest_user").inc()
                    log.error("digest: cannot schedule telegram_user_id=%d (zone %r)", who.link.telegram_user_id, who.settings.timezone)
                    continue
                if due is not None and due.skip:
                    skips.append((who, due, None, (), None))
                    continue
                if due is not None:
                    current.append(who.link.telegram_user_id)
                elif ahead is not None:
                    upcoming.append((who.link.telegram_user_id, ahead.due_at_utc.timestamp()))
                else:
                    continue
                if who.settings.digest_team:
                    team_wanted[who.link.telegram_user_id] = who.link.bitrix_user_id
            await self._settle_all(skips, now)
        return current, upcoming, team_wanted

    async def _still_due(self, telegram_user_ids: list[int], now: datetime, lead: timedelta) -> list[tuple[Audience, Due]]:
        """Second pass, before a chunk's read: the users of the first pass whose digest is still to read, as stored now."""
        found = await audience.load(self._storage.db, telegram_user_ids)
        out = []
        for tid in telegram_user_ids:
            who = found.get(tid)
            if who is None or not self._settings.is_allowed(tid):
                continue  # unlinked or blocked since the first pass
            try:
                due, ahead = self._due(who, now)
            except ValueError:
                continue
            if due is not None and not due.skip:
                out.append((who, due))
            elif ahead is not None and ahead.due_at_utc - now <= lead:
                out.append((who, ahead))
        return out

    async def _read_digest_chunk(self, digest_round: _DigestRound, chunk: list[tuple[Audience, Due]]) -> None:
        """Read the five roles of a chunk of due users; queue the digests of those who need no task lines."""
        read = await self._bitrix.counters(
            [who.link.bitrix_user_id for who, _ in chunk], ROLES, bulk=True, priority=Priority.DIGEST
        )
        digest_round.stopped = repeating_failure(r for roles in read.values() for r in roles.values())
        if digest_round.stopped is not None:
            err = digest_round.stopped
            log.warning("digest: a whole chunk failed (%s %s); the rest are read next tick", err.kind, err.code)
        ready: list[_Settle] = []
        for who, due in chunk:
            results = read.get(who.link.bitrix_user_id, {})
            if not results or any(isinstance(r, BitrixError) for r in results.values()):
                continue  # unreadable: tried again next tick, skipped once 2 hours late
            view_all = results.get("view_all")
            item = (who, due, results, (), digest_round.teams.get(who.link.telegram_user_id))
            if who.settings.digest_tasks and isinstance(view_all, Counters) and view_all.get("expired") > 0:
                digest_round.lines_wanted.append(item)
            else:
                ready.append(item)
        digest_round.queued += await self._settle_all(ready)

    async def _settle_with_task_lines(self, digest_round: _DigestRound, count: int) -> None:
        """Read the task lines of the first `count` users waiting for them (one request), then queue their digests."""
        waiting = digest_round.lines_wanted[:count]
        del digest_round.lines_wanted[:count]
        if not waiting:
            return
        pages = await self._digest_task_pages(digest_round, [who.link.bitrix_user_id for who, *_ in waiting])
        digest_round.queued += await self._settle_all(
            [(who, due, results, pages.get(who.link.bitrix_user_id, ()), team) for who, due, results, _, team in waiting]
        )

    async def _digest_task_pages(self, digest_round: _DigestRound, wanted: list[int]) -> dict[int, tuple[Task, ...]]:
        """The most overdue tasks of these due users (SPEC 11), in one batch request of up to 50.

        Task lines never delay or stop a digest: they are shed when the time budget of
        tasks.task.list runs short, and a failed read (or a portal that ignores the filter, after
        which the round reads no more of them) leaves them out.
        """
        if digest_round.lines_off:
            return {}
        budget = self._bitrix.budget
        if budget.wait_needed(TASKS_METHOD, budget.estimate(TASKS_METHOD, len(wanted)), bulk=True) > 0:
            digest_round.lines_shed += len(wanted)
            return {}
        now = self._clock.now()
        try:
            pages = await self._bitrix.first_overdue_pages(wanted, now, bulk=True, priority=Priority.DIGEST)
        except BitrixError as err:
            log.warning("digest: task lines left out: %s %s", err.kind, err.code)
            return {}
        out: dict[int, tuple[Task, ...]] = {}
        for bitrix_user_id, page in pages.items():
            if isinstance(page, BitrixError):
                continue
            if any(not row_fits(task, bitrix_user_id, "view_all", now) for task in page.tasks):
                digest_round.lines_off = True
                await self.task_filter_ignored()
                return {}
            out[bitrix_user_id] = page.tasks[:DIGEST_TASK_LINES]
        return out

    async def _digest_teams(self, heads: dict[int, int]) -> dict[int, tuple[Member, ...]]:
        """The team members of the due heads who want the team line (SPEC 12); a failure leaves the lines out."""
        if self.team is None or not heads:
            return {}
        try:
            return await self.team.digest_teams(heads)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.error("digest: team lines left out", exc_info=True)
            return {}

    async def _settle_all(self, items: list[_Settle], now: datetime | None = None) -> int:
        """Settle digests, APPLY_CHUNK users per transaction, each in a savepoint; returns how many were queued.

        Inside the transaction each user is re-read, so that a change made during the read (unlink,
        /digest off, a moved link) wins; one user's failed decision is logged and the others go on.
        `now` is the time the skips were decided at; read digests are settled at the current time.
        """
        queued = 0
        for start in range(0, len(items), APPLY_CHUNK):
            part = items[start : start + APPLY_CHUNK]
            async with self._storage.transaction() as db:
                fresh = await audience.load(db, [who.link.telegram_user_id for who, *_ in part])
                moment = now if now is not None else self._clock.now()
                for who, due, results, tasks, team in part:
                    try:
                        async with Storage.savepoint(db):
                            tid = who.link.telegram_user_id
                            queued += await self._settle(db, fresh.get(tid), who, due, results, moment, tasks, team)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        self._metrics.worker_errors.labels("digest_user").inc()
                        log.error(
                            "digest: the decision for telegram_user_id=%d failed; the others go on",
                            who.link.telegram_user_id, exc_info=True,
                        )
        if queued:
            self._accounts.wake()
        return queued

    async def _settle(
        self,
        db: Db,
        fresh: Audience | None,
        who: Audience,
        due: Due,
        results: dict[str, CounterResult] | None,
        now: datetime,
        tasks: tuple[Task, ...],
        team: tuple[Member, ...] | None,
    ) -> int:
        """One user's digest as one unit of work: re-check it is still due as read, then skip it or queue it."""
        tid = who.link.telegram_user_id
        if fresh is None or fresh.link.bitrix_user_id != who.link.bitrix_user_id or not self._settings.is_allowed(tid):
            log.info("digest for telegram_user_id=%d dropped: unlinked or blocked during the read", tid)
            return 0
        saved_at = datetime.fromtimestamp(fresh.digest_saved_at, UTC)
        again = due_digests(fresh.settings, max(now, due.due_at_utc), fresh.last_digest_date, saved_at)
        if again is None or (again.local_date, again.due_at_utc) != (due.local_date, due.due_at_utc):
            log.info("digest for telegram_user_id=%d dropped: its settings changed during the read", tid)
            return 0
        if again.skip or results is None:
            await self._record_skip(db, fresh, again)
            return 0
        return await self._queue_digest(db, fresh, again, results, now, tasks, team)

    @staticmethod
    async def _record_skip(db: Db, who: Audience, due: Due, reason: str | None = None) -> None:
        log.info("digest of %s for telegram_user_id=%d skipped (%s)", due.local_date, who.link.telegram_user_id, reason or due.reason)
        await digests.insert(
            db, who.link.telegram_user_id, due.local_date, due.due_at_utc.timestamp(), "skipped",
            bitrix_user_id=who.link.bitrix_user_id,
        )

    async def _queue_digest(
        self, db: Db, who: Audience, due: Due, results: dict[str, CounterResult], now: datetime, tasks: tuple[Task, ...],
        team: tuple[Member, ...] | None = None,
    ) -> int:
        tid = who.link.telegram_user_id
        counters = {role: dict(r.values) for role, r in results.items() if isinstance(r, Counters)}
        shown = [v for r in results.values() if isinstance(r, Counters) for _, v in render.counter_items(r)]
        team = team if who.settings.digest_team else None  # re-read in this transaction: /digest team off during the read
        team_overdue = sum(m.overdue for m in team or ())
        # A head's digest with own counters at 0 and a team total of 0 is empty (SPEC 12).
        everything_zero = all(isinstance(r, Counters) for r in results.values()) and not any(shown) and not team_overdue
        if everything_zero and not who.settings.digest_empty:
            await self._record_skip(db, who, due, "empty")
            return 0
        previous = await digests.last_sent(db, tid)
        lang = self._accounts.language(who.settings.language, who.language_code)
        quiet_items: tuple = ()
        states = None
        if any(s.held for s in who.states.values()) and alert_rules.summary_folds_into_digest(who.settings, now):
            snapshot = await alerts.snapshot(db, tid)
            view_all = counters.get("view_all") or (snapshot[0] if snapshot else None) or {}
            summary = alert_rules.quiet_summary(who.settings, who.states, view_all, max(now, due.due_at_utc))
            if summary is not None:
                quiet_items, states = summary.items, summary.states
        text = render.render_digest(
            lang, results, previous[1] if previous else None, previous[0] if previous else None,
            scheduled=True, read_at=now.astimezone(who.settings.tz()), portal_url=self._settings.bitrix24_portal_url,
            bitrix_user_id=who.link.bitrix_user_id, quiet_items=quiet_items,
            task_lines=[
                tasklist.task_line(lang, task, portal_url=self._settings.bitrix24_portal_url,
                                   viewer_bitrix_id=who.link.bitrix_user_id, now=now)
                for task in (tasks if who.settings.digest_tasks else ())
            ],
            team_line=teamview.digest_team_line(lang, team) if team is not None else None,
        )
        all_roles = results.get("view_all")
        overdue = isinstance(all_roles, Counters) and all_roles.get("expired") > 0
        markup = InlineKeyboardMarkup([[render.overdue_list_button(lang)]]).to_json() if overdue else None
        (outbox_id,) = await outbox.enqueue(
            db, [self._message(who, "digest", text, markup, not_before=due.due_at_utc.timestamp())], now.timestamp()
        )
        await digests.insert(
            db, tid, due.local_date, due.due_at_utc.timestamp(), "queued",
            bitrix_user_id=who.link.bitrix_user_id, counters=counters, outbox_id=outbox_id,
        )
        if states is not None:
            await alerts.replace_states(db, tid, states)
        return 1

    # ---- daily re-check ----------------------------------------------------------------------

    async def recheck_links(self) -> int:
        """Unlink users Bitrix24 no longer reports as active (each told in the same transaction); returns how many.

        Only links not checked for a day are read, so a restart does not re-read everyone. They
        are read RECHECK_CHUNK at a time and those still active are marked checked chunk by
        chunk; only the IDs of the others are kept until the end, where the mass-unlink guard
        looks at them all.
        """
        now = self._clock.timestamp()
        cutoff = now - RECHECK_EVERY + 60
        read = 0
        gone: list[tuple[int, int]] = []  # (telegram_user_id, bitrix_user_id)
        after = 0
        while page := await links.due_for_check(self._storage.db, cutoff, after, RECHECK_CHUNK):
            after = page[-1].telegram_user_id
            active = await self._bitrix.users_by_ids([link.bitrix_user_id for link in page])
            read += len(page)
            gone += [(link.telegram_user_id, link.bitrix_user_id) for link in page if link.bitrix_user_id not in active]
            async with self._storage.transaction() as db:
                await links.mark_checked(db, [link.telegram_user_id for link in page if link.bitrix_user_id in active], now)
        if read >= MASS_UNLINK_MIN and len(gone) > read / 2:
            # More likely a misconfigured webhook (scope, filters) than half the company leaving at once.
            log.warning("daily re-check: %d of %d linked users look inactive; unlinking nobody", len(gone), read)
            return 0
        unlinked = 0
        for telegram_user_id, bitrix_user_id in gone:
            # A user relinked to another account during the read keeps that link (checked on its own day).
            if await self._accounts.unlink(telegram_user_id, notice="unlinked_inactive", only_if=bitrix_user_id):
                unlinked += 1
                log.info("telegram_user_id=%d unlinked: bitrix_user_id=%d is no longer active", telegram_user_id, bitrix_user_id)
        return unlinked

    # ---- retention ---------------------------------------------------------------------------

    async def housekeeping(self) -> dict[str, int]:
        """Delete what only served a window that has ended (SPEC 9); returns how many rows of each."""
        now = self._clock.now()
        stamp = now.timestamp()
        async with self._storage.transaction() as db:
            sent = await outbox.delete_finished_before(db, stamp - OUTBOX_KEEP_SECONDS)
            logs = await digests.delete_before(db, (now - timedelta(days=DIGEST_LOG_KEEP_DAYS)).date())
            codes, events = await limits.expire(db, stamp, stamp - LIMIT_RECORDS_KEEP_SECONDS)
            members = await task_members.delete_unseen_before(db, stamp - TASK_MEMBERS_KEEP_SECONDS)
        removed = {"outbox": sent, "digest_log": logs, "link_codes": codes, "limit_events": events, "task_members": members}
        if any(removed.values()):
            log.info("housekeeping removed %s", ", ".join(f"{n} {k}" for k, n in removed.items() if n))
        return removed
