"""Benchmark team views (SPEC 8, 12): a company of 2,000 people in 120 departments, five levels deep.

The fake portal runs in its own process on a real loopback socket with the standard limit
switched on (2 requests/s, bucket 50). The top head's view and the view of a head of about 300
each start from empty caches; the bound is ceil(S/50) counter requests plus the structure and
people reads (each: one request, then the other pages of 50 in one batch). Then a refresh of the
300-person team 11 s later (every counter from the 5-minute cache) and 5 minutes later (re-read
once). Prints the requests and wall time of each, and the 503s.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fake_process import beside_fake  # noqa: E402
from bot.bitrix import BitrixClient, LeakyBucket, build_http_client  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.reader import SharedReads  # noqa: E402
from bot.storage import Storage  # noqa: E402
from bot.team import Structure, TeamViews  # noqa: E402
from tests.fakes.bitrix import FakeBitrix  # noqa: E402
from tests.fakes.clock import FakeClock  # noqa: E402
from tests.fakes.server import LoopbackServer  # noqa: E402

RATE, BURST = 2.0, 50
CODE = "fakewebhookcode0123456789"
TOKEN = "123456:FAKE-token_abcdefghijklmnopqrstuvwxyz012"
LEVELS = (1, 4, 12, 36, 67)  # departments per level: 120 in all, five levels deep
HEAD_BASE = 100_000  # department d is headed by user HEAD_BASE + d


def company(people: int) -> tuple[dict[int, tuple[int | None, int]], dict[int, int]]:
    """Departments (id -> (parent, head)) level by level, and each non-head's department."""
    departments: dict[int, tuple[int | None, int]] = {}
    previous: list[int] = []
    next_id = 1
    for size in LEVELS:
        level = list(range(next_id, next_id + size))
        for index, department_id in enumerate(level):
            parent = previous[index * len(previous) // size] if previous else None
            departments[department_id] = (parent, HEAD_BASE + department_id)
        previous, next_id = level, next_id + size
    # Department 6 (level 3) and its sub-departments hold a team of 300 (heads included); the rest round robin.
    children: dict[int, list[int]] = {}
    for department_id, (parent, _) in departments.items():
        if parent is not None:
            children.setdefault(parent, []).append(department_id)
    subtree, queue = [], [6]
    while queue:
        current = queue.pop(0)
        subtree.append(current)
        queue += children.get(current, [])
    rest = [d for d in sorted(departments) if d not in subtree]
    inside = 300 - (len(subtree) - 1)  # the sub-departments' heads are on the team too
    staff = people - len(departments)  # the heads are people of the company too
    members = {bid: subtree[bid % len(subtree)] if bid <= inside else rest[bid % len(rest)] for bid in range(1, staff + 1)}
    return departments, members


def serve(people: int, conn: Connection) -> None:
    """Child process: a limited FakeBitrix with the company, view_all counters for everyone."""
    departments, members = company(people)
    fake = FakeBitrix(webhook_user_id=1, webhook_code=CODE)
    fake.scopes.add("department")
    fake.derive_counters = False
    for department_id, (parent, head) in departments.items():
        fake.add_department(department_id, f"Department {department_id}", parent=parent, head=head)
        fake.add_user(head, "Head", str(department_id), departments=(department_id,))
    for bid, department_id in members.items():
        fake.add_user(bid, "User", str(bid), departments=(department_id,))
        fake.counters[(bid, "view_all")] = {"expired": bid % 4, "new_comments": bid % 3}
    for _, head in departments.values():
        fake.counters[(head, "view_all")] = {"expired": 1, "new_comments": 0}
    fake.limit(rate=RATE, burst=BURST, clock=time.monotonic)
    with LoopbackServer(fake.handle) as server:
        conn.send(server.url)
        conn.recv()  # "stop"
        conn.send({"requests": fake.request_count(), "http_503": fake.rejected_503})


def head_of_about(people: int, wanted: int) -> tuple[int, int]:
    """The department head whose team is closest to `wanted` people, and that team's size."""
    departments, members = company(people)
    from bot.bitrix.results import Department

    structure = Structure.of(
        [Department(d, "", parent, head) for d, (parent, head) in departments.items()], 0.0
    )
    best: tuple[int, int] | None = None
    for _, head in departments.values():
        team = set(structure.team_departments(head))
        size = sum(1 for d in members.values() if d in team) + sum(1 for d, (_, h) in departments.items() if d in team and h != head)
        if best is None or abs(size - wanted) < abs(best[1] - wanted):
            best = (head, size)
    assert best is not None
    return best


async def views(url: str, people: int) -> dict[str, Any]:
    """Each view from empty caches, then the refreshes; requests counted at the client, wall time per view."""
    top_head = HEAD_BASE + 1
    mid_head, mid_size = head_of_about(people, 300)
    out: dict[str, Any] = {"mid_head": mid_head, "mid_size": mid_size}
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            {"TELEGRAM_BOT_TOKEN": TOKEN, "BITRIX24_WEBHOOK_URL": f"{url}/rest/1/{CODE}/",
             "DATABASE_PATH": str(Path(tmp) / "bot.sqlite3")},
            None,
        )
        storage = await Storage.open(settings.database_path)
        async with build_http_client() as http:
            client = BitrixClient(settings.bitrix24_webhook_url, http, LeakyBucket(RATE, BURST))

            async def told() -> None:
                out["filter_ignored"] = True

            async def one(name: str, team: TeamViews, head: int, clock: FakeClock) -> None:
                before = client.stats.requests_total
                wall0 = time.perf_counter()
                read = await team.view(head, head, refresh=True)
                out[name] = {"requests": client.stats.requests_total - before, "wall": time.perf_counter() - wall0,
                             "people": len(read.value.members), "cached": read.cached}

            for name, head in (("top", top_head), ("mid", mid_head)):
                clock = FakeClock()
                team = TeamViews(settings, storage, client, clock, SharedReads(clock), told)
                await one(name, team, head, clock)
                if name == "mid":
                    clock.advance(seconds=11)
                    await one("refresh_11s", team, head, clock)
                    clock.advance(minutes=5)
                    await one("refresh_5min", team, head, clock)
        out["client_503"] = client.stats.http_503
        await storage.close()
    return out


