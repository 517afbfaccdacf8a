"""Benchmark a digest round with task lines (SPEC 8, 11): D users due at once, 30% with overdue tasks.

The fake portal runs in its own process on a real loopback socket with the standard limit
switched on (2 requests/s, bucket 50); the bot's coordinator reads and queues the digests from
real SQLite through the real client. Prints the requests (bound: ceil(D/10) + ceil(D'/50)),
the wall time against the time the limit sets, and the 503s.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fake_process import beside_fake  # noqa: E402
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
from tests.fakes.server import LoopbackServer  # noqa: E402

RATE, BURST = 2.0, 50
CODE = "fakewebhookcode0123456789"
TOKEN = "123456:FAKE-token_abcdefghijklmnopqrstuvwxyz012"
DUE = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def overdue(bitrix_user_id: int) -> bool:
    """30% of the users have overdue tasks."""
    return bitrix_user_id % 10 < 3


def serve(users: int, conn: Connection) -> None:
    """Child process: a limited FakeBitrix with counters and two overdue tasks per overdue user."""
    fake = FakeBitrix(webhook_user_id=1, webhook_code=CODE)
    fake.derive_counters = False  # explicit counters: deriving them for every command would time the fake, not the bot
    task_id = 1
    for bid in range(1, users + 1):
        expired = 2 if overdue(bid) else 0
        for role in ROLES:
            fake.counters[(bid, role)] = {"expired": expired if role in ("view_all", "view_role_responsible") else 0,
                                          "new_comments": 1}
        if overdue(bid):
            for n in range(2):
                fake.add_task(task_id, f"Task {task_id}", deadline=DUE - timedelta(days=n + 1), responsible=bid)
                task_id += 1
    fake.limit(rate=RATE, burst=BURST, clock=time.monotonic)
    with LoopbackServer(fake.handle) as server:
        conn.send(server.url)
        conn.recv()  # "stop"
        times = [r.time for r in fake.requests]
        conn.send({"requests": fake.request_count(), "http_503": fake.rejected_503,
                   "span": (max(times) - min(times)) if times else 0.0,
                   "task_commands": sum(1 for r in fake.requests if r.method == "batch"
                                        and any(str(c).startswith("tasks.task.list") for c in r.params.get("cmd", {}).values()))})


async def digest_round(url: str, users: int) -> dict[str, float]:
    """Link `users` users due at DUE, then run one digest tick and time it."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            {"TELEGRAM_BOT_TOKEN": TOKEN, "BITRIX24_WEBHOOK_URL": f"{url}/rest/1/{CODE}/",
             "DATABASE_PATH": str(Path(tmp) / "bot.sqlite3")},
            None,
        )
        clock = FakeClock(DUE - timedelta(hours=1))
        storage = await Storage.open(settings.database_path)
        defaults = replace(UserSettings(), digest_time=dtime(6, 0))
        for bid in range(1, users + 1):
            await tdb.link(storage, bid, bid, f"User {bid}", defaults, clock.timestamp())
        clock.set(DUE)
        async with build_http_client() as http:
            client = BitrixClient(settings.bitrix24_webhook_url, http, LeakyBucket(RATE, BURST))
            accounts = Accounts(settings, storage, clock, lambda: None)
            coordinator = Coordinator(settings, storage, client, clock, Metrics(), accounts)
            wall0 = time.perf_counter()
            queued = await coordinator.digest_tick()
            wall = time.perf_counter() - wall0
        rows = await tdb.rows(storage, "SELECT COUNT(*) FROM outbox WHERE kind = 'digest' AND text LIKE '%Most overdue%'")
        await storage.close()
    return {"wall": wall, "queued": queued, "with_tasks": rows[0][0], "client_503": client.stats.http_503}


def main() -> int:
    """Run the round in a fresh fake process and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args()
    users = args.users
    figures, server = beside_fake(serve, users, lambda url: digest_round(url, users))
    with_overdue = sum(1 for bid in range(1, users + 1) if overdue(bid))
    expected = math.ceil(users / 10) + math.ceil(with_overdue / 50)
    limit = max(0, expected - BURST) / RATE
    print(f"D={users:,} due users, D'={with_overdue:,} with overdue tasks, limit {RATE:g}/s burst {BURST}, loopback socket")
    print(f"  HTTP requests:        {server['requests']} (bound ceil(D/10) + ceil(D'/50) = {expected}); task-line batches {server['task_commands']}")
    print(f"  503s:                 {server['http_503']} at the server, {figures['client_503']} at the client")
    print(f"  digests queued:       {figures['queued']:,}, {figures['with_tasks']:,} with task lines")
    ratio = server["span"] / limit if limit else float("nan")
    print(f"  reads:                first to last request {server['span']:.1f} s; bound {limit:.1f} s; ratio {ratio:.3f}")
    print(f"  whole tick:           {figures['wall']:.1f} s (reads, and each chunk's digests decided and queued in SQLite before the next read)")
    passed = (server["requests"] <= expected and server["http_503"] == 0 and figures["with_tasks"] == with_overdue
              and (not limit or ratio <= 1.10))
    print(f"  result:               {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
