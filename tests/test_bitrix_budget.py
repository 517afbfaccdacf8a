"""The time budget (issue item 9): bulk reads are paced under 80 % of the 480 s per 10 minutes."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from bot.bitrix import (
    BULK_SHARE,
    DEFAULT_LIMIT,
    BitrixClient,
    Counters,
    LeakyBucket,
    TimeBudget,
)
from bot.errors import BitrixTimeBudgetError
from bot.model import ROLES
from tests.bitrix_clock import COUNTERS, T0, WEBHOOK, FakeClock, client_for
from tests.fakes.bitrix import FakeBitrix, Scripted


def make_client(http: httpx.AsyncClient, clock: FakeClock) -> BitrixClient:
    return client_for(http, clock)


@pytest.fixture
def client(http: httpx.AsyncClient, clock: FakeClock) -> BitrixClient:
    return make_client(http, clock)


def add_users(fake: FakeBitrix, count: int, roles: tuple[str, ...] = ("view_all",)) -> list[int]:
    ids = list(range(100, 100 + count))
    for bitrix_user_id in ids:
        for role in roles:
            fake.set_counters(bitrix_user_id, role, expired=1, new_comments=0)
    return ids


def wire_spend(fake: FakeBitrix, seconds: float) -> list[tuple[float, float]]:
    """(time, seconds) of counters execution, from the requests that reached the fake."""
    out = []
    for r in fake.requests:
        if r.method == "batch":
            out.append((r.time, seconds * sum(1 for c in r.params["cmd"].values() if c.startswith(COUNTERS))))
        elif r.method == COUNTERS:
            out.append((r.time, seconds))
    return out


def worst_window(spend: list[tuple[float, float]]) -> float:
    """The largest sum inside any 10-minute window (t - 600, t]; the maximum is at some entry's time."""
    return max((sum(s for t, s in spend if end - 600 < t <= end) for end, _ in spend), default=0.0)


# -- the scenario of the issue ---------------------------------------------------------------------


@pytest.mark.parametrize(("users", "seconds"), [(100, 3.0), (100, 1.0), (230, 0.5)])
async def test_bulk_poll_cycles_over_40_minutes_never_hit_the_limit_and_stay_under_the_bulk_share(
    client, fake, clock, users, seconds
):
    ids = add_users(fake, users)
    fake.method_seconds[COUNTERS] = seconds
    fake.operating_limit = 480.0  # the fake answers 429 OPERATION_TIME_LIMIT past this
    cycles = 0
    while clock.t < T0 + 40 * 60:
        result = await client.counters(ids, ("view_all",), bulk=True)
        assert all(isinstance(result[uid]["view_all"], Counters) for uid in ids), f"cycle {cycles} at {clock.t - T0:.0f} s"
        cycles += 1
        clock.t += 60  # the poll interval
    assert all(r.status == 200 for r in fake.requests)
    assert client.stats.http_429 == 0 and client.blocked_until(COUNTERS) is None
    spend = wire_spend(fake, seconds)
    assert worst_window(spend) <= BULK_SHARE * 480.0 + 1e-6
    # ... and the pacing does not waste the budget: over 40 minutes the share is used.
    assert sum(s for _, s in spend) >= BULK_SHARE * 480.0 * 3
    assert cycles >= 4


async def test_bulk_pacing_counts_what_interactive_reads_used(client, fake, clock):
    ids = add_users(fake, 100, ROLES)
    fake.method_seconds[COUNTERS] = 3.0
    fake.operating_limit = 480.0
    await client.counters([100], ROLES)  # interactive: 15 s, and the per-command cost is now known
    before = clock.t
    await client.counters(ids, ("view_all",), bulk=True)  # 2 x 150 s: fits under 384 s with the 15 s
    assert clock.t == before
    await client.counters(ids, ("view_all",), bulk=True)  # 315 + 150 > 384: waits for the oldest to leave
    assert clock.t == pytest.approx(T0 + 600)
    assert all(r.status == 200 for r in fake.requests)