def main() -> int:
    """Run the views against a fresh fake process and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=2_000)
    args = parser.parse_args()
    figures, server = beside_fake(serve, args.people, lambda url: views(url, args.people))
    departments = sum(LEVELS)
    structure_bound = 1 + (1 if departments > 50 else 0)
    print(f"company: {args.people:,} people ({departments} of them heads) in {departments} departments, {len(LEVELS)} levels; "
          f"limit {RATE:g}/s burst {BURST}, loopback socket")
    passed = server["http_503"] == 0 and not figures.get("filter_ignored")
    for name, label in (("top", "top head"), ("mid", f"head of {figures['mid_size']}"),
                        ("refresh_11s", "same, refresh +11 s"), ("refresh_5min", "same, refresh +5 min")):
        row = figures[name]
        s = row["people"]
        people_bound = 1 + (1 if s > 50 else 0)
        if name == "top" or name == "mid":
            bound = math.ceil(s / 50) + structure_bound + people_bound
        elif name == "refresh_11s":
            bound = 0
        else:
            bound = math.ceil(s / 50)
        ok = row["requests"] <= bound
        passed = passed and ok
        print(f"  {label:<22} S={s:<5} requests {row['requests']:>3} (bound {bound:>3})  wall {row['wall']:.2f} s"
              f"{'  (10 s window)' if row['cached'] else ''}")
    print(f"  503s:                  {server['http_503']} at the server, {figures['client_503']} at the client; "
          f"server saw {server['requests']} requests in all")
    print(f"  result:                {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
