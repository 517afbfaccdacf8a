"""The real bot in-process: PTB Application + httpx clients over MockTransport to both fakes, real SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from telegram import Update
from telegram.request import HTTPXRequest

from bot.app import build_application
from bot.bitrix import BitrixClient, LeakyBucket, TimeBudget, build_http_client
from bot.config import Settings, load_settings
from bot.delivery import DeliveryLimiter, OutboxWorker
from bot.services import Services
from bot.storage import Storage
from tests.fakes.bitrix import FakeBitrix
from tests.fakes.bitrix_events import EventPoster
from tests.fakes.clock import FakeClock
from tests.fakes.telegram import FAKE_TOKEN, FakeTelegram

WEBHOOK_CODE = "fakewebhookcode0123456789"
EVENTS_TOKEN = "jvh9y1ulvt2m6k5or90v9mg8nn32ozas"
PORTAL = "https://corp.bitrix24.example"


def make_settings(tmp_path: Path, **overrides: str) -> Settings:
    """Valid settings pointing at the fakes."""
    env = {
        "TELEGRAM_BOT_TOKEN": FAKE_TOKEN,
        "TELEGRAM_API_BASE_URL": "http://telegram.fake",
        "BITRIX24_WEBHOOK_URL": f"{PORTAL}/rest/1/{WEBHOOK_CODE}/",
        "DATABASE_PATH": str(tmp_path / "bot.sqlite3"),
        **overrides,
    }
    return load_settings(env, None)


async def _no_sleep(seconds: float) -> None:
    return None


class Harness:
    """Everything a test needs; use as `async with Harness(tmp_path) as h:`."""

    def __init__(self, tmp_path: Path, *, clock: FakeClock | None = None, **settings: str) -> None:
        self.tmp_path = tmp_path
        self.settings = make_settings(tmp_path, **settings)
        self.clock = clock or FakeClock()
        self.tg = FakeTelegram()
        self.tg.get_updates_delay_cap = 0.2
        self.b24 = FakeBitrix(webhook_user_id=1, webhook_code=WEBHOOK_CODE)
        self.limiter = DeliveryLimiter(per_chat_interval=0.0)
        self._http: Any = None
        self.storage: Storage | None = None

    async def __aenter__(self) -> Harness:
        self.storage = await Storage.open(self.settings.database_path)
        self._http = build_http_client(transport=self.b24_transport())
        bucket = LeakyBucket(self.settings.bitrix24_requests_per_second, self.settings.bitrix24_burst)
        # The time budget lives on the bot's (fake) clock, as does the fake portal's accounting;
        # waiting for it moves that clock instead of sleeping. Retry backoffs do not wait at all.
        self.b24.clock = self.clock.timestamp
        budget = TimeBudget(wall=self.clock.timestamp, sleep=self._advance)
        self.bitrix = BitrixClient(
            self.settings.bitrix24_webhook_url, self._http, bucket, sleep=_no_sleep, wall=self.clock.timestamp, budget=budget
        )
        self.services = Services(settings=self.settings, storage=self.storage, clock=self.clock, bitrix=self.bitrix)
        transport = self.tg.transport()
        self.app = build_application(
            self.services,
            request=HTTPXRequest(httpx_kwargs={"transport": transport}),
            get_updates_request=HTTPXRequest(httpx_kwargs={"transport": transport}),
            limiter=self.limiter,
        )
        await self.app.initialize()
        return self

    async def _advance(self, seconds: float) -> None:
        self.clock.advance(seconds=max(seconds, 0.0))
        await asyncio.sleep(0)

    def b24_transport(self) -> Any:
        """The Bitrix24 fake as an httpx transport."""
        from tests.fakes.server import mock_transport

        return mock_transport(self.b24.handle)

    async def __aexit__(self, *exc: object) -> None:
        await self.app.shutdown()
        await self._http.aclose()
        await self.storage.close()

    async def flush(self) -> None:
        """Run the outbox worker until every due bulk message has been handled."""
        worker = OutboxWorker(
            self.storage, self.app.bot, self.clock, self.services.metrics, self.services.accounts,
            projects=self.services.projects, idle_wait=0.02,
        )
        self.services.outbox = worker
        task = asyncio.create_task(worker.run())
        try:
            await worker.drain()
        finally:
            await worker.stop(timeout=5)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            self.services.outbox = None

    async def poll(self) -> Any:
        """One poll cycle, then deliver what it queued."""
        result = await self.services.coordinator.poll_cycle()
        await self.flush()
        return result

    @asynccontextmanager
    async def polling(self) -> AsyncIterator[Harness]:
        """Run the real long polling and update processing (16 at once), as the bot does; no jobs."""
        self.tg.drop_updates()  # those `send` already handled must not be handed out again
        await self.app.updater.start_polling(timeout=1, poll_interval=0.0)
        await self.app.start()
        try:
            yield self
        finally:
            await self.app.updater.stop()
            await self.app.stop()

    @asynccontextmanager
    async def events(self) -> AsyncIterator[EventPoster]:
        """The events listener on a free loopback port and the event work running, as the bot runs them.

        The work's waits (gathering window, re-reads) move the fake clock instead of sleeping.
        """
        work = self.services.events
        assert work is not None, "set BITRIX24_EVENTS_TOKEN for events"
        work.sleep = self._advance
        server = self.services.events_server_for()
        await server.start("127.0.0.1", 0)
        self.services.events_server = server
        task = asyncio.create_task(work.run())
        try:
            yield EventPoster(
                f"http://127.0.0.1:{server.port}/bitrix24/events", self.settings.bitrix24_events_token,
                "corp.bitrix24.example", clock=self.clock.timestamp,
            )
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            await server.close()
            self.services.events_server = None

    async def events_done(self, timeout: float = 10.0) -> None:
        """Wait until the event work has nothing pending, due or in hand, then deliver what it queued."""
        work = self.services.events
        assert work is not None
        deadline = asyncio.get_running_loop().time() + timeout
        await asyncio.sleep(0.01)
        while not work.idle:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"event work still busy: {work.pending} pending, {work.due} due")
            await asyncio.sleep(0.01)
        await self.flush()

    async def together(self, *updates: dict[str, Any], answers: int, chat_id: int | None = None, timeout: float = 10.0) -> list[str]:
        """Deliver updates in one getUpdates answer (handled concurrently); wait for `answers` new texts."""
        before = len(self.tg.texts(chat_id))
        self.tg.push_many(*updates)
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.tg.texts(chat_id)) < before + answers:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {answers} answers, got {self.tg.texts(chat_id)[before:]}")
            await asyncio.sleep(0.02)
        return self.tg.texts(chat_id)[before:]

    async def send(self, update: dict[str, Any]) -> None:
        """Deliver one update through the Application, as polling would, and wait for its handling."""
        data = self.tg.push(update)
        await self.app.process_update(Update.de_json(data, self.app.bot))

    async def say(self, telegram_user_id: int, text: str, **kwargs: Any) -> list[str]:
        """Send a text message and return the texts the bot sent back to that chat for it."""
        before = len(self.tg.texts(kwargs.get("chat_id", telegram_user_id)))
        await self.send(self.tg.message(telegram_user_id, text, **kwargs))
        return self.tg.texts(kwargs.get("chat_id", telegram_user_id))[before:]
