"""The client's bucket serves requests by priority (SPEC 14): users, digests, polls, then events, within their share."""

from __future__ import annotations

import asyncio

from bot.bitrix import LeakyBucket, Priority
from tests.bitrix_clock import FakeClock


async def fill(bucket: LeakyBucket, n: int) -> None:
    for _ in range(n):
        await bucket.acquire()


async def test_a_users_read_waits_behind_at_most_the_one_request_already_waiting() -> None:
    # Real (short) waits: the order depends on who is waiting while a slot drains, which a clock
    # that jumps instead of waiting cannot show. 20 requests/s: a slot every 0.05 s.
    bucket = LeakyBucket(20.0, 10)
    await fill(bucket, 9)  # full
    order: list[str] = []

    async def take(name: str, priority: Priority) -> None:
        await bucket.acquire(priority=priority)
        order.append(name)

    waiting = [asyncio.create_task(take("poll 1", Priority.POLL))]
    await asyncio.sleep(0)  # poll 1 waits for the next slot
    for name, priority in (("event", Priority.EVENT), ("poll 2", Priority.POLL), ("digest", Priority.DIGEST), ("user", Priority.USER)):
        waiting.append(asyncio.create_task(take(name, priority)))
    await asyncio.gather(*waiting)
    assert order == ["poll 1", "user", "digest", "poll 2", "event"]


async def test_event_work_goes_only_while_half_of_the_bucket_is_free() -> None:
    clock = FakeClock()
    bucket = LeakyBucket(2.0, 50, monotonic=clock.now, sleep=clock.sleep)
    await fill(bucket, 30)
    start = clock.now()
    await bucket.acquire(priority=Priority.EVENT)
    waited = clock.now() - start
    # The level had to drain from 30 to 23.5 (half of 49 minus the request itself) at 1.96 a second.
    assert 3.0 < waited < 4.0, waited
    assert bucket.level <= 25.0


async def test_event_work_uses_at_most_a_quarter_of_the_rate_after_a_quarter_of_the_burst() -> None:
    clock = FakeClock()
    bucket = LeakyBucket(2.0, 50, monotonic=clock.now, sleep=clock.sleep)
    start = clock.now()
    stamps = []
    for _ in range(40):
        await bucket.acquire(priority=Priority.EVENT)
        stamps.append(clock.now() - start)
    assert stamps[11] == 0.0 and stamps[12] > 0  # a burst of 12 (a quarter of the bucket)
    rate = 28 / (stamps[-1] - stamps[11])
    assert 0.45 < rate <= 0.5, rate  # a quarter of 2/s, less the 2 % margin


async def test_a_poll_arriving_while_an_event_waits_for_room_goes_first() -> None:
    bucket = LeakyBucket(20.0, 10)
    await fill(bucket, 8)  # more than half full: the event waits about 0.23 s for room
    order: list[str] = []

    async def take(name: str, priority: Priority) -> None:
        await bucket.acquire(priority=priority)
        order.append(name)

    event = asyncio.create_task(take("event", Priority.EVENT))
    await asyncio.sleep(0)
    poll = asyncio.create_task(take("poll", Priority.POLL))
    await asyncio.gather(event, poll)
    assert order == ["poll", "event"]


async def test_a_cancelled_waiter_hands_its_turn_on() -> None:
    clock = FakeClock()
    bucket = LeakyBucket(2.0, 50, monotonic=clock.now, sleep=clock.sleep)
    await fill(bucket, 49)
    first = asyncio.create_task(bucket.acquire(priority=Priority.POLL))
    await asyncio.sleep(0)
    second = asyncio.create_task(bucket.acquire(priority=Priority.USER))
    third = asyncio.create_task(bucket.acquire(priority=Priority.DIGEST))
    await asyncio.sleep(0)
    second.cancel()
    await asyncio.gather(first, third)
    assert second.cancelled()
