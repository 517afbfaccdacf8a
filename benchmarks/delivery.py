"""10,000 digests due in the same minute, sent through the outbox against the fake Telegram (SPEC section 8).

The fake enforces Telegram's limits (30/s overall, 1/s per chat: 429 with retry_after=1) on a
real loopback socket; the bot side is the real thing: OutboxWorker + DeliveryLimiter through a
PTB ExtBot with HTTPXRequest. While the digests fan out, a user's own answers (what /counters
sends: an interactive sendMessage, no outbox) go every 0.5 s to chats that get no digest, and
their queueing latency (from the call to the fake receiving it) is reported beside the bulk rate.
Interactive and bulk share the bot's 25 messages/s (SPEC 7), so the answers' 2/s come out of it.

    python benchmarks/delivery.py [--n 10000] [--answers-every 0.5]   (0: no answers)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PTB_TIMEDELTA", "1")
os.environ["NO_PROXY"] = "127.0.0.1,localhost"  # the fake is on loopback: never through a proxy

import httpx  # noqa: E402
from telegram.ext import ExtBot  # noqa: E402
from telegram.request import HTTPXRequest  # noqa: E402

from bot.account import Accounts  # noqa: E402
from bot.clock import Clock  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.delivery import DeliveryLimiter, OutboxWorker  # noqa: E402
from bot.metrics import Metrics  # noqa: E402
from bot.storage import OutgoingMessage, Storage, outbox  # noqa: E402
from tests import db as tdb  # noqa: E402
from tests.fakes.server import LoopbackServer  # noqa: E402
from tests.fakes.telegram import FAKE_TOKEN, FakeTelegram  # noqa: E402
from tests.harness import make_settings  # noqa: E402

FIRST_ID = 10_000_000
ANSWER_FIRST_ID = 20_000_000
ANSWER_CHATS = 4  # the answers rotate over these chats (each gets one every 2 s, inside its 1 s limit)
DIGEST = (
    "<b>Morning digest</b>\n"
    + "\n".join(f"{role}: overdue <b>{i}</b> (+1), new comments <b>{i * 2}</b> (−3)" for i, role in enumerate(
        ["Doing", "Assisting", "Set by me", "Auditing", "Total"]
    ))
)


class Recorder:
    """Wraps the fake's handler to count what Telegram accepted, per chat."""

    def __init__(self, fake: FakeTelegram) -> None:
        self.fake = fake
        self.accepted: collections.Counter[int] = collections.Counter()
        self.accepted_at: list[float] = []  # digests
        self.answered_at: dict[str, float] = {}  # answer text -> when the fake received it
        self._lock = threading.Lock()

    def handle(self, request: httpx.Request) -> httpx.Response:
        arrived = time.monotonic()
        response = self.fake.handle(request)
        if request.url.path.endswith("/sendMessage") and response.status_code == 200:
            result = json.loads(response.content)["result"]
            chat_id = result["chat"]["id"]
            with self._lock:
                if chat_id >= ANSWER_FIRST_ID:
                    self.answered_at[result["text"]] = arrived
                else:
                    self.accepted[chat_id] += 1
                    self.accepted_at.append(arrived)
        return response


async def answers(bot: ExtBot, every: float, stop: asyncio.Event, called_at: dict[str, float]) -> int:
    """A user's own answers every `every` seconds until `stop`, each as the /counters handler sends it."""
    sends: list[asyncio.Task[object]] = []
    n = 0
    while not stop.is_set():
        text = f"counters answer {n}"
        called_at[text] = time.monotonic()
        sends.append(asyncio.create_task(bot.send_message(chat_id=ANSWER_FIRST_ID + n % ANSWER_CHATS, text=text)))
        n += 1
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except TimeoutError:
            pass
    await asyncio.gather(*sends)
    return n


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0..100) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] if ordered else float("nan")


def bench_settings(db_path: Path) -> Settings:
    """Settings pointing at the benchmark's database (the worker needs them only for 403s)."""
    return make_settings(db_path.parent)


