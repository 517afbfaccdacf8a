"""SharedReads: a window per kind of read, one request in flight per read, 6 requests a minute per user."""

from __future__ import annotations

import asyncio

import pytest

from bot.reader import SharedReads, TooManyReads
from tests.fakes.clock import FakeClock


async def test_a_read_inside_its_window_is_answered_from_the_last_one() -> None:
    clock = FakeClock()
    reads = SharedReads(clock)
    calls: list[str] = []

    async def fetch() -> str:
        calls.append("x")
        return f"value {len(calls)}"

    first = await reads.read(1, "counters", 10.0, fetch)
    clock.advance(seconds=9)
    again = await reads.read(1, "counters", 10.0, fetch)
    assert (first.value, first.cached, again.value, again.cached) == ("value 1", False, "value 1", True)
    clock.advance(seconds=2)
    assert (await reads.read(1, "counters", 10.0, fetch)).value == "value 2"


async def test_reads_arriving_together_share_one_fetch_and_one_request() -> None:
    clock = FakeClock()
    reads = SharedReads(clock, per_minute=1)
    gate = asyncio.Event()
    calls: list[int] = []

    async def fetch() -> int:
        calls.append(1)
        await gate.wait()
        return 42

    waiting = [asyncio.ensure_future(reads.read(1, ("tasks", "view_all", 0), 10.0, fetch)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert [r.value for r in await asyncio.gather(*waiting)] == [42] * 5 and calls == [1]


async def test_all_of_a_users_kinds_together_make_at_most_six_requests_a_minute() -> None:
    clock = FakeClock()
    reads = SharedReads(clock)

    async def fetch() -> str:
        return "ok"

    for n in range(6):
        await reads.read(7, ("tasks", n), 10.0, fetch)
        clock.advance(seconds=5)
    assert reads.refused(7, ("tasks", 99), 10.0) == pytest.approx(30.0)
    with pytest.raises(TooManyReads) as refused:
        await reads.read(7, "counters", 10.0, fetch)
    assert refused.value.retry_in == pytest.approx(30.0)
    assert (await reads.read(8, "counters", 10.0, fetch)).value == "ok"  # another user is not affected
    assert reads.refused(7, ("tasks", 5), 10.0) is None  # inside its window: no request needed
    clock.advance(seconds=31)
    assert (await reads.read(7, "counters", 10.0, fetch)).value == "ok"


async def test_a_failed_fetch_reaches_every_waiter_and_is_not_kept() -> None:
    clock = FakeClock()
    reads = SharedReads(clock)

    async def broken() -> str:
        raise RuntimeError("portal down")

    with pytest.raises(RuntimeError):
        await reads.read(1, "counters", 10.0, broken)

    async def fine() -> str:
        return "back"

    assert (await reads.read(1, "counters", 10.0, fine)).value == "back"


async def test_reads_and_request_records_of_users_idle_for_a_minute_are_not_kept() -> None:
    clock = FakeClock()
    reads = SharedReads(clock)

    async def fetch() -> str:
        return "ok"

    for bitrix_user_id in range(1, 1001):
        await reads.read(bitrix_user_id, "counters", 10.0, fetch)
    assert reads.entries == 2000  # a read and a request record each
    clock.advance(seconds=61)
    await reads.read(5000, "counters", 10.0, fetch)
    assert reads.entries == 2
    assert reads.last(1, "counters") is None and reads.refused(1, "counters", 10.0) is None