async def test_an_interactive_read_never_waits_for_the_budget(client, fake, clock):
    ids = add_users(fake, 100, ROLES)
    fake.method_seconds[COUNTERS] = 3.0
    fake.operating_limit = 480.0
    await client.counters(ids, ("view_all",), bulk=True)  # 300 s
    clock.t += 60
    result = await client.counters([100], ROLES)
    assert all(isinstance(cell, Counters) for cell in result[100].values())
    assert clock.t == T0 + 60  # no wait
    assert fake.requests[-1].time == T0 + 60


async def test_a_bulk_read_of_a_blocked_method_fails_at_once_without_waiting_or_a_request(client, fake, clock):
    ids = add_users(fake, 100)
    fake.push(Scripted.error(429, "OPERATION_TIME_LIMIT"))
    with pytest.raises(BitrixTimeBudgetError):
        await client.call(COUNTERS, {"userId": 100})
    sent = len(fake.requests)
    result = await client.counters(ids, ("view_all",), bulk=True)
    assert all(isinstance(result[uid]["view_all"], BitrixTimeBudgetError) for uid in ids)
    assert len(fake.requests) == sent
    assert clock.t == T0


async def test_the_servers_operating_figure_counts_when_it_is_larger_than_our_own(client, fake, clock):
    ids = add_users(fake, 100)
    # Another process on the same webhook already used 350 s; our own records know 3 s.
    fake.push(
        Scripted(
            status=200,
            json={
                "result": {"expired": {"counter": 1, "code": 6291456}},
                "time": {"duration": 3.0, "operating": 350.0, "operating_reset_at": T0 + 500},
            },
        )
    )
    await client.call(COUNTERS, {"userId": 100, "type": "view_all"})
    assert client.method_time_used(COUNTERS) == pytest.approx(350.0)
    assert client.budget.spent(COUNTERS) == pytest.approx(3.0)
    await client.counters(ids, ("view_all",), bulk=True)  # 350 + 150 > 384: waits until it is gone
    assert min(r.time for r in fake.requests if r.method == "batch") == pytest.approx(T0 + 600)
    clock.t = T0 + 2000
    assert client.method_time_used(COUNTERS) == 0.0


async def test_the_existing_accessors_still_answer(client, fake, clock):
    fake.method_seconds[COUNTERS] = 2.0
    await client.call(COUNTERS, {"userId": 1})
    assert client.method_time_used(COUNTERS) == pytest.approx(2.0)
    assert client.last_operating(COUNTERS).operating == pytest.approx(2.0)
    assert client.blocked_until(COUNTERS) is None
    assert client.budget.per_command(COUNTERS) == pytest.approx(2.0)


# -- TimeBudget.reserve on its own -----------------------------------------------------------------


def budget_on(clock: FakeClock, limit: float = 100.0) -> TimeBudget:
    return TimeBudget(wall=clock.now, sleep=clock.sleep, limit=limit, bulk_share=0.8)


async def test_reserve_waits_until_enough_old_entries_leave_the_window(clock):
    budget = budget_on(clock)
    budget.record("m", {"duration": 30.0})
    clock.t += 100
    budget.record("m", {"duration": 30.0})
    clock.t += 100
    waited = await budget.reserve("m", 30.0, bulk=True)  # 60 + 30 > 80 until the first leaves at T0 + 600
    assert waited == pytest.approx(400.0)
    assert clock.t == pytest.approx(T0 + 600)
    assert budget.used("m") == pytest.approx(60.0)  # the second entry and the reservation
    budget.record("m", {"duration": 25.0})
    budget.settle("m", 30.0)
    assert budget.used("m") == pytest.approx(55.0)


async def test_an_interactive_reservation_may_use_the_whole_limit(clock):
    budget = budget_on(clock)
    budget.record("m", {"duration": 70.0})
    assert await budget.reserve("m", 25.0, bulk=False) == 0.0
    assert budget.wait_needed("m", 1.0, bulk=True) == pytest.approx(600.0)


