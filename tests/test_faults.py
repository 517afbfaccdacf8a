"""Faults and abuse against the running bot: kill -9 mid fan-out, SIGTERM with sends in flight,
secrets in logs and in the database, hostile input."""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import sqlite3
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.logs import RedactingFormatter
from bot.model import ALL_DAYS, UserSettings
from bot.storage import Storage
from tests import db as tdb
from tests.fakes.bitrix import FakeBitrix, Scripted
from tests.fakes.telegram import FAKE_TOKEN, FakeTelegram
from tests.harness import WEBHOOK_CODE, Harness
from tests.test_linking import ANNA, link
from tests.test_smoke import _env, _start, b24_server

USERS = 40


async def seed_due_digests(db_path: Path, users: int) -> None:
    """Linked users whose digest fell due at the start of this UTC minute, saved an hour ago."""
    now = datetime.now(UTC)
    due = now.replace(second=0, microsecond=0)
    settings = replace(UserSettings(), digest_time=due.time().replace(second=0), digest_days=ALL_DAYS, digest_empty=True)
    storage = await Storage.open(db_path)
    try:
        for tid in range(1, users + 1):
            await tdb.link(storage, tid, 1000 + tid, f"User {tid}", settings, (now - timedelta(hours=1)).timestamp())
    finally:
        await storage.close()


def outbox(db_path: Path) -> list[tuple[int, str, str | None]]:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT chat_id, status, error FROM outbox WHERE kind = 'digest'").fetchall()


def fake_portal(users: int) -> FakeBitrix:
    b24 = FakeBitrix(webhook_user_id=1, webhook_code=WEBHOOK_CODE)
    for tid in range(1, users + 1):
        for role in ("view_all", "view_role_responsible", "view_role_accomplice", "view_role_auditor", "view_role_originator"):
            b24.set_counters(1000 + tid, role, expired=tid % 3, new_comments=1)
    return b24


def test_kill_9_during_a_digest_fan_out_loses_at_most_the_sends_in_flight_and_duplicates_none(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "bot.sqlite3"
    asyncio.run(seed_due_digests(db_path, USERS))
    tg, b24 = FakeTelegram(), fake_portal(USERS)
    tg.send_delay = 0.15
    with tg.serve() as tg_server, b24_server(b24) as b24_url:
        env = _env(tmp_path, tg_server.url, b24_url)
        first = _start(env, tmp_path)
        try:
            assert tg.wait_for(lambda: len(tg.attempts()) >= 10, timeout=40), "the fan-out never started"
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)
        at_kill = outbox(db_path)
        in_flight = {chat for chat, status, _ in at_kill if status == "sending"}
        assert any(status == "queued" for _, status, _ in at_kill), "killed too late to test anything"
        second = _start(env, tmp_path)
        try:
            done = lambda: all(status not in ("queued", "sending") for _, status, _ in outbox(db_path))  # noqa: E731
            assert tg.wait_for(lambda: done() and len(tg.attempts()) >= USERS - len(in_flight), timeout=60)
        finally:
            second.send_signal(signal.SIGTERM)
            out, _ = second.communicate(timeout=30)
    assert second.returncode == 0, out
    received = Counter(p["chat_id"] for p in tg.sent() if p["text"].startswith("<b>Good morning"))
    assert max(received.values()) == 1, "a digest was sent twice"
    missing = set(range(1, USERS + 1)) - set(received)
    assert missing <= in_flight, "a digest was lost that was not in flight at the crash"
    rows = {chat: (status, error) for chat, status, error in outbox(db_path)}
    for chat in in_flight:
        assert rows[chat] == ("failed", "outcome unknown after restart")
    assert "outcome unknown" in out or not in_flight


