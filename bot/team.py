"""Team views for department heads (SPEC 12): the structure cache, the people of a head's departments, their counters.

Bitrix24 lets a head read the task counters of everyone in their departments and all
sub-departments (`CTasks::IsSubordinate`, reference 4); the bot shows that and nothing wider.
Everything here lives in memory and expires (SPEC 9): the company structure after 15 minutes,
the people of a department after 15 minutes, a person's counters after 5 minutes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.bitrix import INTERACTIVE_DEADLINE, BitrixClient, BitrixUser, Counters, Priority
from bot.bitrix.results import Department
from bot.config import Settings
from bot.errors import BitrixBadAnswerError, BitrixError, BitrixScopeError
from bot.reader import WINDOW_SECONDS, Read, SharedReads
from bot.storage import Storage, alerts, links
from bot.teamview import Member, TeamView

__all__ = [
    "COUNTERS_SECONDS",
    "STRUCTURE_SECONDS",
    "NotAHead",
    "Structure",
    "TeamScopeMissing",
    "TeamUnavailable",
    "TeamViews",
    "TeamViewsOff",
]

log = logging.getLogger(__name__)

STRUCTURE_SECONDS = 15 * 60.0  # SPEC 12: the structure (and who is in a department) is read at most every 15 min
COUNTERS_SECONDS = 5 * 60.0  # SPEC 12: a person's counters from a read at most 5 minutes old
SCOPE_MISSING_SECONDS = 60.0  # a missing `department` scope is asked again after a minute, not on every press
BACK_WINDOW_SECONDS = 60.0  # "back to the team" shows the view read within the last minute


class TeamViewsOff(Exception):
    """LINK_VERIFICATION=none: a false claim would open a whole department, so team views are off."""


class TeamScopeMissing(Exception):
    """The webhook lacks the `department` scope: the administrator must add it."""


class NotAHead(Exception):
    """The user heads no department."""


class TeamUnavailable(Exception):
    """The portal did not apply the user.get UF_DEPARTMENT filter: nothing is shown, admins are told."""


@dataclass(frozen=True)
class Structure:
    """The company structure as read at `read_at`: departments by ID, and each one's children."""

    departments: Mapping[int, Department]
    children: Mapping[int, tuple[int, ...]]
    read_at: float

    @classmethod
    def of(cls, departments: Iterable[Department], read_at: float) -> Structure:
        """Index a department.get answer."""
        by_id = {d.department_id: d for d in departments}
        children: dict[int, list[int]] = {}
        for d in by_id.values():
            if d.parent_id is not None:
                children.setdefault(d.parent_id, []).append(d.department_id)
        return cls(by_id, {k: tuple(sorted(v)) for k, v in children.items()}, read_at)

    def headed_by(self, bitrix_user_id: int) -> list[int]:
        """The departments whose UF_HEAD is this user, by ID."""
        return sorted(i for i, d in self.departments.items() if d.head_id == bitrix_user_id)

    def team_departments(self, bitrix_user_id: int) -> list[int]:
        """The head's departments and all their sub-departments (breadth first, each once; cycles cut)."""
        order: list[int] = []
        seen: set[int] = set()
        queue = self.headed_by(bitrix_user_id)
        while queue:
            current = queue.pop(0)
            if current in seen:
                continue
            seen.add(current)
            order.append(current)
            queue += [c for c in self.children.get(current, ()) if c not in seen]
        return order


