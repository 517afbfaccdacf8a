"""Benchmark one poll cycle (view_all) against FakeBitrix on a real loopback socket with limits on."""

from __future__ import annotations

import argparse
import math
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fake_process import beside_fake  # noqa: E402
from bot.bitrix import BitrixClient, Counters, LeakyBucket, build_http_client  # noqa: E402
from tests.fakes.bitrix import FakeBitrix  # noqa: E402
from tests.fakes.server import LoopbackServer  # noqa: E402

RATE = 2.0
BURST = 50
CODE = "fakewebhookcode0123456789"


def serve(users: int, conn: Connection) -> None:
    """Child process: a limited FakeBitrix on 127.0.0.1 until told to stop; reports its counts."""
    fake = FakeBitrix(webhook_user_id=1, webhook_code=CODE)
    for bitrix_user_id in range(1, users + 1):
        fake.counters[(bitrix_user_id, "view_all")] = {"expired": bitrix_user_id % 5, "new_comments": 1, "total": 1}
    fake.limit(rate=RATE, burst=BURST, clock=time.monotonic)
    with LoopbackServer(fake.handle) as server:
        conn.send(server.url)
        conn.recv()  # "stop"
        conn.send({"requests": fake.request_count(), "http_503": fake.rejected_503})


async def cycle(url: str, users: int) -> dict[str, float]:
    """Run one counters cycle for `users` users and measure it."""
    async with build_http_client() as http:
        client = BitrixClient(f"{url}/rest/1/{CODE}/", http, LeakyBucket(RATE, BURST))
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = await client.counters(range(1, users + 1), ("view_all",))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    ok = sum(1 for roles in result.values() if isinstance(roles["view_all"], Counters))
    return {
        "wall": wall,
        "cpu": cpu,
        "ok": ok,
        "client_requests": client.stats.requests_total,
        "client_503": client.stats.http_503,
    }


def bound(requests: int) -> float:
    """The time the limit sets: `BURST` requests at once, then `RATE` per second."""
    return max(0, requests - BURST) / RATE


def run(users: int) -> bool:
    """Benchmark one N in a fresh fake (its own process, so CPU time is the client's only)."""
    figures, server = beside_fake(serve, users, lambda url: cycle(url, users))
    expected = math.ceil(users / 50)
    limit = bound(expected)
    ratio = figures["wall"] / limit if limit else float("nan")
    print(f"N={users:,} users, roles=view_all, limit {RATE:g}/s burst {BURST}, real loopback socket")
    print(f"  HTTP requests made:   {server['requests']} (expected ceil(N/50) = {expected})")
    print(f"  503s received:        {server['http_503']} at the server, {figures['client_503']} at the client")
    print(f"  users read OK:        {figures['ok']:,} of {users:,}")
    if limit:
        print(
            f"  wall time:            {figures['wall']:.2f} s; bound {limit:.1f} s "
            f"({BURST} at once, then {RATE:g}/s for {expected - BURST}); ratio {ratio:.3f}"
        )
    else:
        print(f"  wall time:            {figures['wall']:.2f} s; bound 0 s ({expected} requests fit in the burst)")
    print(f"  CPU time per user:    {figures['cpu'] / users * 1e6:.1f} us ({figures['cpu']:.3f} s client CPU in total)")
    passed = server["requests"] == expected and server["http_503"] == 0 and figures["ok"] == users
    if limit:
        passed = passed and ratio <= 1.10
    print(f"  result:               {'PASS' if passed else 'FAIL'}")
    return passed


def main() -> int:
    """Run the benchmark for N = 1,000 (and 10,000 unless --quick)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only N = 1,000")
    args = parser.parse_args()
    sizes = [1_000] if args.quick else [1_000, 10_000]
    results = [run(n) for n in sizes]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
