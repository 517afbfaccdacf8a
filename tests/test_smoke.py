"""`python -m bot` as a subprocess against both fakes on real sockets: start, /start, SIGTERM, exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.model import UserSettings
from bot.storage import Storage
from tests import db as tdb
from tests.fakes.bitrix import FakeBitrix, Scripted
from tests.fakes.telegram import FAKE_TOKEN, FakeTelegram
from tests.harness import WEBHOOK_CODE
from tests.test_linking import ANNA

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path, tg_url: str, b24_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BITRIX24_"))}
    env.update(
        TELEGRAM_BOT_TOKEN=FAKE_TOKEN,
        TELEGRAM_API_BASE_URL=tg_url,
        BITRIX24_WEBHOOK_URL=f"{b24_url}/rest/1/{WEBHOOK_CODE}/",
        DATABASE_PATH=str(tmp_path / "data" / "bot.sqlite3"),
        PYTHONPATH=str(ROOT),
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


def _start(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_bot_starts_answers_start_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    tg, b24 = FakeTelegram(), FakeBitrix(webhook_user_id=1, webhook_code=WEBHOOK_CODE)
    health_port = _free_port()
    with tg.serve() as tg_server, b24_server(b24) as b24_url:
        proc = _start(_env(tmp_path, tg_server.url, b24_url, HEALTH_PORT=str(health_port)), tmp_path)
        try:
            assert tg.wait_for(lambda: any(c.method == "getUpdates" for c in tg.calls), timeout=20), "never polled"
            tg.push(tg.message(42, "/start", language_code="ru"))
            assert tg.wait_for(lambda: bool(tg.sent(42)), timeout=10), "no answer to /start"
            assert "Привет" in tg.sent(42)[0]["text"]
            commands = tg.sent(method="setMyCommands")
            assert {c.get("language_code") for c in commands} == {None, "ru"}
            polls = [c.params for c in tg.calls if c.method == "getUpdates"]
            assert polls[0]["allowed_updates"] == ["message", "callback_query", "my_chat_member"]
            with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=5) as resp:
                assert resp.status == 200
            with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=5) as resp:
                assert b"bot_poll_cycles" in resp.read()
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert FAKE_TOKEN not in out and WEBHOOK_CODE not in out
    assert "bot started" in out and "stopped" in out
    db = tmp_path / "data" / "bot.sqlite3"
    assert oct(db.stat().st_mode & 0o777) == "0o600"


def test_sigterm_while_bitrix24_takes_60_s_to_answer_exits_zero_within_the_budget(tmp_path: Path) -> None:
    asyncio.run(_link_one_user(tmp_path / "data" / "bot.sqlite3"))  # so the first poll asks Bitrix24
    tg, b24 = FakeTelegram(), FakeBitrix(webhook_user_id=1, webhook_code=WEBHOOK_CODE)
    b24.add_user(ANNA, "Anna", "Smith")
    b24.push(Scripted(delay=60.0), times=5)
    with tg.serve() as tg_server, b24_server(b24) as b24_url:
        proc = _start(_env(tmp_path, tg_server.url, b24_url), tmp_path)
        try:
            assert _wait(lambda: b24.request_count() >= 1, timeout=20), "the poll never asked Bitrix24"
            time.sleep(0.5)  # well inside the 60 s the answer takes
        finally:
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
        elapsed = time.monotonic() - signalled
    assert proc.returncode == 0, out
    assert elapsed < 20.0, out  # SHUTDOWN_BUDGET_SECONDS; docker would kill at 30
    assert "poll was cut short by shutdown" in out and "stopped" in out
    assert b24.request_count() == 1  # not asked again after the stop


async def _link_one_user(database: Path) -> None:
    database.parent.mkdir(parents=True, exist_ok=True)
    storage = await Storage.open(database)
    try:
        await tdb.link(storage, 42, ANNA, "Anna Smith", UserSettings(), time.time())
    finally:
        await storage.close()


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class b24_server:
    """FakeBitrix on a loopback socket; yields its root URL."""

    def __init__(self, fake: FakeBitrix) -> None:
        from tests.fakes.server import LoopbackServer

        self._server = LoopbackServer(fake.handle)

    def __enter__(self) -> str:
        self._server.__enter__()
        return self._server.url

    def __exit__(self, *exc: object) -> None:
        self._server.__exit__(*exc)


@pytest.mark.parametrize(
    "override, variable",
    [
        ({"TELEGRAM_BOT_TOKEN": ""}, "TELEGRAM_BOT_TOKEN"),
        ({"POLL_INTERVAL_SECONDS": "0"}, "POLL_INTERVAL_SECONDS"),
        ({"BITRIX24_WEBHOOK_URL": "https://corp.bitrix24.com/rest/1/"}, "BITRIX24_WEBHOOK_URL"),
    ],
)
def test_bad_settings_exit_2_naming_the_variable(tmp_path: Path, override: dict[str, str], variable: str) -> None:
    env = _env(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9", **override)
    proc = _start(env, tmp_path)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert variable in out
    assert FAKE_TOKEN not in out and WEBHOOK_CODE not in out


def test_rejected_token_exits_1(tmp_path: Path) -> None:
    tg = FakeTelegram()
    tg.token_rejected = True
    with tg.serve() as tg_server:
        proc = _start(_env(tmp_path, tg_server.url, "http://127.0.0.1:9"), tmp_path)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    assert "rejected" in out and FAKE_TOKEN not in out


def test_second_instance_on_the_same_database_exits_1(tmp_path: Path) -> None:
    tg = FakeTelegram()
    with tg.serve() as tg_server:
        env = _env(tmp_path, tg_server.url, "http://127.0.0.1:9")
        first = _start(env, tmp_path)
        try:
            assert tg.wait_for(lambda: any(c.method == "getUpdates" for c in tg.calls), timeout=20)
            second = _start(env, tmp_path)
            out, _ = second.communicate(timeout=30)
            assert second.returncode == 1
            assert "another instance" in out
        finally:
            first.send_signal(signal.SIGINT)
            first.communicate(timeout=30)
    assert first.returncode == 0


def test_unreachable_telegram_is_retried_not_fatal(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens here
    proc = _start(_env(tmp_path, f"http://127.0.0.1:{port}", "http://127.0.0.1:9"), tmp_path)
    time.sleep(2.5)
    assert proc.poll() is None, "the bot gave up instead of retrying"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "not reachable yet" in out


def test_with_events_on_the_bot_listens_and_a_posted_event_becomes_an_alert(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.fakes.bitrix_events import EventPoster
    from tests.harness import EVENTS_TOKEN

    asyncio.run(_link_one_user(tmp_path / "data" / "bot.sqlite3"))
    tg, b24 = FakeTelegram(), FakeBitrix(webhook_user_id=1, webhook_code=WEBHOOK_CODE)
    b24.add_user(ANNA, "Anna", "Smith")
    b24.derive_counters = True
    events_port = _free_port()
    with tg.serve() as tg_server, b24_server(b24) as b24_url:
        env = _env(tmp_path, tg_server.url, b24_url, BITRIX24_EVENTS_TOKEN=EVENTS_TOKEN, EVENTS_PORT=str(events_port))
        proc = _start(env, tmp_path)
        try:
            assert _wait(lambda: b24.request_count("batch") >= 1, timeout=20), "the first poll never ran"
            time.sleep(0.5)  # its answer is applied: Anna's baseline is 0 overdue
            checked = subprocess.run(
                [sys.executable, "-m", "bot", "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
            )
            assert f"OK events: listening on {events_port}" in checked.stdout, checked.stdout
            assert "WARN events url: EVENTS_PUBLIC_URL is empty" in checked.stdout
            b24.add_task(9, "Contract", deadline=datetime.now(UTC) - timedelta(days=1), responsible=ANNA)
            poster = EventPoster(f"http://127.0.0.1:{events_port}/bitrix24/events", EVENTS_TOKEN, "127.0.0.1")
            assert asyncio.run(poster.post("ONTASKADD", 9)).status_code == 200
            assert _wait(lambda: any("⚠️" in m["text"] for m in tg.sent(42)), timeout=15), "no alert after the event"
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert EVENTS_TOKEN not in out and EVENTS_TOKEN not in checked.stdout
    assert f"events listener on 127.0.0.1 port {events_port}" in out