class TeamViews:
    """Reads and authorizes team views; owns the structure, department-people and counter caches (SPEC 12)."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        bitrix: BitrixClient,
        clock: Any,
        reads: SharedReads,
        on_filter_ignored: Callable[[], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._storage = storage
        self._bitrix = bitrix
        self._clock = clock
        self._reads = reads
        self._on_filter_ignored = on_filter_ignored
        self._structure: Structure | None = None
        self._scope_missing_at: float | None = None
        self._structure_lock = asyncio.Lock()
        self._people_lock = asyncio.Lock()
        self._department_people: dict[int, tuple[tuple[int, ...], float]] = {}  # department -> (people, read at)
        self._people: dict[int, BitrixUser] = {}
        self._counters: dict[int, tuple[Counters, float]] = {}  # unlinked people's view_all, by Bitrix24 ID
        self._teams: dict[int, tuple[int, TeamView]] = {}  # Telegram ID -> (head's Bitrix24 ID, last view)

    @property
    def on(self) -> bool:
        """Team views are off with LINK_VERIFICATION=none (SPEC 12)."""
        return self._settings.link_verification != "none"

    def forget(self, telegram_user_id: int) -> None:
        """Drop a user's team cache (/unlink, /forget, a moved link)."""
        self._teams.pop(telegram_user_id, None)

    # ---- interactive ----------------------------------------------------------------------

    async def view(self, telegram_user_id: int, bitrix_user_id: int, *, refresh: bool) -> Read[TeamView]:
        """The head's team view, from the 10 s window (a minute for "back") or read now.

        Raises TeamViewsOff, TeamScopeMissing, NotAHead, TeamUnavailable, BitrixError, TooManyReads.
        """
        if not self.on:
            raise TeamViewsOff

        async def fetch() -> TeamView:
            return await self._build(bitrix_user_id, Priority.USER)

        window = WINDOW_SECONDS if refresh else BACK_WINDOW_SECONDS
        read = await self._reads.read(bitrix_user_id, "team", window, fetch)
        now = self._clock.timestamp()
        # Bounded: a view older than the structure it came from is dropped (SPEC 9).
        self._teams = {tid: v for tid, v in self._teams.items() if now - v[1].read_at < STRUCTURE_SECONDS}
        self._teams[telegram_user_id] = (bitrix_user_id, read.value)
        return read

    def refused(self, bitrix_user_id: int) -> float | None:
        """Seconds to wait when a team read would pass the user's per-minute cap, else None."""
        return self._reads.refused(bitrix_user_id, "team", WINDOW_SECONDS)

    async def member(self, telegram_user_id: int, bitrix_user_id: int, person: int) -> BitrixUser | None:
        """The person if they are on this head's team now (structure cache re-checked), else None; raises like view()."""
        if not self.on or person == bitrix_user_id:
            return None
        structure = await self._read_structure(Priority.USER)
        departments = set(structure.team_departments(bitrix_user_id))
        if not departments:
            self.forget(telegram_user_id)
            return None
        for user in await self._people_of(departments, Priority.USER):
            if user.bitrix_user_id == person and user.departments & departments:
                return user
        return None

    async def _build(self, bitrix_user_id: int, priority: int) -> TeamView:
        structure = await self._read_structure(priority)
        departments = structure.team_departments(bitrix_user_id)
        if not departments:
            raise NotAHead
        people = [p for p in await self._people_of(departments, priority) if p.bitrix_user_id != bitrix_user_id]
        counters = await self._counters_of([p.bitrix_user_id for p in people], priority)
        names = tuple(structure.departments[d].name for d in departments)
        members = tuple(Member(p, counters.get(p.bitrix_user_id)) for p in people)
        return TeamView(names, members, self._clock.timestamp())

    # ---- digest ---------------------------------------------------------------------------

    async def digest_teams(self, heads: Mapping[int, int]) -> dict[int, tuple[Member, ...]]:
        """The team members (with counters) of each of these due users who heads a department, by Telegram ID.

        One structure read (cached), one read of the people of all their departments together
        (cached), and the counters of every member the last poll does not cover in one read:
        ceil(P/50) requests (SPEC 8). A failure leaves every line out; it never raises.
        """
        if not self.on or not heads:
            return {}
        try:
            # Without the scope, digests ask again only when the structure would be re-read anyway.
            structure = await self._read_structure(Priority.DIGEST, missing_retry=STRUCTURE_SECONDS)
            teams = {tid: set(structure.team_departments(bid)) for tid, bid in heads.items()}
            teams = {tid: depts for tid, depts in teams.items() if depts}
            if not teams:
                return {}
            people = await self._people_of(set().union(*teams.values()), Priority.DIGEST)
            chosen = {
                tid: [p for p in people if p.departments & depts and p.bitrix_user_id != heads[tid]]
                for tid, depts in teams.items()
            }
            everyone = sorted({p.bitrix_user_id for team in chosen.values() for p in team})
            counters = await self._counters_of(everyone, Priority.DIGEST)
        except (BitrixError, TeamScopeMissing, TeamUnavailable) as err:
            log.info("digest: team lines left out: %s", getattr(err, "code", type(err).__name__))
            return {}
        # A team with anyone unread gets no line: a partial sum would read as a smaller backlog.
        return {
            tid: tuple(Member(p, counters[p.bitrix_user_id]) for p in team)
            for tid, team in chosen.items()
            if all(p.bitrix_user_id in counters for p in team)
        }

    # ---- reads ----------------------------------------------------------------------------

    async def _read_structure(self, priority: int, *, missing_retry: float = SCOPE_MISSING_SECONDS) -> Structure:
        """The company structure, read whole at most every 15 minutes; every head's subtree derives from it."""
        async with self._structure_lock:  # a read in flight is shared
            now = self._clock.timestamp()
            if self._structure is not None and now - self._structure.read_at < STRUCTURE_SECONDS:
                return self._structure
            if self._scope_missing_at is not None and now - self._scope_missing_at < missing_retry:
                raise TeamScopeMissing
            try:
                found = await self._bitrix.departments(deadline=INTERACTIVE_DEADLINE, priority=priority)
            except BitrixScopeError as err:
                self._scope_missing_at = now
                raise TeamScopeMissing from err
            self._scope_missing_at = None
            self._structure = Structure.of(found, now)
            return self._structure

    async def _people_of(self, departments: Iterable[int], priority: int) -> list[BitrixUser]:
        """The active people of these departments, each once; departments not read for 15 minutes are read together."""
        wanted = set(departments)
        async with self._people_lock:
            now = self._clock.timestamp()
            # Expire: the cache never holds more than the departments read in the last 15 minutes.
            self._department_people = {
                d: v for d, v in self._department_people.items() if now - v[1] < STRUCTURE_SECONDS
            }
            stale = sorted(d for d in wanted if d not in self._department_people)
            if stale:
                try:
                    found = await self._bitrix.users_in_departments(stale, deadline=INTERACTIVE_DEADLINE, priority=priority)
                except BitrixBadAnswerError as err:
                    if err.code != "FILTER_IGNORED":
                        raise
                    log.error("the portal ignores the user.get UF_DEPARTMENT filter: team views show nothing")
                    await self._on_filter_ignored()
                    raise TeamUnavailable from err
                members: dict[int, list[int]] = {d: [] for d in stale}
                for user in found:
                    self._people[user.bitrix_user_id] = user
                    for d in user.departments & set(stale):
                        members[d].append(user.bitrix_user_id)
                for d, ids in members.items():
                    self._department_people[d] = (tuple(ids), now)
            kept = {i for ids, _ in self._department_people.values() for i in ids}
            self._people = {i: u for i, u in self._people.items() if i in kept}
            ids = sorted({i for d in wanted for i in self._department_people[d][0]})
            return [self._people[i] for i in ids if i in self._people]

    async def _counters_of(self, people: list[int], priority: int) -> dict[int, Counters]:
        """view_all per person: the last poll for linked people, else a read at most 5 minutes old (50 a batch)."""
        now = self._clock.timestamp()
        self._counters = {i: v for i, v in self._counters.items() if now - v[1] < COUNTERS_SECONDS}
        out: dict[int, Counters] = {}
        db = self._storage.db
        linked = await links.active_of(db, people)
        tids = [link.telegram_user_id for link in linked.values()]
        snapshots = await alerts.snapshots_of(db, tids)
        read_times = await alerts.read_times(db, tids)
        fresh_for = 2 * self._settings.poll_interval_seconds + 60.0  # the poll covers them while it runs
        for bid, link in linked.items():
            values = snapshots.get(link.telegram_user_id)
            if values is not None and now - read_times.get(link.telegram_user_id, float("-inf")) < fresh_for:
                out[bid] = Counters(dict(values))
        for bid in people:
            if bid not in out and bid in self._counters:
                out[bid] = self._counters[bid][0]
        missing = [bid for bid in people if bid not in out]
        if missing:
            read = await self._bitrix.counters(
                missing, ("view_all",), deadline=INTERACTIVE_DEADLINE, priority=priority
            )  # never bulk: a team read does not wait for the time budget, so it never delays a digest
            for bid in missing:
                value = read.get(bid, {}).get("view_all")
                if isinstance(value, Counters):
                    out[bid] = value
                    self._counters[bid] = (value, now)
        return out
