"""FakeBitrix: a stateful, scriptable Bitrix24 REST server as a function from Request to Response."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

_PATH = re.compile(r"^/rest/(\d+)/([^/]+)/([A-Za-z0-9_.]+?)(?:\.json)?/?$")
_KEY = re.compile(r"^([^\[]+)((?:\[[^\]]*\])*)$")
ROLES = (
    "view_all",
    "view_role_responsible",
    "view_role_accomplice",
    "view_role_auditor",
    "view_role_originator",
)
# Which scope each served method needs; None = always allowed (scope "basic").
_METHOD_SCOPES: dict[str, tuple[str, ...] | None] = {
    "tasks.task.counters.get": ("task",),
    "tasks.task.list": ("task",),
    "batch": None,
    "user.get": ("user", "user_basic", "user_brief"),
    "user.current": ("user", "user_basic", "user_brief"),
    "profile": None,
    "scope": None,
    "im.notify.system.add": ("im",),
    "department.get": ("department",),
    "sonet_group.get": ("sonet_group",),
    "sonet_group.user.get": ("sonet_group",),
}
# Counter type codes as the server source has them (facts section 2).
_CODES = {"expired": 6291456, "new_comments": 12582912, "total": ""}


@dataclass
class Scripted:
    """One scripted answer; status None means "after the delay, answer normally"."""

    status: int | None = None
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # raise httpx.ConnectError (transport mode)
    timeout: bool = False  # raise httpx.ReadTimeout (transport mode)
    # Only a request for which match(method, params) is true takes this answer (None: any).
    match: Callable[[str, dict[str, Any]], bool] | None = field(default=None, repr=False)
    # Overlap tests: `arrived` is set when the request is in, and the answer waits for `gate`.
    arrived: threading.Event | None = field(default=None, repr=False)
    gate: threading.Event | None = field(default=None, repr=False)

    @classmethod
    def held(cls) -> Scripted:
        """An answer that waits until the test opens `gate` (after `arrived` told it the read is in flight)."""
        return cls(arrived=threading.Event(), gate=threading.Event())

    def only_for(self, match: Callable[[str, dict[str, Any]], bool]) -> Scripted:
        """A copy that answers only requests for which match(method, params) is true."""
        return replace(self, match=match)

    @classmethod
    def error(cls, status: int, code: str, description: str = "") -> Scripted:
        """A Bitrix24 error envelope."""
        return cls(status=status, json={"error": code, "error_description": description})

    @classmethod
    def html(cls, status: int = 200) -> Scripted:
        """An HTML page instead of JSON, as a blocked portal sends."""
        return cls(
            status=status,
            body=b"<html><body><h1>Portal is blocked</h1></body></html>",
            headers={"Content-Type": "text/html; charset=utf-8"},
        )

    @classmethod
    def empty(cls, status: int = 200) -> Scripted:
        """An empty body."""
        return cls(status=status, body=b"")

    @classmethod
    def redirect(cls, location: str = "https://login.example/auth/", status: int = 302) -> Scripted:
        """A redirect to somewhere else."""
        return cls(status=status, body=b"", headers={"Location": location})

    @classmethod
    def connect_error(cls) -> Scripted:
        """The connection drops before an answer."""
        return cls(drop=True)

    @classmethod
    def read_timeout(cls) -> Scripted:
        """The answer never comes in time."""
        return cls(timeout=True)


@dataclass
class FakeGroup:
    """One workgroup (project) of the fake portal: flags as Bitrix24 sends them, members by role A/E/K."""

    group_id: int
    name: str
    owner: int
    moderators: set[int] = field(default_factory=set)
    members: set[int] = field(default_factory=set)
    opened: bool = True
    visible: bool = True
    closed: bool = False  # archived

    def roles(self) -> dict[int, str]:
        """USER_ID -> ROLE (A owner, E moderator, K member)."""
        out = {m: "K" for m in self.members}
        out.update({m: "E" for m in self.moderators})
        out[self.owner] = "A"
        return out


@dataclass
class FakeTask:
    """One task of the fake portal (real status 1..7; deadline aware or None)."""

    task_id: int
    title: str
    deadline: datetime | None
    status: int
    responsible: int
    created_by: int
    accomplices: frozenset[int] = frozenset()
    auditors: frozenset[int] = frozenset()
    group: tuple[int, str] | None = None  # (id, name)
    muted_by: frozenset[int] = frozenset()

    def members(self) -> set[int]:
        """Every member of any role."""
        return {self.responsible, self.created_by, *self.accomplices, *self.auditors}

    def in_role(self, bitrix_user_id: int, role: str) -> bool:
        """Whether the user counts for this counter role (reference 1.1: an originator who is also responsible does not)."""
        if role == "view_all":
            return bitrix_user_id in self.members()
        if role == "view_role_responsible":
            return self.responsible == bitrix_user_id
        if role == "view_role_accomplice":
            return bitrix_user_id in self.accomplices
        if role == "view_role_auditor":
            return bitrix_user_id in self.auditors
        if role == "view_role_originator":
            return self.created_by == bitrix_user_id and self.responsible != bitrix_user_id
        return False


# tasks.task.list: the page size is fixed (reference 1.2).
TASK_PAGE = 50
# select name -> the camelCase keys it fills (reference 1.2, 1.5).
_TASK_SELECT = {
    "ID": ("id",),
    "TITLE": ("title",),
    "DEADLINE": ("deadline",),
    "STATUS": ("status", "subStatus"),
    "REAL_STATUS": ("status", "subStatus"),
    "GROUP_ID": ("groupId", "group"),
    "RESPONSIBLE_ID": ("responsibleId",),
    "CREATED_BY": ("createdBy",),
    "ACCOMPLICES": ("accomplices",),
    "AUDITORS": ("auditors",),
}


def _ints(value: Any) -> set[int]:
    """A filter value (scalar, list, or a PHP-list map) as a set of ints; odd items dropped."""
    if isinstance(value, dict):
        value = list(value.values())
    values = value if isinstance(value, list) else [value]
    out: set[int] = set()
    for item in values:
        try:
            out.add(int(str(item).strip()))
        except ValueError:
            continue
    return out


@dataclass
class Recorded:
    """One request as the fake saw it."""

    method: str
    params: dict[str, Any]
    time: float
    status: int = 0
    # The read timeout the client gave this request (httpx's request extensions), if known.
    timeout: float | None = None


def php_parse_query(query: str) -> dict[str, Any]:
    """Parse a query string the way PHP's parse_str does (`a[b][]=c` nests)."""
    out: dict[str, Any] = {}
    for raw_key, value in parse_qsl(query, keep_blank_values=True):
        m = _KEY.match(raw_key)
        if not m:
            out[raw_key] = value
            continue
        parts = [m.group(1)] + re.findall(r"\[([^\]]*)\]", m.group(2))
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, dict):
                key = part if part != "" else str(len(node))
                if last:
                    node[key] = value
                else:
                    node = node.setdefault(key, {})
    return out


