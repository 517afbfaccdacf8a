"""BitrixClient: the Bitrix24 calls the bot makes (batch, counters, task lists, users, notify, scopes)."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from bot.bitrix.budget import TimeBudget
from bot.bitrix.results import (
    BatchResult,
    BitrixUser,
    CounterResult,
    Department,
    Operating,
    Task,
    TaskPage,
    Workgroup,
    as_map,
    department_from,
    parse_counters,
    parse_task_page,
    to_int,
    user_from,
    workgroup_from,
)
from bot.bitrix.transport import (
    BitrixStats,
    CircuitBreaker,
    Clock,
    LeakyBucket,
    Priority,
    Sleep,
    Transport,
    install_log_redaction,
    normalize_webhook_url,
    php_query,
    redact,
)
from bot.errors import (
    BitrixBadAnswerError,
    BitrixError,
    BitrixMethodError,
    BitrixTimeBudgetError,
    BitrixTransientError,
    error_from_envelope,
)
from bot.model import ROLES

__all__ = [
    "BATCH_SIZE",
    "COUNTERS_IN_FLIGHT",
    "COUNTERS_METHOD",
    "INTERACTIVE_DEADLINE",
    "ROLE_FILTER_KEYS",
    "TASKS_METHOD",
    "TASK_PAGE",
    "TASK_SELECT",
    "MEMBER_SELECT",
    "NO_SUCH_DEPARTMENT",
    "BitrixClient",
    "overdue_filter",
]

log = logging.getLogger("bot.bitrix")

BATCH_SIZE = 50  # batch.md: at most 50 commands per request
COUNTERS_METHOD = "tasks.task.counters.get"
# How many counter batches may be in flight at once. The bucket sets the rate; a little
# overlap only hides round trips (limits.md asks not to run parallel series, so keep it small).
COUNTERS_IN_FLIGHT = 3
# Total seconds a read a user waits for (/counters, linking) may take, retries included:
# long enough for one slow answer, short enough that the user gets an answer, not a hang.
INTERACTIVE_DEADLINE = 15.0

TASKS_METHOD = "tasks.task.list"
TASK_PAGE = 50  # tasks.task.list pages are fixed at 50 rows (reference 1.2)
# The tasks.task.list filter key per counter role (SPEC 11; reference 1.3, 1.4).
ROLE_FILTER_KEYS: dict[str, str] = {
    "view_all": "MEMBER",
    "view_role_responsible": "RESPONSIBLE_ID",
    "view_role_accomplice": "ACCOMPLICE",
    "view_role_auditor": "AUDITOR",
    "view_role_originator": "CREATED_BY",
}
TASK_SELECT: tuple[str, ...] = (
    "ID",
    "TITLE",
    "DEADLINE",
    "STATUS",
    "GROUP_ID",
    "RESPONSIBLE_ID",
    "CREATED_BY",
    "ACCOMPLICES",
    "AUDITORS",
)

# What an event's task read asks for: who is on the task (SPEC 14; reference 3.6).
MEMBER_SELECT: tuple[str, ...] = ("ID", "RESPONSIBLE_ID", "CREATED_BY", "ACCOMPLICES", "AUDITORS", "GROUP_ID")

# A department ID no portal has (SPEC 3: `check` asks user.get for its people, expecting nobody).
NO_SUCH_DEPARTMENT = 2_000_000_000

_METHOD_NAME = re.compile(r"^[a-z0-9_.]+$", re.IGNORECASE)


def overdue_filter(bitrix_user_id: int, role: str, now: datetime) -> dict[str, Any]:
    """The tasks.task.list filter that mirrors one role's `expired` counter (SPEC 11).

    `<DEADLINE` stays at the top level, where the server converts dates (reference 1.2).
    No IS_MUTED (it would be judged for the webhook's owner) and no ONLY_ROOT_TASKS
    (subtasks count). For the originator role the counter leaves out tasks the user also
    is responsible for, so the list asks the same (`!REFERENCE:RESPONSIBLE_ID`,
    reference 1.3); a portal that ignores it is caught by the caller's row check.
    """
    if now.utcoffset() is None:
        raise ValueError("now must be aware")
    key = ROLE_FILTER_KEYS.get(role)
    if key is None:
        raise ValueError(f"unknown role {role!r}")
    flt: dict[str, Any] = {key: int(bitrix_user_id)}
    if role == "view_role_originator":
        flt["!REFERENCE:RESPONSIBLE_ID"] = "CREATED_BY"
    flt["<DEADLINE"] = now.isoformat(timespec="seconds")
    flt["REAL_STATUS"] = [2, 3]
    return flt


def project_overdue_filter(group_id: int, now: datetime) -> dict[str, Any]:
    """The tasks.task.list filter of a project's overdue tasks (SPEC 13): its group, `<DEADLINE` now, status 2/3."""
    if now.utcoffset() is None:
        raise ValueError("now must be aware")
    return {"GROUP_ID": int(group_id), "<DEADLINE": now.isoformat(timespec="seconds"), "REAL_STATUS": [2, 3]}


def _overdue_params(bitrix_user_id: int, role: str, now: datetime, start: int) -> dict[str, Any]:
    return {
        "filter": overdue_filter(bitrix_user_id, role, now),
        "select": list(TASK_SELECT),
        "order": {"DEADLINE": "asc", "ID": "asc"},
        "start": start,
    }


def _priority(priority: int | None, bulk: bool) -> int:
    """The bucket priority of a call: as given, else a user's own read, or a poll's when bulk."""
    if priority is not None:
        return priority
    return Priority.POLL if bulk else Priority.USER


class BitrixClient:
    """Calls one Bitrix24 inbound webhook: typed errors, retries, rate and time-budget limits."""

    def __init__(
        self,
        webhook_url: str,
        http: httpx.AsyncClient,
        bucket: LeakyBucket,
        *,
        monotonic: Clock = time.monotonic,
        wall: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        max_attempts: int = 5,
        max_retry_seconds: float = 60.0,
        budget: TimeBudget | None = None,
    ) -> None:
        self._base = normalize_webhook_url(webhook_url)
        self._bucket = bucket
        self._monotonic = monotonic
        self._wall = wall
        self._transport = Transport(
            self._base,
            http,
            bucket,
            monotonic=monotonic,
            sleep=sleep,
            rng=rng,
            max_attempts=max_attempts,
            max_retry_seconds=max_retry_seconds,
        )
        # The time budget shares the client's wall clock and sleep unless one is passed in
        # (for another limit, or one restored from storage).
        self.budget = budget if budget is not None else TimeBudget(wall=wall, sleep=sleep)
        install_log_redaction()

    def __repr__(self) -> str:
        return f"BitrixClient({redact(self._base)!r})"

    @property
    def stats(self) -> BitrixStats:
        """Request counts for metrics."""
        return self._transport.stats

    def event_wait(self, requests: int = 1) -> float:
        """Seconds until `requests` event requests could go (event work gathers that long, SPEC 14)."""
        return self._bucket.event_wait(requests)

    # -- time budget ------------------------------------------------------------------

    def method_time_used(self, method: str, now: float | None = None) -> float:
        """Seconds of `method` execution counted over the last 10 minutes (sliding), as the budget sees it."""
        return self.budget.used(method, now)

    def last_operating(self, method: str) -> Operating | None:
        """The last `time.operating` / `operating_reset_at` seen for `method`, if any."""
        return self.budget.last_operating(method)

    def blocked_until(self, method: str) -> float | None:
        """Wall time until which `method` is refused after OPERATION_TIME_LIMIT, if blocked."""
        return self.budget.blocked_until(method)

    # -- requests -----------------------------------------------------------------------

    def _deadline_at(self, deadline: float | None) -> float | None:
        """Seconds of budget from now -> a monotonic instant (None: no deadline)."""
        return None if deadline is None else self._monotonic() + max(0.0, deadline)

    async def _request(
        self,
        method: str,
        payload: Mapping[str, Any],
        sub_methods: Sequence[str] = (),
        *,
        idempotent: bool = True,
        deadline_at: float | None = None,
        breaker: CircuitBreaker | None = None,
        priority: int = Priority.USER,
    ) -> dict[str, Any]:
        """Send with retries; time-blocked methods are refused before any request."""
        budget_methods = list(sub_methods) or [method]
        self.budget.check_blocked(budget_methods)
        try:
            envelope = await self._transport.request(
                method, payload, idempotent=idempotent, deadline_at=deadline_at, breaker=breaker, priority=priority
            )
        except BitrixTimeBudgetError as err:
            err.retry_after = max(self.budget.block(m) for m in budget_methods)
            err.args = (str(err),)
            raise
        if method != "batch":
            duration = self.budget.record(method, envelope.get("time"))
            if duration is not None:
                self.budget.note_cost(method, [duration])
        else:
            self.budget.record(method, envelope.get("time"), count_duration=False)
        return envelope

    # -- public calls ---------------------------------------------------------------------

    async def call(self, method: str, params: Mapping[str, Any] | None = None, *, deadline: float | None = None) -> Any:
        """Call one REST method and return its `result`; `deadline` bounds it in seconds, retries included."""
        return await self._call(method, params, deadline_at=self._deadline_at(deadline))

    async def _call(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        idempotent: bool = True,
        deadline_at: float | None = None,
    ) -> Any:
        if not _METHOD_NAME.match(method):
            raise ValueError("not a Bitrix24 method name")
        envelope = await self._request(method, params or {}, idempotent=idempotent, deadline_at=deadline_at)
        return envelope["result"]

    async def batch(
        self, commands: Mapping[str, tuple[str, Mapping[str, Any]]], *, deadline: float | None = None
    ) -> BatchResult:
        """Run commands through `batch`, 50 per request (halt=0); per-command errors are typed."""
        return await self._batch(commands, deadline_at=self._deadline_at(deadline))

    async def _batch(
        self,
        commands: Mapping[str, tuple[str, Mapping[str, Any]]],
        *,
        deadline_at: float | None = None,
        breaker: CircuitBreaker | None = None,
        priority: int = Priority.USER,
    ) -> BatchResult:
        for key, (method, _) in commands.items():
            if not _METHOD_NAME.match(method) or not key:
                raise ValueError("bad batch command")
        self.budget.check_blocked(sorted({method for method, _ in commands.values()}))
        results: dict[str, Any] = {}
        errors: dict[str, BitrixError] = {}
        times: dict[str, float] = {}
        items = list(commands.items())
        for start in range(0, len(items), BATCH_SIZE):
            part = await self._batch_once(dict(items[start : start + BATCH_SIZE]), deadline_at, breaker, priority)
            results.update(part.results)
            errors.update(part.errors)
            times.update(part.times)
        return BatchResult(results, errors, times)

    async def _batch_once(
        self,
        commands: Mapping[str, tuple[str, Mapping[str, Any]]],
        deadline_at: float | None,
        breaker: CircuitBreaker | None,
        priority: int = Priority.USER,
    ) -> BatchResult:
        cmd = {
            key: method + (f"?{php_query(params)}" if params else "") for key, (method, params) in commands.items()
        }
        sub_methods = sorted({method for method, _ in commands.values()})
        envelope = await self._request(
            "batch", {"halt": 0, "cmd": cmd}, sub_methods, deadline_at=deadline_at, breaker=breaker, priority=priority
        )
        inner = envelope["result"]
        if isinstance(inner, list) and not inner:
            inner = {}
        if not isinstance(inner, dict):
            raise BitrixBadAnswerError("UNEXPECTED_RESULT", method="batch")
        raw_results = as_map(inner.get("result"))
        raw_errors = as_map(inner.get("result_error"))
        raw_times = as_map(inner.get("result_time"))
        results: dict[str, Any] = {}
        errors: dict[str, BitrixError] = {}
        times: dict[str, float] = {}
        costs: dict[str, list[float]] = {}
        blocked: set[str] = set()
        for key, (method, _) in commands.items():
            if key in raw_errors:
                raw = raw_errors[key]
                code = raw.get("error") if isinstance(raw, dict) else raw
                description = raw.get("error_description") if isinstance(raw, dict) else None
                err = error_from_envelope(code, description, None, method)
                if isinstance(err, BitrixTimeBudgetError):
                    if method not in blocked:
                        blocked.add(method)
                        self.budget.block(method)
                    until = self.budget.blocked_until(method)
                    err.retry_after = (until - self._wall()) if until is not None else 0.0
                    err.args = (str(err),)
                errors[key] = err
            elif key in raw_results:
                results[key] = raw_results[key]
            if key in raw_times:
                duration = self.budget.record(method, raw_times[key], count_duration=False)
                if duration is not None:
                    times[key] = duration
                    costs.setdefault(method, []).append(duration)
        # One entry per method and answer: a 10,000-user cycle keeps 200 entries, not 10,000.
        for method, durations in costs.items():
            self.budget.spend(method, sum(durations))
            self.budget.note_cost(method, durations)
        return BatchResult(results, errors, times)

    async def counters(
        self,
        bitrix_user_ids: Sequence[int],
        roles: Sequence[str] = ROLES,
        *,
        bulk: bool = False,
        deadline: float | None = None,
        priority: int | None = None,
    ) -> dict[int, dict[str, CounterResult]]:
        """Read counters per user and role, all roles of a user in one batch (50 // len(roles) users each).

        Once one batch has failed as a whole in a way that would repeat (auth, scope, plan,
        portal gone, time budget, permission, transient, bad answer), the batches not yet
        sent get that error without a request. `bulk` (polls, digests) paces each batch
        under the bulk share of the time budget, waiting when needed; an interactive read
        (bulk=False) never waits for the budget. `deadline` (seconds) bounds the whole call.
        `priority` orders its requests in the bucket (default: USER, or POLL when bulk).
        """
        deadline_at = self._deadline_at(deadline)
        priority = _priority(priority, bulk)
        breaker = CircuitBreaker()
        roles = tuple(roles)
        if not roles:
            raise ValueError("no roles")
        ids = list(dict.fromkeys(int(i) for i in bitrix_user_ids))
        out: dict[int, dict[str, CounterResult]] = {bitrix_user_id: {} for bitrix_user_id in ids}
        per_batch = max(1, BATCH_SIZE // len(roles))
        groups = [ids[i : i + per_batch] for i in range(0, len(ids), per_batch)]
        pending = iter(groups)

        def fill(group: list[int], value: CounterResult) -> None:
            for bitrix_user_id in group:
                for role in roles:
                    out[bitrix_user_id][role] = value

        async def worker() -> None:
            for group in pending:
                if breaker.error is not None:
                    fill(group, breaker.error)
                    continue
                keys = {
                    f"u{bitrix_user_id}_{index}": (bitrix_user_id, role)
                    for bitrix_user_id in group
                    for index, role in enumerate(roles)
                }
                commands = {
                    key: (COUNTERS_METHOD, {"userId": bitrix_user_id, "groupId": 0, "type": role})
                    for key, (bitrix_user_id, role) in keys.items()
                }
                reserved = 0.0
                # A batch that timed out, answered oddly or was cancelled may still have run
                # on the server: its estimate then stays counted as spent.
                outcome_unknown = True
                try:
                    if bulk:
                        self.budget.check_blocked([COUNTERS_METHOD])  # do not wait for a blocked method
                        estimate = self.budget.estimate(COUNTERS_METHOD, len(commands))
                        await self.budget.reserve(COUNTERS_METHOD, estimate, bulk=True)
                        reserved = estimate
                    result = await self._batch(commands, deadline_at=deadline_at, breaker=breaker, priority=priority)
                    outcome_unknown = False  # its real costs were recorded from result_time
                except BitrixError as err:
                    outcome_unknown = isinstance(err, (BitrixTransientError, BitrixBadAnswerError))
                    fill(group, err)
                    if breaker.trip(err):
                        log.warning("bitrix counters: %s %s stops the remaining batches", err.kind, err.code)
                    continue
                finally:
                    self.budget.settle(COUNTERS_METHOD, reserved, spent=reserved if outcome_unknown else None)
                for key, (bitrix_user_id, role) in keys.items():
                    cell: CounterResult
                    if key in result.errors:
                        cell = result.errors[key]
                    elif key in result.results:
                        cell = parse_counters(result.results[key], COUNTERS_METHOD)
                    else:
                        cell = BitrixBadAnswerError("MISSING_RESULT", method=COUNTERS_METHOD)
                    out[bitrix_user_id][role] = cell

        # gather, not a TaskGroup: a bug in one worker should surface as itself, not as an
        # ExceptionGroup; cancelling this call still cancels every worker.
        outcomes = await asyncio.gather(
            *(worker() for _ in range(min(COUNTERS_IN_FLIGHT, len(groups)))), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return out

    async def users_by_ids(
        self, bitrix_user_ids: Sequence[int], *, deadline: float | None = None
    ) -> dict[int, BitrixUser]:
        """Active users among these IDs, 50 per user.get request; only IDs that were asked for."""
        deadline_at = self._deadline_at(deadline)
        ids = list(dict.fromkeys(int(i) for i in bitrix_user_ids))
        found: dict[int, BitrixUser] = {}
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start : start + BATCH_SIZE]
            result = await self._call("user.get", {"FILTER": {"ID": chunk, "ACTIVE": True}}, deadline_at=deadline_at)
            asked = set(chunk)
            for raw in result if isinstance(result, list) else []:
                user = user_from(raw)
                if user is not None and user.active and user.bitrix_user_id in asked:
                    found[user.bitrix_user_id] = user
        return found

    async def _all_pages(
        self, method: str, params: Mapping[str, Any], start_key: str, *, deadline_at: float | None, priority: int
    ) -> list[Any]:
        """Every row of a paged list method (pages of 50): the first page, then all the others in one batch.

        The first answer's `total` says how many pages follow, so a list of R rows costs
        1 + ceil((ceil(R/50) - 1) / 50) requests instead of one per page.
        """
        envelope = await self._request(method, {**params, start_key: 0}, deadline_at=deadline_at, priority=priority)
        first = envelope.get("result")
        if not isinstance(first, list):
            raise BitrixBadAnswerError("UNEXPECTED_RESULT", method=method)
        rows = list(first)
        total = to_int(envelope.get("total")) or 0
        starts = list(range(BATCH_SIZE, total, BATCH_SIZE))
        if not starts:
            return rows
        result = await self._batch(
            {f"p{start}": (method, {**params, start_key: start}) for start in starts},
            deadline_at=deadline_at, priority=priority,
        )
        for start in starts:
            key = f"p{start}"
            if key in result.errors:
                raise result.errors[key]
            page = result.results.get(key)
            if not isinstance(page, list):
                raise BitrixBadAnswerError("UNEXPECTED_RESULT", method=method)
            rows += page
        return rows

    async def departments(self, *, deadline: float | None = None, priority: int = Priority.USER) -> list[Department]:
        """The whole company structure (department.get, scope `department`): all pages read together (SPEC 12)."""
        rows = await self._all_pages(
            "department.get", {"sort": "ID", "order": "ASC"}, "START",
            deadline_at=self._deadline_at(deadline), priority=priority,
        )
        found = {d.department_id: d for d in map(department_from, rows) if d is not None}
        return [found[i] for i in sorted(found)]

    async def users_in_departments(
        self, department_ids: Sequence[int], *, deadline: float | None = None, priority: int = Priority.USER
    ) -> list[BitrixUser]:
        """The active users of these departments (user.get by UF_DEPARTMENT), each once.

        user.get silently drops a filter key it does not apply, and then returns the whole
        company (facts section 4): every returned person must carry one of the departments
        asked for, else the answer is a BitrixBadAnswerError (FILTER_IGNORED) and nobody is
        returned.
        """
        asked = {int(i) for i in department_ids}
        if not asked:
            return []
        rows = await self._all_pages(
            "user.get",
            {"FILTER": {"UF_DEPARTMENT": sorted(asked), "ACTIVE": True}, "ADMIN_MODE": True},
            "start", deadline_at=self._deadline_at(deadline), priority=priority,
        )
        found: dict[int, BitrixUser] = {}
        for raw in rows:
            user = user_from(raw)
            if user is None:
                continue
            if not user.departments & asked:
                raise BitrixBadAnswerError("FILTER_IGNORED", method="user.get")
            if user.active:
                found[user.bitrix_user_id] = user
        return [found[i] for i in sorted(found)]

    async def user_by_id(self, bitrix_user_id: int, *, deadline: float | None = None) -> BitrixUser | None:
        """One active user by ID, or None."""
        return (await self.users_by_ids([bitrix_user_id], deadline=deadline)).get(bitrix_user_id)

    async def user_by_email(self, email: str, *, deadline: float | None = None) -> BitrixUser | None:
        """The one active user with this e-mail (case-insensitive), or None (also when ambiguous)."""
        wanted = email.strip().lower()
        if not wanted:
            return None
        result = await self.call("user.get", {"FILTER": {"EMAIL": email.strip(), "ACTIVE": True}}, deadline=deadline)
        # user.get silently drops a filter key the scope does not allow and then returns
        # everyone (facts section 4): trust only what came back.
        matches = [
            user
            for user in map(user_from, result if isinstance(result, list) else [])
            if user is not None and user.active and user.email.strip().lower() == wanted
        ]
        return matches[0] if len(matches) == 1 else None

    async def user_current(self) -> BitrixUser:
        """The webhook's owner."""
        user = user_from(await self.call("user.current"))
        if user is None:
            raise BitrixBadAnswerError("UNEXPECTED_RESULT", method="user.current")
        return user

    async def profile(self) -> dict[str, Any]:
        """The webhook owner's profile (with "ADMIN"); empty for an inactive owner."""
        result = await self.call("profile")
        return result if isinstance(result, dict) else {}

    async def scopes(self) -> set[str]:
        """The scopes granted to the webhook."""
        result = await self.call("scope")
        values = result.values() if isinstance(result, dict) else result if isinstance(result, list) else []
        return {str(scope) for scope in values}

    async def notify(self, bitrix_user_id: int, message: str, *, deadline: float | None = None) -> None:
        """Send a Bitrix24 system notification to one user (never retried once it may have run)."""
        result = await self._call(
            "im.notify.system.add",
            {"USER_ID": int(bitrix_user_id), "MESSAGE": message},
            idempotent=False,
            deadline_at=self._deadline_at(deadline),
        )
        if result is False or result is None:
            raise BitrixMethodError("NOT_CREATED", method="im.notify.system.add")

    # -- workgroups (scope sonet_group, SPEC 13) ----------------------------------------------

    async def workgroup(self, group_id: int, *, deadline: float | None = None, priority: int | None = None) -> Workgroup | None:
        """The workgroup with this ID, read as an administrator (`IS_ADMIN: "Y"`), or None when there is none.

        Only an item with the asked ID counts: a portal that dropped the filter must not make
        another group pass for this one.
        """
        result = await self._request(
            "sonet_group.get",
            {"FILTER": {"ID": int(group_id)}, "IS_ADMIN": "Y"},
            deadline_at=self._deadline_at(deadline),
            priority=_priority(priority, False),
        )
        items = result.get("result")
        for raw in items if isinstance(items, list) else []:
            group = workgroup_from(raw)
            if group is not None and group.group_id == int(group_id):
                return group
        return None

    async def workgroup_roles(self, group_id: int, *, deadline: float | None = None, priority: int | None = None) -> dict[int, str]:
        """bitrix_user_id -> role (A owner, E moderator, K member) of a workgroup's active members."""
        envelope = await self._request(
            "sonet_group.user.get", {"ID": int(group_id)}, deadline_at=self._deadline_at(deadline),
            priority=_priority(priority, False),
        )
        items = envelope.get("result")
        roles: dict[int, str] = {}
        for raw in items if isinstance(items, list) else []:
            if not isinstance(raw, dict):
                continue
            bitrix_user_id = to_int(raw.get("USER_ID"))
            role = str(raw.get("ROLE") or "").upper()
            if bitrix_user_id is not None and role in ("A", "E", "K"):
                roles[bitrix_user_id] = role
        return roles

    async def project_overdue_page(
        self, group_id: int, now: datetime, *, start: int = 0, deadline: float | None = None, priority: int | None = None
    ) -> TaskPage:
        """One page (50 rows from `start`) of a project's overdue tasks, most overdue first; the caller checks each row."""
        if start < 0 or start % TASK_PAGE:
            raise ValueError("start must be a multiple of 50")
        params = {
            "filter": project_overdue_filter(group_id, now),
            "select": list(TASK_SELECT),
            "order": {"DEADLINE": "asc", "ID": "asc"},
            "start": start,
        }
        envelope = await self._request(
            TASKS_METHOD, params, deadline_at=self._deadline_at(deadline), priority=_priority(priority, False)
        )
        page = parse_task_page(envelope.get("result"), envelope.get("total"), envelope.get("next"), TASKS_METHOD)
        if isinstance(page, BitrixError):
            raise page
        return page

    # -- task lists ---------------------------------------------------------------------

    async def overdue_tasks(
        self,
        bitrix_user_id: int,
        role: str,
        now: datetime,
        *,
        start: int = 0,
        deadline: float | None = None,
        bulk: bool = False,
        priority: int | None = None,
    ) -> TaskPage:
        """One page (50 rows from `start`) of the overdue tasks behind one role's `expired` counter, most overdue first.

        The rows are what the portal sent: the caller checks each one (bot.tasks.row_fits),
        because a portal silently ignores filter keys it does not know. `bulk` paces the
        request under the bulk share of the time budget; `deadline` (seconds) bounds it.
        """
        if start != -1 and (start < 0 or start % TASK_PAGE):
            raise ValueError("start must be -1 or a multiple of 50")
        params = _overdue_params(bitrix_user_id, role, now, start)
        deadline_at = self._deadline_at(deadline)
        reserved = 0.0
        outcome_unknown = True
        try:
            if bulk:
                self.budget.check_blocked([TASKS_METHOD])
                reserved = self.budget.estimate(TASKS_METHOD, 1)
                await self.budget.reserve(TASKS_METHOD, reserved, bulk=True)
            envelope = await self._request(TASKS_METHOD, params, deadline_at=deadline_at, priority=_priority(priority, bulk))
            outcome_unknown = False  # _request recorded its real cost from `time`
        except BitrixError as err:
            outcome_unknown = isinstance(err, (BitrixTransientError, BitrixBadAnswerError))
            raise
        finally:
            self.budget.settle(TASKS_METHOD, reserved, spent=reserved if outcome_unknown else None)
        page = parse_task_page(envelope.get("result"), envelope.get("total"), envelope.get("next"), TASKS_METHOD)
        if isinstance(page, BitrixError):
            raise page
        return page

    async def first_overdue_pages(
        self,
        bitrix_user_ids: Sequence[int],
        now: datetime,
        *,
        bulk: bool = True,
        deadline: float | None = None,
        priority: int | None = None,
    ) -> dict[int, TaskPage | BitrixError]:
        """The first 50 overdue tasks (view_all, `start: -1`: no total) of each user, 50 users per batch (digest, SPEC 11).

        A failed command is that user's BitrixError; a batch that failed as a whole is the
        error of its users, and once it would repeat (CircuitBreaker) the batches not yet
        sent get it without a request.
        """
        deadline_at = self._deadline_at(deadline)
        priority = _priority(priority, bulk)
        breaker = CircuitBreaker()
        ids = list(dict.fromkeys(int(i) for i in bitrix_user_ids))
        out: dict[int, TaskPage | BitrixError] = {}
        for offset in range(0, len(ids), BATCH_SIZE):
            group = ids[offset : offset + BATCH_SIZE]
            if breaker.error is not None:
                out.update(dict.fromkeys(group, breaker.error))
                continue
            commands = {
                f"t{bitrix_user_id}": (TASKS_METHOD, _overdue_params(bitrix_user_id, "view_all", now, -1))
                for bitrix_user_id in group
            }
            reserved = 0.0
            outcome_unknown = True
            try:
                if bulk:
                    self.budget.check_blocked([TASKS_METHOD])
                    reserved = self.budget.estimate(TASKS_METHOD, len(commands))
                    await self.budget.reserve(TASKS_METHOD, reserved, bulk=True)
                result = await self._batch(commands, deadline_at=deadline_at, breaker=breaker, priority=priority)
                outcome_unknown = False
            except BitrixError as err:
                outcome_unknown = isinstance(err, (BitrixTransientError, BitrixBadAnswerError))
                out.update(dict.fromkeys(group, err))
                if breaker.trip(err):
                    log.warning("bitrix task lists: %s %s stops the remaining batches", err.kind, err.code)
                continue
            finally:
                self.budget.settle(TASKS_METHOD, reserved, spent=reserved if outcome_unknown else None)
            for bitrix_user_id in group:
                key = f"t{bitrix_user_id}"
                if key in result.errors:
                    out[bitrix_user_id] = result.errors[key]
                elif key in result.results:
                    out[bitrix_user_id] = parse_task_page(result.results[key], None, None, TASKS_METHOD)
                else:
                    out[bitrix_user_id] = BitrixBadAnswerError("MISSING_RESULT", method=TASKS_METHOD)
        return out

    async def tasks_by_ids(
        self,
        task_ids: Sequence[int],
        *,
        priority: int = Priority.EVENT,
        deadline: float | None = None,
    ) -> dict[int, Task]:
        """The members of these tasks (tasks.task.list with an ID filter, 50 IDs per command, batched).

        Only rows whose ID was asked for are returned; a task absent from the answer is
        deleted or out of the webhook's sight. A portal that answers with a task nobody
        asked for ignores the ID filter: that is a BitrixBadAnswerError (FILTER_IGNORED),
        so no caller mistakes the whole answer for the truth. The call is paced under the
        bulk share of the time budget.
        """
        deadline_at = self._deadline_at(deadline)
        ids = list(dict.fromkeys(int(i) for i in task_ids))
        commands = {
            f"i{offset}": (
                TASKS_METHOD,
                {"filter": {"ID": ids[offset : offset + TASK_PAGE]}, "select": list(MEMBER_SELECT), "start": -1},
            )
            for offset in range(0, len(ids), TASK_PAGE)
        }
        if not commands:
            return {}
        self.budget.check_blocked([TASKS_METHOD])
        reserved = self.budget.estimate(TASKS_METHOD, len(commands))
        outcome_unknown = True
        try:
            await self.budget.reserve(TASKS_METHOD, reserved, bulk=True)
            result = await self._batch(commands, deadline_at=deadline_at, priority=priority)
            outcome_unknown = False
        except BitrixError as err:
            outcome_unknown = isinstance(err, (BitrixTransientError, BitrixBadAnswerError))
            raise
        finally:
            self.budget.settle(TASKS_METHOD, reserved, spent=reserved if outcome_unknown else None)
        asked = set(ids)
        found: dict[int, Task] = {}
        for key in commands:
            if key in result.errors:
                raise result.errors[key]
            page = parse_task_page(result.results.get(key), None, None, TASKS_METHOD)
            if isinstance(page, BitrixError):
                raise page
            for task in page.tasks:
                if task.task_id not in asked:
                    raise BitrixBadAnswerError("FILTER_IGNORED", method=TASKS_METHOD)
                found[task.task_id] = task
        return found
