"""Fail fast and deadlines (issue item 8): a timing-out portal costs one round of attempts, not hours."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.bitrix import (
    COUNTERS_IN_FLIGHT,
    INTERACTIVE_DEADLINE,
    BitrixClient,
    Counters,
    LeakyBucket,
    build_http_client,
)
from bot.errors import BitrixRateLimitedError, BitrixTransientError
from bot.model import ROLES
from tests.bitrix_clock import CODE, COUNTERS, T0, WEBHOOK, FakeClock, client_for
from tests.fakes.bitrix import FakeBitrix, Scripted, batch_with_user, php_parse_query
from tests.fakes.server import LoopbackServer, mock_transport


@pytest.fixture
def fake(clock: FakeClock) -> FakeBitrix:
    fake = FakeBitrix(webhook_user_id=1, webhook_code=CODE)
    fake.clock = clock.now
    fake.wait_until = clock.wait_until  # a slow answer costs fake time, and times out like a socket
    return fake


@pytest.fixture
async def client(fake: FakeBitrix, clock: FakeClock) -> AsyncIterator[BitrixClient]:
    async with build_http_client(transport=mock_transport(fake.handle)) as http:
        yield client_for(http, clock)


def add_users(fake: FakeBitrix, count: int, roles: tuple[str, ...] = ("view_all",)) -> list[int]:
    ids = list(range(100, 100 + count))
    for bitrix_user_id in ids:
        for role in roles:
            fake.set_counters(bitrix_user_id, role, expired=1, new_comments=0)
    return ids


def users_sent(fake: FakeBitrix) -> set[int]:
    """Every userId that crossed the wire in a counters batch."""
    return {
        int(php_parse_query(command.partition("?")[2])["userId"])
        for r in fake.requests
        if r.method == "batch"
        for command in r.params["cmd"].values()
    }


# -- fail fast inside one multi-request call ----------------------------------------------


async def test_a_portal_that_times_out_costs_one_attempt_per_batch_in_flight_and_the_rest_fail_fast(client, fake, clock):
    ids = add_users(fake, 300)  # 6 batches of 50
    fake.push(Scripted.read_timeout(), times=100)
    result = await client.counters(ids, ("view_all",))
    cells = [result[uid]["view_all"] for uid in ids]
    assert all(isinstance(c, BitrixTransientError) and c.code == "TIMEOUT" for c in cells)
    # A 70 s attempt already passes the 60 s retry time: no retry, and only the batches
    # already in flight were sent; the other three fail with the same error, unsent.
    assert fake.request_count("batch") == COUNTERS_IN_FLIGHT
    assert users_sent(fake) == set(ids[: 50 * COUNTERS_IN_FLIGHT])
    assert all(r.timeout == 70.0 for r in fake.requests)


async def test_a_batch_that_fails_after_its_retries_stops_the_batches_not_yet_sent(client, fake, clock):
    ids = add_users(fake, 300)
    fake.push(Scripted.error(500, "INTERNAL_SERVER_ERROR"), times=100)
    result = await client.counters(ids, ("view_all",))
    assert all(isinstance(result[uid]["view_all"], BitrixTransientError) for uid in ids)
    assert users_sent(fake) == set(ids[: 50 * COUNTERS_IN_FLIGHT])
    assert fake.request_count("batch") <= 5 * COUNTERS_IN_FLIGHT


async def test_a_bad_answer_stops_the_remaining_batches_too(client, fake):
    ids = add_users(fake, 300)
    fake.push(Scripted.html(200), times=100)
    result = await client.counters(ids, ("view_all",))
    assert all(result[uid]["view_all"].code == "NON_JSON_BODY" for uid in ids)
    assert users_sent(fake) == set(ids[: 50 * COUNTERS_IN_FLIGHT])


async def test_rate_limited_batches_keep_being_retried_and_the_cycle_finishes(client, fake):
    ids = add_users(fake, 300)
    fake.push(Scripted.error(503, "QUERY_LIMIT_EXCEEDED").only_for(batch_with_user(100)), times=5)
    fake.push(Scripted.error(503, "QUERY_LIMIT_EXCEEDED"), times=6)
    result = await client.counters(ids, ("view_all",))
    assert all(isinstance(result[uid]["view_all"], BitrixRateLimitedError) for uid in ids[:50])
    assert all(isinstance(result[uid]["view_all"], Counters) for uid in ids[50:])
    assert users_sent(fake) == set(ids)


# -- retry time includes the attempts ----------------------------------------------------------


async def test_retries_stop_when_attempts_and_sleeps_together_pass_the_retry_time(client, fake, clock):
    fake.push(Scripted(status=500, json={"error": "INTERNAL_SERVER_ERROR"}, delay=25.0), times=5)
    with pytest.raises(BitrixTransientError):
        await client.call(COUNTERS, {"userId": 5})
    # attempt 1: 0-25 s, sleep 1; attempt 2: 26-51 s, sleep 2; attempt 3: 53-78 s; a fourth
    # would start at 82 s, past the 60 s retry time.
    assert [r.time - T0 for r in fake.requests] == [0.0, 26.0, 53.0]
    assert clock.sleeps == [1.0, 2.0]


# -- deadlines --------------------------------------------------------------------------------------


def test_the_interactive_deadline_is_15_seconds():
    assert INTERACTIVE_DEADLINE == 15.0


async def test_an_interactive_counters_read_gives_up_at_its_deadline_with_a_typed_timeout(client, fake, clock):
    fake.set_counters(5, "view_all", expired=1)
    fake.push(Scripted.read_timeout(), times=10)
    result = await client.counters([5], ROLES, deadline=INTERACTIVE_DEADLINE)
    assert all(isinstance(cell, BitrixTransientError) and cell.code == "TIMEOUT" for cell in result[5].values())
    assert [r.timeout for r in fake.requests] == [15.0]  # min(70 s, time left), sent on the wire
    assert clock.t - T0 == pytest.approx(15.0)


async def test_each_attempt_gets_only_the_time_left_and_the_deadline_ends_in_timeout(client, fake, clock):
    fake.push(Scripted.error(500, "INTERNAL_SERVER_ERROR"), Scripted.read_timeout(), Scripted.read_timeout())
    with pytest.raises(BitrixTransientError) as info:
        await client.call(COUNTERS, {"userId": 5}, deadline=15.0)
    assert info.value.code == "TIMEOUT"
    assert [r.timeout for r in fake.requests] == [15.0, 14.0]  # the second starts after a 1 s backoff
    assert clock.t - T0 == pytest.approx(15.0)


async def test_no_retry_starts_after_the_deadline(client, fake, clock):
    fake.push(Scripted(status=500, json={"error": "INTERNAL_SERVER_ERROR"}, delay=6.0), times=5)
    with pytest.raises(BitrixTransientError) as info:
        await client.call(COUNTERS, {"userId": 5}, deadline=15.0)
    # 0-6 s, sleep 1, 7-13 s; the next backoff (2 s) would end at the deadline: stop, with
    # the real cause.
    assert info.value.code == "INTERNAL_SERVER_ERROR"
    assert [r.time - T0 for r in fake.requests] == [0.0, 7.0]
    assert [r.timeout for r in fake.requests] == [15.0, 8.0]
    assert clock.t - T0 < 15.0


async def test_a_deadline_used_up_before_the_request_makes_no_request(client, fake, clock):
    bucket = client._bucket
    for _ in range(49):
        await bucket.acquire()  # the bucket is full: the next slot is ~0.5 s away
    with pytest.raises(BitrixTransientError) as info:
        await client.call("profile", deadline=0.2)
    assert info.value.code == "TIMEOUT"
    assert fake.requests == []
    assert clock.t - T0 < 0.2 + 1e-9


async def test_later_groups_of_a_call_past_its_deadline_are_not_sent(fake, clock):
    ids = add_users(fake, 50, ROLES)  # 5 batches of 10 users x 5 roles
    fake.push(Scripted(delay=4.0), times=10)
    # A synchronous transport serves one request at a time, so fake time is exact here.
    async with build_http_client(transport=httpx.MockTransport(fake.handle)) as http:
        client = BitrixClient(
            WEBHOOK, http, LeakyBucket(2, 50, monotonic=clock.now, sleep=clock.sleep),
            monotonic=clock.now, wall=clock.now, sleep=clock.sleep, rng=lambda: 0.5,
        )
        result = await client.counters(ids, ROLES, deadline=10.0)
    # 0-4 s and 4-8 s answered; the third got the 2 s left and timed out at 10 s; the last
    # two batches were never sent.
    assert [r.timeout for r in fake.requests] == [10.0, 6.0, 2.0]
    sent = users_sent(fake)
    assert len(sent) == 30
    answered = {int(php_parse_query(c.partition("?")[2])["userId"]) for r in fake.requests[:2] for c in r.params["cmd"].values()}
    assert all(isinstance(cell, Counters) for uid in answered for cell in result[uid].values())
    others = [uid for uid in ids if uid not in answered]
    assert len(others) == 30
    assert all(isinstance(c, BitrixTransientError) and c.code == "TIMEOUT" for uid in others for c in result[uid].values())
    assert clock.t - T0 == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("users_by_ids", lambda c: c.users_by_ids([10, 11], deadline=5.0)),
        ("user_by_id", lambda c: c.user_by_id(10, deadline=5.0)),
        ("user_by_email", lambda c: c.user_by_email("a@corp.example", deadline=5.0)),
        ("notify", lambda c: c.notify(10, "hello", deadline=5.0)),
        ("call", lambda c: c.call("profile", deadline=5.0)),
    ],
)
async def test_every_interactive_call_takes_a_deadline(client, fake, clock, name, call: Any):
    fake.push(Scripted.read_timeout(), times=5)
    with pytest.raises(BitrixTransientError) as info:
        await call(client)
    assert info.value.code == "TIMEOUT"
    assert [r.timeout for r in fake.requests] == [5.0]
    assert clock.t - T0 == pytest.approx(5.0)


async def test_without_a_deadline_the_normal_timeouts_apply(client, fake):
    await client.profile()
    assert fake.requests[-1].timeout == 70.0


async def test_a_deadline_over_a_real_socket_returns_a_typed_timeout_long_before_the_answer():
    fake = FakeBitrix(webhook_code=CODE)
    fake.push(Scripted(delay=2.0))
    with LoopbackServer(fake.handle) as server:
        async with build_http_client() as http:
            client = BitrixClient(f"{server.url}/rest/1/{CODE}/", http, LeakyBucket())
            started = time.monotonic()
            with pytest.raises(BitrixTransientError) as info:
                await client.call("profile", deadline=0.5)
            elapsed = time.monotonic() - started
    assert info.value.code == "TIMEOUT"
    assert 0.4 <= elapsed < 1.0
    assert fake.request_count() == 1


async def test_the_hard_cap_ends_an_answer_that_trickles_in_under_the_read_timeout(fake, clock):
    async def trickle(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(100):
                await asyncio.sleep(0.02)  # each chunk inside the read timeout
                yield b" "

        return httpx.Response(200, content=body())

    async with build_http_client(transport=httpx.MockTransport(trickle)) as http:
        client = BitrixClient(WEBHOOK, http, LeakyBucket())
        started = time.monotonic()
        with pytest.raises(BitrixTransientError) as info:
            await client.call("profile", deadline=0.3)
    assert info.value.code == "TIMEOUT"
    assert time.monotonic() - started < 1.0