async def run(n: int, db_path: Path, every: float) -> dict[str, Any]:
    fake = FakeTelegram(enforce_limits=True)
    recorder = Recorder(fake)
    clock = Clock()
    storage = await Storage.open(db_path)
    # What fake.serve() does, with the recorder in front of fake.handle.
    with LoopbackServer(recorder.handle) as server:
        limiter = DeliveryLimiter()
        bot = ExtBot(
            FAKE_TOKEN,
            base_url=f"{server.url}/bot",
            request=HTTPXRequest(connection_pool_size=64, read_timeout=15.0, connect_timeout=10.0),
            rate_limiter=limiter,
        )
        await bot.initialize()
        try:
            now = clock.timestamp()
            for i in range(n):
                await tdb.seen(storage, FIRST_ID + i, now)
            # All the digests due in the same minute: one transaction, as the digest job writes them.
            messages = [OutgoingMessage(FIRST_ID + i, FIRST_ID + i, "digest", DIGEST) for i in range(n)]
            async with storage.transaction() as db:
                await outbox.enqueue(db, messages, clock.timestamp())

            metrics = Metrics()
            accounts = Accounts(bench_settings(db_path), storage, clock, lambda: None)
            worker = OutboxWorker(storage, bot, clock, metrics, accounts)
            await worker.recover()
            started = time.monotonic()
            task = asyncio.create_task(worker.run())
            stop = asyncio.Event()
            called_at: dict[str, float] = {}
            user = asyncio.create_task(answers(bot, every, stop, called_at)) if every > 0 else None
            await worker.drain(timeout=n / 20 + 120)
            wall = time.monotonic() - started
            stop.set()
            answers_sent = await user if user is not None else 0
            await worker.stop(10)
            await task
        finally:
            await bot.shutdown()

    rows = await tdb.outbox_rows(storage)
    await storage.close()
    statuses = collections.Counter(r["status"] for r in rows)
    at = sorted(recorder.accepted_at)
    span = at[-1] - at[0] if len(at) > 1 else float("nan")
    sustained = (len(at) - 1) / span
    answered = [recorder.answered_at[text] - called for text, called in called_at.items() if text in recorder.answered_at]
    answers_in_span = sum(1 for t in recorder.answered_at.values() if at[0] <= t <= at[-1])
    return {
        "messages": n,
        "accepted": sum(recorder.accepted.values()),
        "sustained": sustained,
        "all_sustained": (len(at) - 1 + answers_in_span) / span,
        "overall": len(at) / wall,
        "answers": answers_sent,
        "answered": answered,
        "too_many_requests": fake.too_many_requests,
        "limiter_retry_after": limiter.retry_after_received,
        "duplicates": sum(1 for c in recorder.accepted.values() if c > 1),
        "never_received": n - len(recorder.accepted),
        "losses": sum(v for k, v in statuses.items() if k != "sent"),
        "statuses": dict(statuses),
        "wall": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="digests due in the same minute (default 10000)")
    parser.add_argument("--answers-every", type=float, default=0.5, help="seconds between a user's answers (0: none)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(run(args.n, Path(tmp) / "bench.sqlite3", args.answers_every))
    print(f"digests queued:              {r['messages']} (distinct chats, one transaction)")
    print(f"accepted by the fake:        {r['accepted']}")
    print(f"digests/s sustained:         {r['sustained']:.2f} (first to last digest accepted)")
    print(f"messages/s sustained:        {r['all_sustained']:.2f} (digests and answers in that span; target >= 24 of 25)")
    print(f"digests/s over wall time:    {r['overall']:.2f}")
    print(f"429s from the fake:          {r['too_many_requests']} (target 0)")
    print(f"duplicates (chat twice):     {r['duplicates']} (target 0)")
    print(f"losses (rows not sent):      {r['losses']} (target 0); never received: {r['never_received']}")
    print(f"outbox statuses:             {r['statuses']}")
    print(f"wall time:                   {r['wall']:.1f} s")
    print(f"peak RSS:                    {r['peak_rss_mb']:.1f} MB")
    answered = r["answered"]
    latency_ok = True
    if args.answers_every > 0:
        p50, p95, worst = (percentile(answered, q) for q in (50, 95, 100))
        latency_ok = len(answered) == r["answers"] and p95 <= 1.5
        print(f"answers (interactive):       {len(answered)} of {r['answers']} received, one every {args.answers_every:g} s "
              f"to {ANSWER_CHATS} chats without a digest")
        print(f"answer queueing latency:     p50 {p50:.3f} s, p95 {p95:.3f} s, max {worst:.3f} s, "
              f"mean {statistics.fmean(answered):.3f} s (call to received; target p95 <= 1.5 s)")
    ok = (r["all_sustained"] >= 24 and r["too_many_requests"] == 0 and r["duplicates"] == 0 and r["losses"] == 0
          and r["never_received"] == 0 and latency_ok)
    print("result:                      " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