async def test_an_estimate_above_the_share_is_capped_and_does_not_deadlock(clock):
    budget = budget_on(clock)
    assert await budget.reserve("m", 500.0, bulk=True) == 0.0
    assert budget.used("m") == pytest.approx(80.0)
    budget.settle("m", 500.0, spent=500.0)  # outcome unknown: kept, but never more than was held
    assert budget.used("m") == pytest.approx(80.0)
    waited = await budget.reserve("m", 500.0, bulk=True)
    assert waited == pytest.approx(600.0)
    budget.settle("m", 500.0)
    assert budget.used("m") == 0.0


async def test_concurrent_reservations_never_let_any_window_pass_the_share(clock):
    rng = random.Random(7)
    budget = budget_on(clock)
    spent: list[tuple[float, float]] = []

    async def one_request(estimate: float) -> None:
        await budget.reserve("m", estimate, bulk=True)
        await clock.sleep(rng.uniform(0, 5))  # the request is in flight
        actual = min(estimate, budget.share(bulk=True)) * rng.uniform(0.3, 1.0)
        budget.record("m", {"duration": actual})
        spent.append((clock.t, actual))
        budget.settle("m", estimate)

    for _ in range(150):
        await asyncio.gather(*(one_request(rng.uniform(0, 120)) for _ in range(rng.randint(1, 3))))
        clock.t += rng.uniform(0, 90)
    assert worst_window(spent) <= 80.0 + 1e-6
    assert clock.t - T0 > 3 * 600  # it did have to wait


def test_stretch_needed_says_how_long_a_cycle_must_be(clock):
    budget = TimeBudget(wall=clock.now, sleep=clock.sleep)
    assert budget.stretch_needed(COUNTERS, 100, 60.0) is None  # cost unknown
    budget.note_cost(COUNTERS, [3.0, 3.0])
    assert budget.stretch_needed(COUNTERS, 100, 60.0) == pytest.approx(600 * 300 / (0.8 * 480))
    assert budget.stretch_needed(COUNTERS, 100, 600.0) is None
    assert (budget.limit, budget.bulk_share) == (DEFAULT_LIMIT, BULK_SHARE) == (480.0, 0.8)


# -- persistence across restarts -------------------------------------------------------------------


async def test_the_budget_survives_a_restart_through_export_and_restore(http, fake, clock):
    ids = add_users(fake, 100)
    fake.method_seconds[COUNTERS] = 3.0
    fake.operating_limit = 480.0
    first = make_client(http, clock)
    await first.counters(ids, ("view_all",), bulk=True)  # 300 s at T0
    saved = json.loads(json.dumps(first.budget.export()))
    assert saved["version"] == 1
    entry = saved["methods"][COUNTERS]
    assert sorted(entry) == ["blocked_until", "entries", "operating", "per_command"]
    assert sum(seconds for _, seconds in entry["entries"]) == pytest.approx(300.0)
    assert entry["per_command"] == pytest.approx(3.0)

    clock.t += 60
    second = make_client(http, clock)  # a restarted bot
    second.budget.restore(saved, clock.t)
    assert second.method_time_used(COUNTERS) == pytest.approx(300.0)
    await second.counters(ids, ("view_all",), bulk=True)  # waits for the first cycle to leave
    assert clock.t == pytest.approx(T0 + 600)
    assert all(r.status == 200 for r in fake.requests)


async def test_a_restored_block_still_refuses_the_call_with_no_request(http, fake, clock):
    ids = add_users(fake, 10)
    first = make_client(http, clock)
    fake.push(Scripted.error(429, "OPERATION_TIME_LIMIT").only_for(lambda method, params: method == "batch"))
    await first.counters(ids, ("view_all",), bulk=True)
    assert first.blocked_until(COUNTERS) == pytest.approx(T0 + 600)
    saved = json.loads(json.dumps(first.budget.export()))
    sent = len(fake.requests)

    clock.t += 100
    second = make_client(http, clock)
    second.budget.restore(saved, clock.t)
    assert second.blocked_until(COUNTERS) == pytest.approx(T0 + 600)
    with pytest.raises(BitrixTimeBudgetError) as info:
        await second.call(COUNTERS, {"userId": 100})
    assert info.value.retry_after == pytest.approx(500.0)
    result = await second.counters(ids, ("view_all",), bulk=True)
    assert all(isinstance(result[uid]["view_all"], BitrixTimeBudgetError) for uid in ids)
    assert len(fake.requests) == sent
    clock.t = T0 + 601
    assert isinstance((await second.counters(ids, ("view_all",), bulk=True))[100]["view_all"], Counters)


