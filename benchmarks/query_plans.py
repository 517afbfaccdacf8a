"""EXPLAIN QUERY PLAN of each statement the scheduled work and the outbox worker run, with N users in SQLite.

Runs the real stack in-process against the fakes (tests/harness.py): a poll cycle, a digest tick
for every user, the outbox worker sending for a few seconds, the daily re-check and housekeeping.
sqlite3's trace callback records every statement with its values bound; each statement shape is
printed once, under the stage that first ran it, with how often it ran in all and its plan. A table scanned without an index, or a
temporary B-tree for sorting, is marked with `!`.

    python benchmarks/query_plans.py [--users 30000] [--send-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import sqlite3
import sys
import tempfile
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PTB_TIMEDELTA", "1")

from bot.delivery import OutboxWorker  # noqa: E402
from bot.model import ROLES, UserSettings  # noqa: E402
from tests import db as tdb  # noqa: E402
from tests.fakes.clock import FakeClock  # noqa: E402
from tests.harness import Harness  # noqa: E402

MONDAY_0800 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
_SKIP = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|PRAGMA)\b", re.IGNORECASE)


def shape(sql: str) -> str:
    """The statement with its values taken out: literals become ?, IN lists become (…)."""
    out = re.sub(r"'(?:[^']|'')*'", "?", sql)
    out = re.sub(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?", "?", out, flags=re.IGNORECASE)
    out = re.sub(r"IN \((?:\?\s*,\s*)*\?\)", "IN (…)", out)
    return " ".join(out.split())


class Trace:
    """Every statement the connection ran: count and one example (values bound) per shape."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.example: dict[str, str] = {}
        self.stage: dict[str, str] = {}
        self.current = ""

    def __call__(self, sql: str) -> None:
        if _SKIP.match(sql):
            return
        key = shape(sql)
        self.counts[key] += 1
        self.example.setdefault(key, sql)
        self.stage.setdefault(key, self.current)


def plan(db: sqlite3.Connection, sql: str) -> list[str]:
    """EXPLAIN QUERY PLAN lines, indented by depth."""
    rows = db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    depth: dict[int, int] = {0: 0}
    lines = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, 0) + 1
        lines.append("  " * (depth[node] - 1) + detail)
    return lines


def suspicious(line: str) -> bool:
    """A full scan of a table (not a covering or other index), or a sort through a temporary B-tree."""
    text = line.strip()
    if text.startswith("SCAN") and "USING" not in text and "CONSTANT ROW" not in text:
        return True
    return "TEMP B-TREE" in text


async def run(tmp: Path, users: int, send_seconds: float) -> Trace:
    """The scheduled work over `users` users with the trace on; the database stays for the plans."""
    trace = Trace()
    # The client's bucket opened wide: plans, not rate limits, are measured here.
    async with Harness(tmp, clock=FakeClock(MONDAY_0800), BITRIX24_REQUESTS_PER_SECOND="100", BITRIX24_BURST="10000") as h:
        defaults = replace(UserSettings(), digest_time=dtime(9, 0))
        for bid in range(1, users + 1):
            for role in ROLES:
                h.b24.set_counters(bid, role, expired=bid % 3, new_comments=1)
            h.b24.add_user(bid, f"User{bid}", "Test")
        h.b24.derive_counters = False
        h.b24.scopes.add("department")  # team lines on (nobody heads a department here)
        await tdb.link_many(h.storage, range(1, users + 1), defaults, h.clock.timestamp())
        print(f"{users:,} linked users set up; tracing", flush=True)
        await h.storage.db.set_trace_callback(trace)
        coordinator = h.services.coordinator
        trace.current = "poll"
        await coordinator.poll_cycle()
        trace.current = "digest tick"
        h.clock.set(MONDAY_0800.replace(hour=9))
        queued = await coordinator.digest_tick()
        trace.current = "outbox worker"
        worker = OutboxWorker(h.storage, h.app.bot, h.clock, h.services.metrics, h.services.accounts, idle_wait=0.05)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(send_seconds)
        await worker.stop(timeout=5)
        await task
        sent = len(h.tg.sent())
        trace.current = "re-check"
        h.clock.advance(days=1)
        await coordinator.recheck_links()
        trace.current = "housekeeping"
        await coordinator.housekeeping()
        await h.storage.db.set_trace_callback(None)
        print(f"poll cycle, digest tick ({queued:,} queued), outbox worker ({sent} sent in {send_seconds:g} s), "
              f"re-check, housekeeping", flush=True)
    return trace


def main() -> int:
    """Trace the work, then print each statement shape with its plan."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--send-seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace = asyncio.run(run(Path(tmp), args.users, args.send_seconds))
        marked = report(trace, Path(tmp) / "bot.sqlite3")
    print(f"\n{marked} statement shape(s) marked with ! (a table scan without an index, or a temporary B-tree)")
    return 0


def report(trace: Trace, path: Path) -> int:
    """Print each traced statement shape, by stage and count, with its plan; how many were marked."""
    marked = 0
    with closing(sqlite3.connect(path)) as db:
        for stage in ("poll", "digest tick", "outbox worker", "re-check", "housekeeping"):
            keys = [k for k in trace.counts if trace.stage[k] == stage]
            print(f"\n== first run in: {stage} (counts are of the whole run) ==")
            for key in sorted(keys, key=lambda k: -trace.counts[k]):
                lines = plan(db, trace.example[key])
                flag = any(suspicious(line) for line in lines)
                marked += flag
                print(f"{'!' if flag else ' '} {trace.counts[key]:>8,}x  {key[:170]}")
                for line in lines:
                    print(f"{'':14}{line}")
    return marked


if __name__ == "__main__":
    sys.exit(main())
