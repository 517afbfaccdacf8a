"""Shutdown within the bot's own budget (SPEC 10: SIGTERM -> exit 0 within 20 s), in-process with the real Application."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import bot.app
from bot.app import run
from bot.model import UserSettings
from bot.storage import outbox
from tests import db as tdb
from tests.harness import Harness
from tests.test_linking import ANNA

BUDGET = 2.0  # SHUTDOWN_BUDGET_SECONDS for these tests


class Silent(httpx.AsyncBaseTransport):
    """Bitrix24 that, once `silent`, takes every request and never answers (until cancelled)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.silent = False
        self.waiting = 0
        self.cancelled = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Hang while silent, else pass the request to the fake."""
        if self.silent:
            self.waiting += 1
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return await self.inner.handle_async_request(request)


class SilentPortal(Harness):
    """The harness with a Bitrix24 that can fall silent."""

    def b24_transport(self) -> Any:
        """The fake's transport, wrapped so it can fall silent."""
        self.b24_wire = Silent(super().b24_transport())
        return self.b24_wire


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Poll predicate() every 10 ms; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_stop_returns_within_the_budget_while_a_poll_and_a_command_wait_on_a_silent_bitrix24(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(bot.app, "SHUTDOWN_BUDGET_SECONDS", BUDGET)
    h = SilentPortal(tmp_path)
    h.b24.add_user(ANNA, "Anna", "Smith")
    h.b24.add_user(548, "Boris", "Ivanov")
    async with h:
        # A linked user, so the poll asks Bitrix24. (Linked in storage: the /link flow's updates
        # would stay queued in the fake and be fetched again once polling starts.)
        now = h.clock.timestamp()
        await tdb.link(h.storage, 42, ANNA, "Anna Smith", UserSettings(), now)
        wire = h.b24_wire
        wire.silent = True
        stop = asyncio.Event()
        task = asyncio.create_task(run(h.app, stop))
        await wait_until(lambda: wire.waiting == 1)  # the first poll, 1 s after start, hangs
        h.tg.push(h.tg.message(43, "/link 548"))  # and a command whose Bitrix24 lookup hangs too
        await wait_until(lambda: wire.waiting == 2)

        stopped_at = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, timeout=BUDGET + 2)
        elapsed = time.monotonic() - stopped_at

        assert elapsed < BUDGET + 0.5
        assert wire.cancelled == 2  # both requests were cut, not waited for
        assert not h.app.running and not h.app.updater.running
        assert h.app.job_queue.jobs() == ()  # the poll did not schedule itself again
        await asyncio.sleep(1.2)  # longer than any gap of the poll chain: nothing asks Bitrix24 any more
        assert wire.waiting == 2
        assert h.tg.texts(43) == []  # the cut command was not answered
    assert "poll was cut short by shutdown" in caplog.text
    assert "cancelled 1 tasks still running: process_concurrent_update" in caplog.text


async def test_shutdown_after_the_outbox_worker_kept_failing_stops_polling_and_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Harness(tmp_path) as h:
        failures: list[int] = []

        async def outbox_due(*args: Any, **kwargs: Any) -> Any:
            failures.append(1)
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(outbox, "due", outbox_due)
        stop = asyncio.Event()
        task = asyncio.create_task(run(h.app, stop))
        await wait_until(lambda: failures and h.app.updater.running)
        stop.set()
        await asyncio.wait_for(task, timeout=10)  # returns: the worker's error is not re-raised here

        assert not h.app.updater.running and not h.app.running
        last = [c for c in h.tg.calls if c.method == "getUpdates"][-1]
        assert last.params["timeout"] == 0  # the stopped updater confirmed the offset