def _listify(value: Any) -> Any:
    """Turn {"0": a, "1": b} maps (PHP lists) back into lists."""
    if isinstance(value, dict):
        value = {k: _listify(v) for k, v in value.items()}
        if value and all(k.isdigit() for k in value) and sorted(int(k) for k in value) == list(range(len(value))):
            return [value[str(i)] for i in range(len(value))]
    return value


def _ci(params: dict[str, Any], name: str) -> Any:
    """Case-insensitive parameter lookup."""
    for key, value in params.items():
        if key.lower() == name.lower():
            return value
    return None


def _truthy_active(value: Any) -> bool:
    """How the server reads ACTIVE: truthy and not "N" means Y (facts section 4)."""
    if isinstance(value, str):
        return value not in ("", "0", "N", "n")
    return bool(value)


class _Fail(Exception):
    """An error envelope to send."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(code)
        self.status, self.code, self.description = status, code, description


class FakeBitrix:
    """A fake Bitrix24 portal with one inbound webhook; set its state from tests."""

    def __init__(self, webhook_user_id: int = 1, webhook_code: str = "fakewebhookcode0123456789") -> None:
        self.webhook_user_id = webhook_user_id
        self.webhook_code = webhook_code
        self.users: dict[int, dict[str, Any]] = {}
        self.counters: dict[tuple[int, str], dict[str, int]] = {}
        # Tasks (tasks.task.list). While any exist, tasks.task.counters.get derives `expired`
        # from them for a user and role without explicit set_counters values; derive_counters
        # True derives it always (other names from set_counters), False never.
        self.tasks: dict[int, FakeTask] = {}
        self.workgroups: dict[int, FakeGroup] = {}
        self.derive_counters: bool | None = None
        # Per-call failures of tasks.task.list: a user ID in any role key of the filter -> (code, description).
        self.task_list_errors: dict[int, tuple[str, str]] = {}
        # Filter keys this portal does not know: silently dropped, as Bitrix24 does (reference 1.2).
        self.ignored_task_filters: set[str] = set()
        # The offset of dates in task answers (server offset + the webhook user's zone).
        self.task_tz: tzinfo = timezone(timedelta(hours=3))
        self.scopes: set[str] = {"task", "user", "im"}  # add "department" for team views (SPEC 12)
        # The company structure (department.get): ID -> {"NAME", "PARENT", "UF_HEAD"}.
        self.departments: dict[int, dict[str, Any]] = {}
        # A portal that drops the user.get UF_DEPARTMENT filter returns the whole company.
        self.ignore_department_filter = False
        self.admin = True
        self.plan_has_rest = True
        self.cloud_time = True  # include operating / operating_reset_at in `time`
        self.notifications: list[tuple[int, str]] = []
        self.requests: list[Recorded] = []
        self.script: deque[Scripted] = deque()
        # Per-command failures: (bitrix_user_id, role) -> (code, description).
        self.counter_errors: dict[tuple[int, str], tuple[str, str]] = {}
        # Whole-method failures: method -> (status, code, description).
        self.method_errors: dict[str, tuple[int, str, str]] = {}
        self.clock: Callable[[], float] = time.time
        # When set, a scripted delay moves the (fake) clock to at least arrival + delay
        # instead of sleeping (so requests in flight together overlap), and an answer slower
        # than the request's read timeout becomes httpx.ReadTimeout at arrival + that
        # timeout, as a real socket would; Scripted.read_timeout() costs the whole timeout.
        self.wait_until: Callable[[float], None] | None = None
        # Leaky bucket (off unless limit() is called).
        self._limit_on = False
        self._rate = 2.0
        self._burst = 50
        self._level = 0.0
        self._level_at = 0.0
        self.rejected_503 = 0
        # Operating time: seconds each call of a method takes; limit per 10 minutes.
        self.method_seconds: dict[str, float] = {}
        self.operating_limit: float | None = None
        self._operating: dict[str, list[tuple[float, float]]] = {}
        self._lock = threading.Lock()

    # -- state helpers --------------------------------------------------------------

    def add_user(
        self,
        bitrix_user_id: int,
        name: str = "Anna",
        last_name: str = "Smith",
        email: str | None = None,
        active: bool = True,
        time_zone: str = "",
        admin: bool = False,
        departments: tuple[int, ...] = (1,),
    ) -> None:
        """Add or replace a portal user."""
        self.users[bitrix_user_id] = {
            "NAME": name,
            "LAST_NAME": last_name,
            "EMAIL": email if email is not None else f"user{bitrix_user_id}@corp.example",
            "ACTIVE": active,
            "TIME_ZONE": time_zone,
            "ADMIN": admin,
            "UF_DEPARTMENT": list(departments),
        }

    def add_department(self, department_id: int, name: str, parent: int | None = None, head: int | None = None) -> None:
        """Add or replace a department (UF_HEAD is absent when the department has no head)."""
        self.departments[department_id] = {"NAME": name, "PARENT": parent, "UF_HEAD": head}
    def add_workgroup(
        self,
        group_id: int,
        name: str = "Website",
        *,
        owner: int,
        moderators: tuple[int, ...] = (),
        members: tuple[int, ...] = (),
        opened: bool = True,
        visible: bool = True,
        closed: bool = False,
    ) -> FakeGroup:
        """Add or replace a workgroup."""
        group = FakeGroup(group_id, name, owner, set(moderators), set(members), opened, visible, closed)
        self.workgroups[group_id] = group
        return group

    def set_counters(self, bitrix_user_id: int, role: str = "view_all", **values: int) -> None:
        """Set one user's counters for one role (names -> ints)."""
        self.counters[(bitrix_user_id, role)] = dict(values)

    def add_task(
        self,
        task_id: int,
        title: str = "Task",
        *,
        deadline: datetime | None = None,
        status: int = 3,
        responsible: int = 1,
        created_by: int | None = None,
        accomplices: tuple[int, ...] | set[int] | frozenset[int] = (),
        auditors: tuple[int, ...] | set[int] | frozenset[int] = (),
        group: tuple[int, str] | None = None,
        muted_by: tuple[int, ...] | set[int] | frozenset[int] = (),
    ) -> FakeTask:
        """Add or replace a task; created_by defaults to the responsible; the deadline must be aware."""
        if deadline is not None and deadline.utcoffset() is None:
            raise ValueError("deadline must be aware")
        task = FakeTask(
            task_id=task_id,
            title=title,
            deadline=deadline,
            status=status,
            responsible=responsible,
            created_by=responsible if created_by is None else created_by,
            accomplices=frozenset(accomplices),
            auditors=frozenset(auditors),
            group=group,
            muted_by=frozenset(muted_by),
        )
        self.tasks[task_id] = task
        return task

    def delete_task(self, task_id: int) -> None:
        """Delete a task (gone from lists and counters)."""
        self.tasks.pop(task_id, None)

    def expired_count(self, bitrix_user_id: int, role: str, now: datetime | None = None) -> int:
        """`expired` as the tasks module counts it (reference 1.1): deadline < now, status 2/3, not muted."""
        now = now if now is not None else datetime.fromtimestamp(self.clock(), UTC)
        return sum(
            1
            for task in self.tasks.values()
            if task.in_role(bitrix_user_id, role)
            and task.deadline is not None
            and task.deadline < now
            and task.status in (2, 3)
            and bitrix_user_id not in task.muted_by
        )

    def limit(self, rate: float = 2.0, burst: int = 50, clock: Callable[[], float] | None = None) -> None:
        """Switch on the leaky bucket: +1 per request, drains `rate`/s, over `burst` -> 503."""
        with self._lock:
            self._limit_on = True
            self._rate, self._burst = rate, burst
            if clock is not None:
                self.clock = clock
            self._level = 0.0
            self._level_at = self.clock()

    def push(self, *answers: Scripted, times: int = 1) -> None:
        """Queue scripted answers for the next requests, in order (the whole list `times` times)."""
        with self._lock:
            for _ in range(times):
                self.script.extend(answers)

    def request_count(self, method: str | None = None) -> int:
        """How many requests arrived (for one method, or all)."""
        with self._lock:
            return sum(1 for r in self.requests if method is None or r.method == method)

    # -- the server -----------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Serve one HTTP request."""
        scripted: Scripted | None = None
        with self._lock:
            now = self.clock()
            parsed = urlsplit(str(request.url))
            m = _PATH.match(parsed.path)
            method = m.group(3) if m else parsed.path
            params = self._params(request, parsed.query)
            read_timeout = (request.extensions.get("timeout") or {}).get("read")
            record = Recorded(method=method, params=params, time=now, timeout=read_timeout)
            self.requests.append(record)
            for index, candidate in enumerate(self.script):
                if candidate.match is None or candidate.match(method, params):
                    scripted = candidate
                    del self.script[index]
                    break
        if scripted is not None:
            if scripted.arrived is not None:
                scripted.arrived.set()
            if scripted.gate is not None and not scripted.gate.wait(30):
                raise httpx.ReadTimeout("the test never opened the gate", request=request)
            if self.wait_until is not None:
                waited = float("inf") if scripted.timeout else scripted.delay
                if read_timeout is not None and waited > read_timeout:
                    self.wait_until(now + read_timeout)
                    raise httpx.ReadTimeout("no answer from the fake in time", request=request)
                if scripted.delay:
                    self.wait_until(now + scripted.delay)
            elif scripted.delay:
                time.sleep(scripted.delay)
            if scripted.drop:
                raise httpx.ConnectError("connection dropped by the fake", request=request)
            if scripted.timeout:
                raise httpx.ReadTimeout("no answer from the fake", request=request)
            if scripted.status is not None:
                record.status = scripted.status
                if scripted.json is not None:
                    return httpx.Response(scripted.status, json=scripted.json, headers=scripted.headers)
                return httpx.Response(scripted.status, content=scripted.body or b"", headers=scripted.headers)
        with self._lock:
            status, payload = self._serve(m, method, params)
        record.status = status
        return httpx.Response(status, json=payload)

    def _params(self, request: httpx.Request, query: str) -> dict[str, Any]:
        params: dict[str, Any] = _listify(php_parse_query(query)) if query else {}
        body = request.content
        if body:
            ctype = request.headers.get("content-type", "")
            if "json" in ctype:
                try:
                    loaded = json.loads(body)
                except ValueError:
                    loaded = None
                if isinstance(loaded, dict):
                    params.update(loaded)
            else:
                params.update(_listify(php_parse_query(body.decode("utf-8", "replace"))))
        return params

    def _serve(self, m: re.Match[str] | None, method: str, params: dict[str, Any]) -> tuple[int, Any]:
        """Route one request; runs under the lock."""
        now = self.clock()
        if m is None:
            return 404, {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
        if int(m.group(1)) != self.webhook_user_id or m.group(2) != self.webhook_code:
            return 401, {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
        if self._limit_on:
            self._level = max(0.0, self._level - (now - self._level_at) * self._rate)
            self._level_at = now
            if self._level + 1 > self._burst + 1e-9:
                self.rejected_503 += 1
                return 503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
            self._level += 1
        if not self.plan_has_rest:
            return 403, {
                "error": "ACCESS_DENIED",
                "error_description": "REST API is available only on commercial plans",
            }
        try:
            if method == "batch":
                if method in self.method_errors:
                    raise _Fail(*self.method_errors[method])
                result = self._batch(params, now)
                return 200, {"result": result, "time": self._time_block(now, 0.001, None)}
            result, extra = self._run(method, params, now)
        except _Fail as fail:
            return fail.status, {"error": fail.code, "error_description": fail.description}
        envelope: dict[str, Any] = {"result": result, **extra}
        envelope["time"] = self._time_block(now, self._spend(method, now), method)
        return 200, envelope

    def _run(self, method: str, params: dict[str, Any], now: float) -> tuple[Any, dict[str, Any]]:
        """Run one non-batch method; raises _Fail."""
        if method in self.method_errors:
            raise _Fail(*self.method_errors[method])
        if method not in _METHOD_SCOPES:
            raise _Fail(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        needed = _METHOD_SCOPES[method]
        if needed is not None and not (self.scopes & set(needed)):
            raise _Fail(
                403,
                "insufficient_scope",
                "The request requires higher privileges than provided by the webhook token",
            )
        if self._blocked(method, now):
            raise _Fail(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")
        if method == "tasks.task.counters.get":
            return self._counters(params, now), {"total": 1}
        if method == "tasks.task.list":
            return self._task_list(params)
        if method == "user.get":
            return self._user_get(params)
        if method == "user.current":
            return self._user_dict(self.webhook_user_id, with_admin=False), {}
        if method == "profile":
            user = self._user_dict(self.webhook_user_id, with_admin=False)
            if not user.get("ACTIVE", True):
                return [], {}
            return {
                "ID": str(self.webhook_user_id),
                "ADMIN": self.admin,
                "NAME": user["NAME"],
                "LAST_NAME": user["LAST_NAME"],
                "PERSONAL_GENDER": "",
                "TIME_ZONE": user["TIME_ZONE"],
            }, {}
        if method == "scope":
            return sorted(self.scopes), {}
        if method == "im.notify.system.add":
            return self._notify(params), {}
        if method == "department.get":
            return self._department_get(params)
        if method == "sonet_group.get":
            return self._sonet_group_get(params), {}
        if method == "sonet_group.user.get":
            return self._sonet_group_user_get(params), {}
        raise _Fail(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")

    # -- methods ------------------------------------------------------------------------

    def _counters(self, params: dict[str, Any], now: float) -> Any:
        raw_user = _ci(params, "userId")
        try:
            bitrix_user_id = int(raw_user) if raw_user not in (None, "") else 0
        except (TypeError, ValueError):
            raise _Fail(
                400, "0", f"Invalid value {raw_user} to match with parameter {{userId}}. Should be value of type int."
            ) from None
        if bitrix_user_id == 0:
            bitrix_user_id = self.webhook_user_id
        role = str(_ci(params, "type") or "view_all").lower()
        if (bitrix_user_id, role) in self.counter_errors:
            code, description = self.counter_errors[(bitrix_user_id, role)]
            raise _Fail(400, code, description)
        if not self.admin and bitrix_user_id != self.webhook_user_id:
            return []
        values = self.counters.get((bitrix_user_id, role))
        if role not in ROLES:
            return []
        derive = self.derive_counters if self.derive_counters is not None else (bool(self.tasks) and values is None)
        if derive:
            values = {"new_comments": 0, **(values or {})}
            values["expired"] = self.expired_count(bitrix_user_id, role, datetime.fromtimestamp(now, UTC))
            values["total"] = values["expired"] + values["new_comments"]
        if values is None:
            return []
        return {name: {"counter": value, "code": _CODES.get(name, 0)} for name, value in values.items()}

    def _task_list(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """tasks.task.list: filter, order, select, start (pages of 50; start -1 skips the total)."""
        flt = _ci(params, "filter")
        flt = flt if isinstance(flt, dict) else {}
        ignored = {key.upper() for key in self.ignored_task_filters}
        for raw_key, value in flt.items():
            if str(raw_key).upper() in ("MEMBER", "RESPONSIBLE_ID", "CREATED_BY", "ACCOMPLICE", "AUDITOR"):
                for bitrix_user_id in _ints(value):
                    if bitrix_user_id in self.task_list_errors:
                        raise _Fail(400, *self.task_list_errors[bitrix_user_id])
        tasks = list(self.tasks.values())
        if not self.admin:  # a plain user's webhook sees only that user's tasks
            tasks = [t for t in tasks if self.webhook_user_id in t.members()]
        for raw_key, value in flt.items():
            key = str(raw_key).upper()
            if key in ignored:
                continue
            if key == "MEMBER":
                wanted = _ints(value)
                tasks = [t for t in tasks if t.members() & wanted]
            elif key == "RESPONSIBLE_ID":
                wanted = _ints(value)
                tasks = [t for t in tasks if t.responsible in wanted]
            elif key == "CREATED_BY":
                wanted = _ints(value)
                tasks = [t for t in tasks if t.created_by in wanted]
            elif key == "ACCOMPLICE":
                wanted = _ints(value)
                tasks = [t for t in tasks if t.accomplices & wanted]
            elif key == "AUDITOR":
                wanted = _ints(value)
                tasks = [t for t in tasks if t.auditors & wanted]
            elif key == "ID":
                wanted = _ints(value)
                tasks = [t for t in tasks if t.task_id in wanted]
            elif key == "GROUP_ID":
                wanted = _ints(value)
                tasks = [t for t in tasks if (t.group[0] if t.group else 0) in wanted]
            elif key == "REAL_STATUS":
                wanted = _ints(value)
                tasks = [t for t in tasks if t.status in wanted]
            elif key == "!REFERENCE:RESPONSIBLE_ID" and str(value).upper() == "CREATED_BY":
                tasks = [t for t in tasks if t.responsible != t.created_by]
            elif key == "<DEADLINE":
                cutoff = self._filter_date(value)
                tasks = [t for t in tasks if t.deadline is not None and t.deadline < cutoff]
            # any other key: silently ignored, as the server does (reference 1.2)
        order = _ci(params, "order")
        order = order if isinstance(order, dict) else {}
        tasks.sort(key=lambda t: t.task_id)
        for raw_field, direction in reversed(list(order.items())):
            descending = str(direction).lower() == "desc"
            field_name = str(raw_field).upper()
            if field_name == "DEADLINE":
                # MySQL puts NULLs first ascending, last descending.
                tasks.sort(key=lambda t: (t.deadline is not None, t.deadline or datetime.min.replace(tzinfo=UTC)), reverse=descending)
            elif field_name == "ID":
                tasks.sort(key=lambda t: t.task_id, reverse=descending)
        select = _ci(params, "select")
        if isinstance(select, dict):
            select = list(select.values())
        wanted_keys: set[str] | None = None
        if isinstance(select, list) and select and "*" not in select:
            wanted_keys = {"id"}
            for name in select:
                wanted_keys.update(_TASK_SELECT.get(str(name).upper(), ()))
        try:
            start = int(str(_ci(params, "start") or 0))
        except ValueError:
            start = 0
        if start == -1:
            return {"tasks": [self._task_dict(t, wanted_keys) for t in tasks[:TASK_PAGE]]}, {}
        start = max(0, start)
        page = [self._task_dict(t, wanted_keys) for t in tasks[start : start + TASK_PAGE]]
        extra: dict[str, Any] = {"total": len(tasks)}
        if start + TASK_PAGE < len(tasks):
            extra["next"] = start + TASK_PAGE
        return {"tasks": page}, extra

    def _filter_date(self, value: Any) -> datetime:
        """A filter date as strtotime would read an ISO-8601 one; naive means the portal's zone."""
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise _Fail(400, "ERROR_CORE", f"Wrong date format: {value}") from None
        return parsed if parsed.utcoffset() is not None else parsed.replace(tzinfo=self.task_tz)

    def _task_dict(self, task: FakeTask, wanted: set[str] | None) -> dict[str, Any]:
        """One task as tasks.task.list answers it: camelCase keys, string values (reference 1.5)."""
        status = str(task.status)
        overdue = (
            task.deadline is not None
            and task.deadline < datetime.fromtimestamp(self.clock(), UTC)
            and task.status not in (4, 5)
        )
        full: dict[str, Any] = {
            "id": str(task.task_id),
            "title": task.title,
            "deadline": task.deadline.astimezone(self.task_tz).isoformat(timespec="seconds") if task.deadline else None,
            "status": status,
            "subStatus": "-1" if overdue else status,
            "groupId": str(task.group[0]) if task.group else "0",
            "group": {"id": str(task.group[0]), "name": task.group[1], "opened": True} if task.group else [],
            "responsibleId": str(task.responsible),
            "createdBy": str(task.created_by),
            "accomplices": [str(i) for i in sorted(task.accomplices)],
            "auditors": [str(i) for i in sorted(task.auditors)],
        }
        return full if wanted is None else {k: v for k, v in full.items() if k in wanted}

    def _user_dict(self, bitrix_user_id: int, with_admin: bool) -> dict[str, Any]:
        user = self.users.get(bitrix_user_id) or {
            "NAME": "Webhook",
            "LAST_NAME": "Owner",
            "EMAIL": "owner@corp.example",
            "ACTIVE": True,
            "TIME_ZONE": "",
            "ADMIN": self.admin,
        }
        out: dict[str, Any] = {
            "ID": str(bitrix_user_id),
            "ACTIVE": bool(user.get("ACTIVE", True)),
            "NAME": user.get("NAME", ""),
            "LAST_NAME": user.get("LAST_NAME", ""),
            "EMAIL": user.get("EMAIL", ""),
            "TIME_ZONE": user.get("TIME_ZONE", ""),
            "USER_TYPE": "employee",
            "UF_DEPARTMENT": list(user.get("UF_DEPARTMENT", [1])),
        }
        if with_admin:
            out["ADMIN"] = bool(user.get("ADMIN", False))
        if "user" not in self.scopes and "user_basic" not in self.scopes:
            out.pop("EMAIL")  # user_brief: name only
        return out

    def _user_get(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        flt = _ci(params, "FILTER")
        if not isinstance(flt, dict):
            flt = {k: v for k, v in params.items() if k.upper() not in ("SORT", "ORDER", "ADMIN_MODE", "START")}
        # Without the full "user" scope the EMAIL filter is dropped silently (facts section 4).
        email_allowed = "user" in self.scopes
        ids: set[int] | None = None
        email: str | None = None
        active: bool | None = None
        departments: set[int] | None = None
        for key, value in flt.items():
            upper = key.upper()
            if upper == "UF_DEPARTMENT" and not self.ignore_department_filter:
                values = value if isinstance(value, list) else [value]
                departments = {int(v) for v in values if str(v).strip().lstrip("-").isdigit()}
            elif upper == "ID":
                values = value if isinstance(value, list) else [value]
                ids = {int(v) for v in values if str(v).strip().lstrip("-").isdigit()}
            elif upper == "EMAIL" and email_allowed:  # silently dropped otherwise
                email = str(value).lower()
            elif upper == "ACTIVE":
                active = _truthy_active(value)
        found = []
        for bitrix_user_id in sorted(self.users):
            user = self.users[bitrix_user_id]
            if ids is not None and bitrix_user_id not in ids:
                continue
            if email is not None and str(user.get("EMAIL", "")).lower() != email:
                continue
            if active is not None and bool(user.get("ACTIVE", True)) != active:
                continue
            if departments is not None and not departments & set(user.get("UF_DEPARTMENT", [1])):
                continue
            found.append(self._user_dict(bitrix_user_id, with_admin=False))
        start = int(_ci(params, "start") or 0)
        page = found[start : start + 50]
        extra: dict[str, Any] = {"total": len(found)}
        if start + 50 < len(found):
            extra["next"] = start + 50
        return page, extra

    def _department_get(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """department.get: filters ID, PARENT, UF_HEAD (top-level keys, as the REST method takes them), pages of 50 by START."""
        wanted: dict[str, str] = {}
        for key, value in params.items():
            if key.upper() in ("ID", "PARENT", "UF_HEAD", "NAME"):
                wanted[key.upper()] = str(value)
        found = []
        for department_id in sorted(self.departments):
            item = self.departments[department_id]
            row: dict[str, Any] = {"ID": str(department_id), "NAME": item["NAME"], "SORT": 500}
            if item["PARENT"] is not None:
                row["PARENT"] = str(item["PARENT"])
            if item["UF_HEAD"] is not None:
                row["UF_HEAD"] = str(item["UF_HEAD"])
            if any(str(row.get(key, "")) != value for key, value in wanted.items()):
                continue
            found.append(row)
        start = int(_ci(params, "START") or 0)
        extra: dict[str, Any] = {"total": len(found)}
        if start + 50 < len(found):
            extra["next"] = start + 50
        return found[start : start + 50], extra
    def _sonet_group_get(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """sonet_group.get: FILTER ID; without IS_ADMIN "Y" only groups the webhook's owner may see (reference 4)."""
        flt = _ci(params, "FILTER")
        flt = flt if isinstance(flt, dict) else {}
        wanted = _ints(flt.get("ID")) if "ID" in {str(k).upper() for k in flt} else None
        as_admin = str(_ci(params, "IS_ADMIN") or "").upper() == "Y" and self.admin
        found = []
        for group in sorted(self.workgroups.values(), key=lambda g: g.group_id):
            if wanted is not None and group.group_id not in wanted:
                continue
            if not as_admin and not group.visible and self.webhook_user_id not in group.roles():
                continue
            found.append({
                "ID": str(group.group_id), "NAME": group.name, "OWNER_ID": str(group.owner),
                "NUMBER_OF_MEMBERS": str(len(group.roles())), "PROJECT": "Y",
                "OPENED": "Y" if group.opened else "N", "VISIBLE": "Y" if group.visible else "N",
                "CLOSED": "Y" if group.closed else "N", "ACTIVE": "Y",
            })
        return found

    def _sonet_group_user_get(self, params: dict[str, Any]) -> list[dict[str, str]]:
        """sonet_group.user.get {ID}: active members with their roles (an admin's webhook reads any group)."""
        raw = _ci(params, "ID")
        try:
            group = self.workgroups.get(int(str(raw)))
        except ValueError:
            group = None
        if group is None:
            raise _Fail(400, "ERROR_CORE", "Socialnetwork group not found")
        return [
            {"USER_ID": str(uid), "ROLE": role}
            for uid, role in sorted(group.roles().items())
            if self.users.get(uid, {}).get("ACTIVE", True)
        ]

    def _notify(self, params: dict[str, Any]) -> int:
        raw_user = _ci(params, "USER_ID")
        message = str(_ci(params, "MESSAGE") or "").strip()
        try:
            bitrix_user_id = int(raw_user)
        except (TypeError, ValueError):
            bitrix_user_id = 0
        if bitrix_user_id <= 0:
            raise _Fail(400, "USER_ID_EMPTY", "Recipient is empty")
        if not message:
            raise _Fail(400, "MESSAGE_EMPTY", "Message can't be empty")
        self.notifications.append((bitrix_user_id, message))
        return len(self.notifications)

    def _batch(self, params: dict[str, Any], now: float) -> dict[str, Any]:
        cmd = _ci(params, "cmd")
        if isinstance(cmd, list):
            cmd = {str(i): v for i, v in enumerate(cmd)}
        if not isinstance(cmd, dict):
            cmd = {}
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        nexts: dict[str, Any] = {}
        times: dict[str, Any] = {}
        for index, (key, command) in enumerate(cmd.items()):
            if not isinstance(command, str):
                continue  # the server silently skips non-string commands
            if index >= 50:
                errors[key] = {"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch length exceeded"}
                continue
            sub_method, _, query = command.partition("?")
            sub_method = sub_method.removesuffix(".json")
            if sub_method == "batch":
                errors[key] = {
                    "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
                    "error_description": "Method is not allowed for batch usage",
                }
                continue
            sub_params = _listify(php_parse_query(query))
            try:
                result, extra = self._run(sub_method, sub_params, now)
            except _Fail as fail:
                errors[key] = {"error": fail.code, "error_description": fail.description}
                continue
            results[key] = result
            if "total" in extra and sub_method != "tasks.task.counters.get":
                totals[key] = extra["total"]
            if "next" in extra:
                nexts[key] = extra["next"]
            duration = self._spend(sub_method, now)
            times[key] = {
                "start": now,
                "finish": now + duration,
                "duration": duration,
                "processing": duration,
                "date_start": _iso(now),
                "date_finish": _iso(now + duration),
            }
        # PHP serialises every empty map as [] (facts section 1).
        return {
            "result": results or [],
            "result_error": errors or [],
            "result_total": totals or [],
            "result_next": nexts or [],
            "result_time": times or [],
        }

    # -- operating time -----------------------------------------------------------------

    def _spend(self, method: str, now: float) -> float:
        """Record one call's execution time and return it."""
        seconds = self.method_seconds.get(method, 0.001)
        self._operating.setdefault(method, []).append((now, seconds))
        return seconds

    def _window(self, method: str, now: float) -> list[tuple[float, float]]:
        calls = [c for c in self._operating.get(method, []) if c[0] > now - 600]
        self._operating[method] = calls
        return calls

    def operating(self, method: str, now: float | None = None) -> tuple[float, float]:
        """(seconds used in the last 10 minutes, operating_reset_at) for a method."""
        now = self.clock() if now is None else now
        calls = self._window(method, now)
        used = sum(c[1] for c in calls)
        if not calls:
            return 0.0, now + 600
        # Baskets are one minute long and start at their first call (limits.md).
        return used, calls[0][0] + 600

    def _blocked(self, method: str, now: float) -> bool:
        if self.operating_limit is None:
            return False
        used, _ = self.operating(method, now)
        return used > self.operating_limit

    def _time_block(self, now: float, duration: float, method: str | None) -> dict[str, Any]:
        block: dict[str, Any] = {
            "start": now,
            "finish": now + duration,
            "duration": duration,
            "processing": duration,
            "date_start": _iso(now),
            "date_finish": _iso(now + duration),
        }
        if self.cloud_time and method is not None:
            used, reset_at = self.operating(method, now)
            block["operating_reset_at"] = int(reset_at)
            block["operating"] = used
        return block


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts))


def batch_with_user(bitrix_user_id: int) -> Callable[[str, dict[str, Any]], bool]:
    """A Scripted.match that picks the batch request carrying counters of this user."""

    def match(method: str, params: dict[str, Any]) -> bool:
        if method != "batch":
            return False
        cmd = params.get("cmd")
        commands = cmd.values() if isinstance(cmd, dict) else []
        return any(
            php_parse_query(str(c).partition("?")[2]).get("userId") == str(bitrix_user_id) for c in commands
        )

    return match
