"""Time from starting `python -m bot` to its first getUpdates, with an empty and with a populated database.

The bot runs as its own process, exactly as deployed, against the fake Telegram and the fake
portal on loopback sockets (in this process). The populated database holds N linked users with
their settings, alert states and last reads, DAYS days of digest log and of sent outbox rows, and
today's digests still queued for later: what a bot with N users has after running for a while.
It is built at the schema before the newest migration, so the first start after an upgrade
(which applies that migration before polling) is timed too.

    python benchmarks/startup.py [--users 30000] [--days 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.model import AlertState, UserSettings  # noqa: E402
from bot.storage import OutgoingMessage, Storage, alerts, digests, migrations, outbox  # noqa: E402
from tests import db as tdb  # noqa: E402
from tests.fakes.bitrix import FakeBitrix  # noqa: E402
from tests.fakes.server import LoopbackServer  # noqa: E402
from tests.fakes.telegram import FAKE_TOKEN, FakeTelegram  # noqa: E402

CODE = "fakewebhookcode0123456789"
GOAL_SECONDS = 5.0


async def populate(path: Path, users: int, days: int, version: int) -> float:
    """A database at schema `version` as after `days` days with `users` users; returns the seconds it took."""
    started = time.perf_counter()
    storage = await Storage.open_at_version(path, version)
    now = datetime.now(UTC)
    stamp = now.timestamp()
    defaults = replace(UserSettings(), digest_time=dtime(9, 0))
    await tdb.link_many(storage, range(1, users + 1), defaults, stamp - days * 86400, bitrix_offset=1000)
    counters = {"view_all": {"expired": 1, "new_comments": 2}}
    for start in range(1, users + 1, 1000):
        async with storage.transaction() as db:
            for tid in range(start, min(start + 1000, users + 1)):
                await alerts.replace_states(db, tid, {"expired": AlertState("expired", alerted=True, peak=1)})
                await alerts.save_snapshot(db, tid, counters["view_all"], stamp - 60)
                for back in range(days, 0, -1):
                    day = now - timedelta(days=back)
                    (row_id,) = await outbox.enqueue(db, [OutgoingMessage(tid, tid, "digest", "old digest")], day.timestamp())
                    await outbox.finish(db, row_id, "sent", day.timestamp() + 1, None)
                    await digests.insert(db, tid, day.date(), day.timestamp(), "sent", bitrix_user_id=1000 + tid,
                                         counters=counters, outbox_id=row_id)
                later = OutgoingMessage(tid, tid, "digest", "today's digest", not_before=stamp + 3600)
                (row_id,) = await outbox.enqueue(db, [later], stamp)
                await digests.insert(db, tid, now.date(), stamp + 3600, "queued", bitrix_user_id=1000 + tid,
                                     counters=counters, outbox_id=row_id)
    await storage.close()
    return time.perf_counter() - started


async def migrate(path: Path) -> float:
    """Open (and so migrate) the database as the bot does; the seconds it took."""
    started = time.perf_counter()
    storage = await Storage.open(path)
    await storage.close()
    return time.perf_counter() - started


def vm(pid: int) -> str:
    """VmRSS and VmHWM of a process, as /proc shows them."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            found = {k: int(v.split()[0]) / 1024 for k, _, v in (line.partition(":") for line in status) if k in ("VmRSS", "VmHWM")}
        return f"RSS {found['VmRSS']:.1f} MB, peak {found['VmHWM']:.1f} MB"
    except (OSError, KeyError):
        return "RSS unknown"


def start_to_first_get_updates(database: Path, label: str) -> float:
    """Start the bot on `database`, time it to its first getUpdates, stop it with SIGTERM."""
    tg, b24 = FakeTelegram(), FakeBitrix(webhook_user_id=1, webhook_code=CODE)
    with LoopbackServer(tg.handle) as tg_server, LoopbackServer(b24.handle) as b24_server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BITRIX24_"))}
        env.update(
            TELEGRAM_BOT_TOKEN=FAKE_TOKEN,
            TELEGRAM_API_BASE_URL=tg_server.url,
            BITRIX24_WEBHOOK_URL=f"{b24_server.url}/rest/1/{CODE}/",
            DATABASE_PATH=str(database),
            PYTHONPATH=str(ROOT),
            NO_PROXY="127.0.0.1,localhost",
            LOG_LEVEL="WARNING",
        )
        with open(database.parent / f"{label}.log", "w", encoding="utf-8") as log:
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "bot"], cwd=database.parent, env=env, stdout=log, stderr=log)
            try:
                if not tg.wait_for(lambda: any(c.method == "getUpdates" for c in tg.calls), timeout=60):
                    raise SystemExit(f"{label}: the bot never called getUpdates")
                first = next(c.at for c in tg.calls if c.method == "getUpdates")
                get_me = next(c.at for c in tg.calls if c.method.lower() == "getme")
                memory = vm(proc.pid)
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=30)
        seconds = first - started
        print(f"  {label + ':':<24}first getUpdates {seconds:.2f} s after start (getMe at {get_me - started:.2f} s); "
              f"{memory}; exit {code} after SIGTERM")
        return seconds


def main() -> int:
    """Time start-up with an empty database, then with a populated one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--days", type=int, default=5, help="days of digest log and sent outbox rows per user")
    args = parser.parse_args()
    newest = migrations()[-1]
    with tempfile.TemporaryDirectory() as tmp:
        empty, full, older = (Path(tmp) / name / "bot.sqlite3" for name in ("empty", "full", "older"))
        for path in (empty, full, older):
            path.parent.mkdir()
        took = asyncio.run(populate(older, args.users, args.days, newest[0] - 1))
        shutil.copy(older, full)
        migrated = asyncio.run(migrate(full))
        size = full.stat().st_size / 2**20
        print(f"start-up of python -m bot against the fakes on loopback; populated database: {args.users:,} users, "
              f"{args.days} days of history, {size:.1f} MB (built in {took:.0f} s; {newest[1]} applied to it "
              f"in {migrated:.2f} s)")
        start_to_first_get_updates(empty, "empty database")
        seconds = start_to_first_get_updates(full, f"{args.users:,} users")
        start_to_first_get_updates(older, "same, before upgrade")  # the bot applies the newest migration first
    passed = seconds < GOAL_SECONDS
    print(f"  {'result:':<24}{'PASS' if passed else 'FAIL'} (goal: under {GOAL_SECONDS:g} s with the database populated)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
