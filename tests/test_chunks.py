"""Scheduled work in bounded chunks (SPEC 8): each chunk is read, decided and written before the next is read.

The chunk sizes are made small here so that a few dozen users span several chunks; the users
are set up directly in SQLite, then the real coordinator reads the fake portal through the real
client and the outbox worker sends through the fake Telegram.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import pytest

from bot import coordinator as coordinator_module
from bot.model import ROLES, UserSettings
from tests import db as tdb
from tests.fakes.bitrix import Scripted
from tests.fakes.clock import FakeClock
from tests.harness import Harness
from tests.test_scheduled import digests, fail_requests

MONDAY_0800 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
FIRST_BITRIX_ID = 1000


def bitrix_id(telegram_user_id: int) -> int:
    return FIRST_BITRIX_ID + telegram_user_id


@asynccontextmanager
async def many(
    tmp_path: Path, users: int, *, overdue: Collection[int] = (), inactive: Collection[int] = ()
) -> AsyncIterator[Harness]:
    """A harness with `users` linked users (telegram_user_id 1..users), digests at 09:00 UTC on weekdays."""
    async with Harness(tmp_path, clock=FakeClock(MONDAY_0800)) as h:
        await populate(h, users, overdue, inactive)
        yield h


async def populate(h: Harness, users: int, overdue: Collection[int], inactive: Collection[int]) -> None:
    """Portal users with counters (and a late task each for `overdue`), linked in SQLite."""
    defaults = replace(UserSettings(), digest_time=dtime(9, 0))
    for tid in range(1, users + 1):
        bid = bitrix_id(tid)
        h.b24.add_user(bid, f"User{tid}", "Test", active=tid not in inactive)
        for role in ROLES:
            late = tid in overdue and role == "view_all"
            h.b24.set_counters(bid, role, expired=2 if late else 0, new_comments=1)
        if tid in overdue:
            h.b24.add_task(tid, f"late task of {tid}", deadline=MONDAY_0800 - timedelta(days=1), responsible=bid)
        await tdb.link(h.storage, tid, bid, f"User{tid} Test", defaults, h.clock.timestamp())


def batches(h: Harness, since: int = 0, method: str = "tasks.task.counters.get") -> list[dict]:
    """The batch requests since `since` whose commands call `method`."""
    return [
        r.params for r in h.b24.requests[since:]
        if r.method == "batch" and any(str(c).startswith(method) for c in r.params["cmd"].values())
    ]


def holding(h: Harness, bitrix_user_id: int) -> Scripted:
    """Hold the batch request that reads this user until the test opens the gate."""
    held = Scripted.held().only_for(
        lambda method, params: method == "batch" and any(f"userId={bitrix_user_id}&" in str(c) for c in params["cmd"].values())
    )
    h.b24.push(held)
    return held


async def in_flight(held: Scripted) -> None:
    assert held.arrived is not None
    assert await asyncio.to_thread(held.arrived.wait, 10), "the held read never started"


async def test_a_poll_cycle_decides_each_chunk_before_it_reads_the_next_and_costs_ceil_n_over_50(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator_module, "POLL_CHUNK", 100)
    async with many(tmp_path, 230) as h:
        held = holding(h, bitrix_id(201))  # the first user of the third chunk
        cycle = asyncio.ensure_future(h.services.coordinator.poll_cycle())
        await in_flight(held)
        decided = await tdb.rows(h.storage, "SELECT COUNT(*) FROM counter_snapshots")
        assert held.gate is not None
        held.gate.set()
        result = await cycle
        assert decided[0][0] == 200, "the first two chunks were not written before the third was read"
        assert (result.users, result.ok, result.requests) == (230, 230, 5)  # ceil(230/50)
        assert len(batches(h)) == 5
        assert (await tdb.rows(h.storage, "SELECT COUNT(*) FROM counter_snapshots"))[0][0] == 230


async def test_a_revoked_webhook_costs_one_request_however_many_chunks_the_cycle_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator_module, "POLL_CHUNK", 50)
    async with many(tmp_path, 120) as h:
        fail_requests(h, 401, "NO_AUTH_FOUND", "Wrong authorization data")
        result = await h.poll()
        assert (result.cause, result.users, result.failed, result.requests) == ("auth", 120, 120, 1)
        assert await tdb.rows(h.storage, "SELECT * FROM counter_snapshots") == []
        h.b24.script.clear()
        result = await h.poll()
        assert (result.cause, result.ok, result.requests) == (None, 120, 3)


async def test_a_digest_round_queues_each_chunk_before_it_reads_the_next_and_keeps_both_request_bounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator_module, "DIGEST_CHUNK", 20)
    monkeypatch.setattr(coordinator_module, "SCAN_PAGE", 7)
    overdue = {tid for tid in range(1, 46) if tid % 3 == 0}  # 15 users, in every chunk
    async with many(tmp_path, 45, overdue=overdue) as h:
        h.clock.set(MONDAY_0800.replace(hour=9))
        before = len(h.b24.requests)
        held = holding(h, bitrix_id(41))  # the third chunk's roles
        tick = asyncio.ensure_future(h.services.coordinator.digest_tick())
        await in_flight(held)
        logged = await tdb.rows(h.storage, "SELECT telegram_user_id FROM digest_log WHERE status = 'queued'")
        assert held.gate is not None
        held.gate.set()
        assert await tick == 45
        # Users 1..40 were read; those without overdue tasks are queued at once, the others wait
        # until 50 are gathered (or the round ends) so that their task lines cost one request.
        assert sorted(r[0] for r in logged) == [tid for tid in range(1, 41) if tid not in overdue]
        assert len(batches(h, before)) == 5  # ceil(45/10)
        (lines,) = batches(h, before, "tasks.task.list")  # ceil(15/50), not one per chunk
        assert len(lines["cmd"]) == 15
        await h.flush()
        for tid in range(1, 46):
            (text,) = digests(h, tid)
            assert ("Most overdue:" in text) == (tid in overdue), tid
            assert (f"late task of {tid}<" in text) == (tid in overdue), tid


async def test_the_teams_of_heads_due_in_different_chunks_are_read_together_in_ceil_p_over_50(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator_module, "DIGEST_CHUNK", 10)
    async with many(tmp_path, 25) as h:
        h.b24.scopes.add("department")
        h.b24.add_department(1, "Company")
        for n, tid in enumerate((5, 15, 25)):  # one head in each chunk, ten unlinked people each
            department = 10 + n
            h.b24.add_department(department, f"Team {tid}", parent=1, head=bitrix_id(tid))
            for person in range(5000 + 10 * n, 5010 + 10 * n):
                h.b24.add_user(person, f"P{person}", "Team", departments=(department,))
                h.b24.set_counters(person, "view_all", expired=1, new_comments=0)
        h.clock.set(MONDAY_0800.replace(hour=9))
        before = len(h.b24.requests)
        assert await h.services.coordinator.digest_tick() == 25
        roles = [b for b in batches(h, before) if any("type=view_role_auditor" in str(c) for c in b["cmd"].values())]
        teams = [b for b in batches(h, before) if b not in roles]
        assert len(roles) == 3 and len(teams) == 1 and len(teams[0]["cmd"]) == 30  # ceil(25/10), ceil(30/50)
        await h.flush()
        for tid in range(1, 26):
            (text,) = digests(h, tid)
            assert ("10 overdue across 10 of 10 people" in text) == (tid in (5, 15, 25)), tid


async def test_a_digest_round_that_fails_as_a_whole_reads_no_further_chunk_and_goes_out_next_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator_module, "DIGEST_CHUNK", 10)
    async with many(tmp_path, 30) as h:
        h.clock.set(MONDAY_0800.replace(hour=9))
        fail_requests(h, 401, "NO_AUTH_FOUND", "Wrong authorization data")
        before = len(h.b24.requests)
        assert await h.services.coordinator.digest_tick() == 0
        assert len(batches(h, before)) == 1  # one batch of roles, however many chunks
        assert await tdb.rows(h.storage, "SELECT * FROM digest_log") == []
        h.b24.script.clear()
        h.clock.advance(minutes=1)
        assert await h.services.coordinator.digest_tick() == 30
        await h.flush()
        assert all(len(digests(h, tid)) == 1 for tid in range(1, 31))


async def test_the_recheck_reads_in_chunks_and_unlinks_only_the_inactive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordinator_module, "RECHECK_CHUNK", 50)
    inactive = {tid for tid in range(1, 121) if tid % 6 == 0}  # 20 of 120, in every chunk
    async with many(tmp_path, 120, inactive=inactive) as h:
        h.clock.advance(days=1)
        before = h.b24.request_count("user.get")
        assert await h.services.coordinator.recheck_links() == 20
        assert h.b24.request_count("user.get") - before == 3  # ceil(120/50)
        await h.flush()
        for tid in range(1, 121):
            user = await tdb.user(h.storage, tid)
            assert (user.bitrix_user_id is None) == (tid in inactive), tid
            assert sum("no longer active" in t for t in h.tg.texts(tid)) == (1 if tid in inactive else 0), tid
        before = h.b24.request_count("user.get")
        assert await h.services.coordinator.recheck_links() == 0
        assert h.b24.request_count("user.get") == before  # everyone still linked was marked checked


async def test_the_mass_unlink_guard_looks_at_every_chunk_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordinator_module, "RECHECK_CHUNK", 50)
    # 70 of 120 look inactive: more than half of all, but no more than half of the first two chunks.
    inactive = set(range(1, 26)) | set(range(51, 76)) | set(range(101, 121))
    async with many(tmp_path, 120, inactive=inactive) as h:
        h.clock.advance(days=1)
        assert await h.services.coordinator.recheck_links() == 0
        await h.flush()
        linked = [(await tdb.user(h.storage, tid)).bitrix_user_id for tid in range(1, 121)]
        assert linked == [bitrix_id(tid) for tid in range(1, 121)]
        assert not any("no longer active" in t for t in h.tg.texts())
