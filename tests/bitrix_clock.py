"""What the Bitrix24 client tests share: the fake webhook and one fake clock for client, budget and portal."""

from __future__ import annotations

import asyncio

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
