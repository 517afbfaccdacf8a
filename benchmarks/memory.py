"""Peak RSS of the bot's own work with 10,000 linked users: a full poll cycle and a digest tick.

Runs the real Storage (SQLite file), Coordinator and BitrixClient against FakeBitrix through
httpx.MockTransport (the fake in the same process, so the RSS figure includes it and is an upper
bound). The client's leaky bucket is opened wide here: rate limits are what benchmarks/poll.py
measures; this script measures memory and CPU per cycle.

    python benchmarks/memory.py [--users 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.account import Accounts  # noqa: E402
from bot.bitrix import BitrixClient, LeakyBucket, build_http_client  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.coordinator import Coordinator  # noqa: E402
from bot.metrics import Metrics  # noqa: E402
from bot.model import ROLES, UserSettings  # noqa: E402
from bot.storage import Storage  # noqa: E402
from tests import db as tdb  # noqa: E402
from tests.fakes.bitrix import FakeBitrix  # noqa: E402
from tests.fakes.clock import FakeClock  # noqa: E402
from tests.fakes.server import mock_transport  # noqa: E402

CODE = "fakewebhookcode0123456789"
TOKEN = "123456:FAKE-token_abcdefghijklmnopqrstuvwxyz012"


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(users: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            {
                "TELEGRAM_BOT_TOKEN": TOKEN,
                "BITRIX24_WEBHOOK_URL": f"https://corp.bitrix24.example/rest/1/{CODE}/",
                "DATABASE_PATH": str(Path(tmp) / "bot.sqlite3"),
                "BITRIX24_REQUESTS_PER_SECOND": "100",
                "BITRIX24_BURST": "10000",
            },
            None,
        )
        fake = FakeBitrix(webhook_user_id=1, webhook_code=CODE)
        for bid in range(1, users + 1):
            for role in ROLES:
                fake.counters[(bid, role)] = {"expired": bid % 3, "new_comments": bid % 2, "total": 0}
        clock = FakeClock(datetime(2026, 3, 2, 5, 0, tzinfo=UTC))
        storage = await Storage.open(settings.database_path)
        defaults = replace(UserSettings(), digest_time=dtime(6, 0))
        start = time.perf_counter()
        for tid in range(1, users + 1):
            await tdb.link(storage, tid, tid, f"User {tid}", defaults, clock.timestamp())
        print(f"users linked:            {users:,} in {time.perf_counter() - start:.1f} s (setup)")
        print(f"peak RSS after setup:    {rss_mb():.1f} MB")
        http = build_http_client(transport=mock_transport(fake.handle))
        client = BitrixClient(settings.bitrix24_webhook_url, http, LeakyBucket(100, 10000))
        accounts = Accounts(settings, storage, clock, lambda: None)
        coordinator = Coordinator(settings, storage, client, clock, Metrics(), accounts)
        for n in (1, 2):
            clock.advance(minutes=5)
            cpu, wall = time.process_time(), time.perf_counter()
            result = await coordinator.poll_cycle()
            print(
                f"poll cycle {n}:            {result.ok:,} of {result.users:,} users read, "
                f"{result.requests} requests, {time.perf_counter() - wall:.1f} s wall, "
                f"{(time.process_time() - cpu) / users * 1e6:.0f} us CPU per user (fake included)"
            )
        clock.set(datetime(2026, 3, 2, 6, 0, tzinfo=UTC))
        cpu, wall = time.process_time(), time.perf_counter()
        queued = await coordinator.digest_tick()
        print(
            f"digest tick:             {queued:,} digests queued, {time.perf_counter() - wall:.1f} s wall, "
            f"{(time.process_time() - cpu) / users * 1e6:.0f} us CPU per user (fake included)"
        )
        peak = rss_mb()
        print(f"peak RSS:                {peak:.1f} MB (target < 150 MB)")
        await http.aclose()
        await storage.close()
        ok = peak < 150
        print(f"result:                  {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    sys.exit(asyncio.run(main(parser.parse_args().users)))
