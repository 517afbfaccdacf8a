"""What the Bitrix24 client tests share: the fake webhook and one fake clock for client, budget and portal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.bitrix import BitrixClient, LeakyBucket, build_http_client
from tests.fakes.bitrix import FakeBitrix
from tests.fakes.server import mock_transport

CODE = "fakewebhookcode0123456789"
WEBHOOK = f"https://corp.bitrix24.test/rest/1/{CODE}/"
COUNTERS = "tasks.task.counters.get"
T0 = 1_800_000_000.0


class FakeClock:
    """Monotonic and wall time in one; sleeping (or a slow fake answer) advances it instead of waiting."""

    def __init__(self, start: float = T0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        """The fake time."""
        return self.t

    def wait_until(self, t: float) -> None:
        """A slow answer of the fake portal: time passes until t."""
        self.t = max(self.t, t)

    async def sleep(self, seconds: float) -> None:
        """Advance instead of sleeping; record the wait."""
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


# ---- fixtures the Bitrix24 client tests share (registered in tests/conftest.py) ----------------


@pytest.fixture
def clock() -> FakeClock:
    """One fake clock for the client, its budget and the fake portal."""
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakeBitrix:
    """The fake portal on the shared clock."""
    portal = FakeBitrix(webhook_user_id=1, webhook_code=CODE)
    portal.clock = clock.now
    return portal


@pytest.fixture
async def http(fake: FakeBitrix) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client whose transport is the fake portal."""
    async with build_http_client(transport=mock_transport(fake.handle)) as client:
        yield client


def client_for(
    http: httpx.AsyncClient, clock: FakeClock, bucket: LeakyBucket | None = None, **kwargs: Any
) -> BitrixClient:
    """A BitrixClient wholly on the fake clock (monotonic, wall, sleep), jitter fixed at the middle."""
    bucket = bucket or LeakyBucket(2, 50, monotonic=clock.now, sleep=clock.sleep)
    return BitrixClient(
        WEBHOOK, http, bucket, monotonic=clock.now, wall=clock.now, sleep=clock.sleep, rng=lambda: 0.5, **kwargs
    )