def test_restore_drops_whatever_has_expired(clock):
    budget = TimeBudget(wall=clock.now, sleep=clock.sleep)
    budget.record(COUNTERS, {"duration": 5.0, "operating": 9.0, "operating_reset_at": T0 + 600})
    budget.note_cost(COUNTERS, [5.0])
    budget.block(COUNTERS)
    saved = json.loads(json.dumps(budget.export()))
    clock.t = T0 + 601
    later = TimeBudget(wall=clock.now, sleep=clock.sleep)
    later.restore(saved, clock.t)
    assert later.used(COUNTERS) == 0.0
    assert later.blocked_until(COUNTERS) is None
    assert later.last_operating(COUNTERS) is None
    assert later.per_command(COUNTERS) == pytest.approx(5.0)  # a cost estimate does not expire


@pytest.mark.parametrize(
    "data",
    [None, "junk", {"version": 99, "methods": {}}, {"version": 1, "methods": []},
     {"version": 1, "methods": {COUNTERS: {"entries": [["x", 1], [1, 2, 3], None], "blocked_until": "soon",
                                           "per_command": -1, "operating": [1, 2]}}}],
    ids=["none", "string", "version", "methods list", "odd fields"],
)
def test_restore_skips_data_it_does_not_understand(clock, data):
    budget = TimeBudget(wall=clock.now, sleep=clock.sleep)
    budget.restore(data, clock.t)
    assert budget.used(COUNTERS) == 0.0
    assert budget.blocked_until(COUNTERS) is None
    assert budget.per_command(COUNTERS) is None


async def test_a_bulk_read_cancelled_in_flight_keeps_its_reservation_as_spent(client, fake, clock):
    ids = add_users(fake, 50)
    client.budget.note_cost(COUNTERS, [3.0])
    fake.push(Scripted(delay=0.5))  # real seconds: the request is in flight when we cancel
    task = asyncio.create_task(client.counters(ids, ("view_all",), bulk=True))
    while not fake.requests:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.budget.spent(COUNTERS) == pytest.approx(150.0)  # it may have run on the server
    assert client.budget.used(COUNTERS) == pytest.approx(150.0)  # and is no longer a reservation too


async def test_a_bulk_read_cancelled_while_waiting_for_budget_leaves_nothing_behind(http, fake, clock):
    async def never(seconds: float) -> None:
        await asyncio.Event().wait()

    ids = add_users(fake, 50)
    budget = TimeBudget(wall=clock.now, sleep=never)
    budget.note_cost(COUNTERS, [3.0])
    budget.record(COUNTERS, {"duration": 300.0})
    client = BitrixClient(
        WEBHOOK, http, LeakyBucket(2, 50, monotonic=clock.now, sleep=clock.sleep),
        monotonic=clock.now, wall=clock.now, sleep=clock.sleep, budget=budget,
    )
    task = asyncio.create_task(client.counters(ids, ("view_all",), bulk=True))
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.requests == []
    assert budget.used(COUNTERS) == pytest.approx(300.0)


async def test_an_operating_figure_inside_a_batch_is_compared_after_the_whole_answer_is_counted(client, fake, clock):
    times = {
        f"u{uid}_0": {"start": T0, "finish": T0 + 3, "duration": 3.0, "operating": 6.0 + 3.0 * i}
        for i, uid in enumerate((100, 101))
    }
    inner = {
        "result": {key: {"expired": {"counter": 1}} for key in times},
        "result_error": [], "result_total": [], "result_next": [], "result_time": times,
    }
    fake.push(Scripted(status=200, json={"result": inner, "time": {"duration": 6.1}}))
    await client.counters([100, 101], ("view_all",), bulk=True)
    # The server says 9 s, our answer explains 6 s: 3 s came from somewhere else.
    assert client.budget.spent(COUNTERS) == pytest.approx(6.0)
    assert client.method_time_used(COUNTERS) == pytest.approx(9.0)
