"""Peak RSS of the bot process with N linked users: setup, two poll cycles and a digest tick for all (SPEC 8).

The fake portal runs in its own process on a real loopback socket (benchmarks/fake_process.py),
so the figures are the bot's alone. This process holds what the bot process holds: the real
wiring (Services, the PTB Application built but not started, Storage on a SQLite file,
Coordinator, BitrixClient over httpx). The client's leaky bucket is opened wide: rate limits are
what benchmarks/poll.py measures; this script measures memory and CPU. Peak RSS is the kernel's
high-water mark of this process (VmHWM in /proc/self/status), which covers every stage.

    python benchmarks/memory.py                # 10,000 and 30,000 users, each in a fresh process
    python benchmarks/memory.py --users 30000  # one size
"""

from __future__ import annotations

import argparse
import logging
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fake_process import beside_fake  # noqa: E402
from bot.app import build_application  # noqa: E402
from bot.bitrix import BitrixClient, LeakyBucket, build_http_client  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.model import ROLES, UserSettings  # noqa: E402
from bot.services import Services  # noqa: E402
from bot.storage import Storage  # noqa: E402
from tests import db as tdb  # noqa: E402
from tests.fakes.bitrix import FakeBitrix  # noqa: E402
from tests.fakes.clock import FakeClock  # noqa: E402
from tests.fakes.server import LoopbackServer  # noqa: E402

CODE = "fakewebhookcode0123456789"
TOKEN = "123456:FAKE-token_abcdefghijklmnopqrstuvwxyz012"
DUE = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday
SIZES = (10_000, 30_000)
GOAL_MB = {10_000: 100.0, 30_000: 150.0}  # the goals; SPEC 8: under 150 MB at 30,000


def memory_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB: VmRSS and VmHWM, or getrusage's peak where /proc is absent."""
    found: dict[str, float] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    # The kernel syncs these counters lazily: take the largest view of the high-water mark seen so far.
    rss = found.get("VmRSS", 0.0)
    _peak[0] = max(_peak[0], rss, found.get("VmHWM", 0.0), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return rss or _peak[0], _peak[0]


_peak = [0.0]


def serve(users: int, conn: Connection) -> None:
    """Child process: a FakeBitrix with every role's counters of every user, no limit, until told to stop."""
    fake = FakeBitrix(webhook_user_id=1, webhook_code=CODE)
    fake.derive_counters = False
    fake.scopes.add("department")  # team lines on, as on a portal with the scope (nobody heads a department here)
    for bid in range(1, users + 1):
        for role in ROLES:
            fake.counters[(bid, role)] = {"expired": bid % 3, "new_comments": bid % 2, "total": 0}
    with LoopbackServer(fake.handle) as server:
        conn.send(server.url)
        conn.recv()  # "stop"
        conn.send({"requests": fake.request_count()})


async def measure(url: str, users: int) -> dict[str, Any]:
    """Set up `users` linked users, run two poll cycles and a digest tick for all; print each stage's figures."""
    stages: list[tuple[str, str]] = []

    def stage(name: str, what: str, wall: float, cpu: float) -> None:
        rss, peak = memory_mb()
        line = f"{what}, {wall:.1f} s wall, {cpu / users * 1e6:.0f} us CPU per user; RSS {rss:.1f} MB, peak {peak:.1f} MB"
        stages.append((name, line))
        print(f"  {name + ':':<16}{line}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            {
                "TELEGRAM_BOT_TOKEN": TOKEN,
                "BITRIX24_WEBHOOK_URL": f"{url}/rest/1/{CODE}/",
                "DATABASE_PATH": str(Path(tmp) / "bot.sqlite3"),
                "BITRIX24_REQUESTS_PER_SECOND": "100",
                "BITRIX24_BURST": "10000",
            },
            None,
        )
        clock = FakeClock(DUE - timedelta(hours=1))
        storage = await Storage.open(settings.database_path)
        rss, peak = memory_mb()
        print(f"  {'start:':<16}RSS {rss:.1f} MB, peak {peak:.1f} MB (imports, empty database)", flush=True)
        wall, cpu = time.perf_counter(), time.process_time()
        defaults = replace(UserSettings(), digest_time=dtime(DUE.hour, DUE.minute))
        await tdb.link_many(storage, range(1, users + 1), defaults, clock.timestamp())
        stage("setup", f"{users:,} users linked in SQLite", time.perf_counter() - wall, time.process_time() - cpu)
        async with build_http_client() as http:
            client = BitrixClient(settings.bitrix24_webhook_url, http, LeakyBucket(100, 10000))
            services = Services(settings=settings, storage=storage, clock=clock, bitrix=client)
            build_application(services)  # what the bot process holds besides: PTB, handlers, jobs (nothing started)
            coordinator = services.coordinator
            for n in (1, 2):
                clock.advance(minutes=5)
                wall, cpu = time.perf_counter(), time.process_time()
                result = await coordinator.poll_cycle()
                stage(
                    f"poll cycle {n}", f"{result.ok:,} of {result.users:,} users read, {result.requests} requests",
                    time.perf_counter() - wall, time.process_time() - cpu,
                )
            clock.set(DUE)
            before = client.stats.requests_total
            wall, cpu = time.perf_counter(), time.process_time()
            queued = await coordinator.digest_tick()
            stage(
                "digest tick", f"{queued:,} digests queued, {client.stats.requests_total - before} requests",
                time.perf_counter() - wall, time.process_time() - cpu,
            )
        db_mb = settings.database_path.stat().st_size / 2**20
        await storage.close()
    _, peak = memory_mb()
    return {"peak": peak, "queued": queued, "db_mb": db_mb}


def run(users: int) -> bool:
    """One size in this process (a fresh one: the peak covers only this size)."""
    print(f"N={users:,} linked users; the fake portal in its own process on a loopback socket; bucket opened wide", flush=True)
    figures, server = beside_fake(serve, users, lambda url: measure(url, users))
    goal = GOAL_MB.get(users, 150.0)
    print(f"  {'database:':<16}{figures['db_mb']:.1f} MB on disk; the fake counted {server['requests']:,} requests")
    print(f"  {'peak RSS:':<16}{figures['peak']:.1f} MB for the bot process (VmHWM; goal <= {goal:.0f} MB)")
    passed = figures["peak"] <= goal
    print(f"  {'result:':<16}{'PASS' if passed else 'FAIL'}", flush=True)
    return passed


def main() -> int:
    """Each size in its own process, so one size's peak is not the next one's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, help="one size (default: 10,000 and 30,000, each in a fresh process)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    if args.users:
        return 0 if run(args.users) else 1
    codes = [subprocess.run([sys.executable, __file__, "--users", str(n)], check=False).returncode for n in SIZES]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