def test_sigterm_lets_sends_in_flight_finish_and_exits_zero(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "bot.sqlite3"
    asyncio.run(seed_due_digests(db_path, 10))
    tg, b24 = FakeTelegram(), fake_portal(10)
    tg.send_delay = 1.0
    with tg.serve() as tg_server, b24_server(b24) as b24_url:
        proc = _start(_env(tmp_path, tg_server.url, b24_url), tmp_path)
        try:
            assert tg.wait_for(lambda: len(tg.attempts()) >= 1, timeout=40)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    statuses = Counter(status for _, status, _ in outbox(db_path))
    assert statuses["sending"] == 0, statuses  # every send that had started was finished and recorded
    assert statuses["sent"] >= 1 and statuses["sent"] == len(tg.sent())


# ---- secrets ------------------------------------------------------------------------------------


async def test_no_log_line_exception_or_database_byte_carries_a_secret(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter())  # no secrets given: the patterns alone must catch them
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in ("httpx", "httpcore", "telegram", "bot"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        h = Harness(tmp_path, ADMIN_TELEGRAM_USER_IDS="1")
        h.b24.add_user(ANNA, "Anna", "Smith")
        h.b24.set_counters(ANNA, "view_all", expired=2, new_comments=0)
        async with h:
            await h.say(1, "/start")
            await link(h, 42)
            h.b24.push(Scripted.html(502), Scripted.error(401, "NO_AUTH_FOUND", "Wrong authorization data"))
            await h.poll()
            h.b24.push(*[Scripted.connect_error()] * 10)
            await h.say(42, "/counters")
            h.tg.script("sendMessage", (500, "Internal Server Error"))
            h.clock.advance(seconds=30)
            await h.say(42, "/counters")
            await h.poll()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name in ("httpx", "httpcore", "telegram", "bot"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    text = stream.getvalue()
    assert "/bot<redacted>/" in text  # httpx did log the Telegram URLs, redacted
    assert FAKE_TOKEN not in text and FAKE_TOKEN.split(":")[1] not in text
    assert WEBHOOK_CODE not in text
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("bot.sqlite3"))
    assert FAKE_TOKEN.encode() not in raw and FAKE_TOKEN.split(":")[1].encode() not in raw
    assert WEBHOOK_CODE.encode() not in raw


def test_secrets_never_reach_a_subprocess_log_even_at_debug(tmp_path: Path) -> None:
    tg, b24 = FakeTelegram(), FakeBitrix(webhook_user_id=1, webhook_code=WEBHOOK_CODE)
    b24.push(Scripted.html(502))
    with tg.serve() as tg_server, b24_server(b24) as b24_url:
        proc = _start(_env(tmp_path, tg_server.url, b24_url, LOG_LEVEL="DEBUG"), tmp_path)
        try:
            tg.push(tg.message(42, "/link 547"))
            assert tg.wait_for(lambda: bool(tg.sent(42)), timeout=30)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "DEBUG" in out and FAKE_TOKEN not in out and FAKE_TOKEN.split(":")[1] not in out
    assert WEBHOOK_CODE not in out


# ---- hostile input ------------------------------------------------------------------------------


HOSTILE = [
    "/link " + "A" * 5000,
    "/link \u202e547",
    "/link 547\x00",
    "/link '; DELETE FROM links; --",
    "/link https://corp.bitrix24.example/company/personal/user/548/?redirect=evil",
    "/verify " + "9" * 100,
    "/counters 548",
    "/counters ' OR '1'='1",
    "/alerts overdue 3; DROP TABLE alert_state",
    "/timezone ../../etc/passwd",
    "/digest 9:00 mon-fri" + "," * 3000,
    "/pause 9999999999999999999999",
    "\x1b[31m" * 500,
    "x" * 4096,
    "<b>not html</b> & <script>",
]


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_input_gets_a_short_answer_and_touches_no_one_elses_data(tmp_path: Path, text: str) -> None:
    h = Harness(tmp_path)
    h.b24.add_user(ANNA, "Anna", "Smith")
    h.b24.add_user(548, "Boris", "Ivanov")
    h.b24.set_counters(548, "view_all", expired=99, new_comments=99)
    async with h:
        await link(h, 42)
        before = await h.storage.table_counts()
        notes_before = len(h.b24.notifications)
        answers = await h.say(42, text)
        assert len(answers) == 1 and len(answers[0]) < 600
        assert "Boris" not in answers[0] and "99" not in answers[0] and "Traceback" not in answers[0]
        assert (await tdb.user(h.storage, 42)).bitrix_user_id == ANNA
        after = await h.storage.table_counts()
        assert {k: v for k, v in after.items() if k not in ("limit_events", "link_codes")} == {
            k: v for k, v in before.items() if k not in ("limit_events", "link_codes")
        }
        # /link to someone else's profile may send *them* a code (that is the design: only the
        # owner of the Bitrix24 account can read it); it never links and never names them.
        assert len(h.b24.notifications) <= notes_before + 1


async def test_a_stranger_cannot_read_or_change_a_linked_users_data_with_forged_buttons(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.b24.add_user(ANNA, "Anna", "Smith")
    h.b24.set_counters(ANNA, "view_all", expired=7, new_comments=7)
    async with h:
        await link(h, 42)
        settings = await tdb.settings(h.storage, 42)
        for data in ("c:every", "s:digest_off", "s:alerts_off", "z:expired:t", "s:show"):
            await h.send(h.tg.callback(66, data, 5000, chat_id=66))
        assert all("7" not in p.get("text", "") for p in h.tg.sent(66, method="editMessageText"))
        assert h.tg.sent(66) == [] or all("Anna" not in t for t in h.tg.texts(66))
        assert await tdb.settings(h.storage, 42) == settings
