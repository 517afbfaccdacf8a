"""The events port under hostile input (SPEC 14): every request gets its status on a real socket, nothing is refreshed for it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from bot.events import intake
from bot.events.intake import judge
from tests import db as tdb
from tests.fakes.bitrix_events import EventPoster, event_fields
from tests.harness import EVENTS_TOKEN, Harness
from tests.test_events import events_portal
from tests.test_scheduled import linked

DOMAINS = frozenset({"corp.bitrix24.example"})
NOW = 1_780_000_000.0


def fields(event: str = "ONTASKUPDATE", task_id: int | str = 7, **kw: object) -> bytes:
    kw.setdefault("token", EVENTS_TOKEN)
    kw.setdefault("domain", "corp.bitrix24.example")
    kw.setdefault("ts", NOW)
    return urlencode(event_fields(event, task_id, **kw)).encode()  # type: ignore[arg-type]


def verdict(body: bytes, content_type: str = "application/x-www-form-urlencoded") -> tuple[int, str]:
    v = judge(content_type, body, token=EVENTS_TOKEN, domains=DOMAINS, now=NOW)
    return v.status, v.reason


# ---- the checks, in order (pure) ------------------------------------------------------------------


def test_a_real_event_is_accepted_with_its_task() -> None:
    v = judge("application/x-www-form-urlencoded; charset=utf-8", fields(), token=EVENTS_TOKEN, domains=DOMAINS, now=NOW)
    assert (v.status, v.reason, v.event and v.event.task_id) == (200, "ok", 7)


@pytest.mark.parametrize(
    ("event", "task_id"),
    [("ONTASKADD", 3), ("ONTASKDELETE", 4), ("ONTASKCOMMENTADD", 5), ("ONTASKCOMMENTUPDATE", 6), ("ONTASKCOMMENTDELETE", 8)],
)
def test_every_task_event_finds_its_task_id_where_the_portal_puts_it(event: str, task_id: int) -> None:
    v = judge("application/x-www-form-urlencoded", fields(event, task_id), token=EVENTS_TOKEN, domains=DOMAINS, now=NOW)
    assert v.event is not None and v.event.task_id == task_id and v.event.name == event


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (fields(), "application/json", (415, "content_type")),
        (fields(), "", (415, "content_type")),
        (b'{"event": "ONTASKUPDATE"}', "application/x-www-form-urlencoded", (401, "token")),
        ("&".join(["a=1"] * 10_000).encode(), "application/x-www-form-urlencoded", (415, "not_a_form")),
        (b"event=\xff\xfe", "application/x-www-form-urlencoded", (415, "not_a_form")),
        (fields() + b"&auth[application_token]=" + EVENTS_TOKEN.encode(), "application/x-www-form-urlencoded", (415, "not_a_form")),
        (fields(token=""), "application/x-www-form-urlencoded", (401, "token")),
        (fields(token=EVENTS_TOKEN[:-1] + "x"), "application/x-www-form-urlencoded", (401, "token")),
        (fields(token=EVENTS_TOKEN + "x"), "application/x-www-form-urlencoded", (401, "token")),
        (fields(token="ŧøκєи"), "application/x-www-form-urlencoded", (401, "token")),
        (fields(domain="evil.bitrix24.example"), "application/x-www-form-urlencoded", (403, "domain")),
        (fields("ONCRMDEALADD"), "application/x-www-form-urlencoded", (200, "other_event")),
        (fields(ts=NOW - 3601), "application/x-www-form-urlencoded", (200, "stale")),
        (fields(ts="soon"), "application/x-www-form-urlencoded", (200, "bad_ts")),
        (fields(task_id="undefined"), "application/x-www-form-urlencoded", (200, "no_task_id")),
        (fields(task_id="12abc"), "application/x-www-form-urlencoded", (200, "no_task_id")),
        (fields(task_id="-5"), "application/x-www-form-urlencoded", (200, "no_task_id")),
        (fields(task_id="1" * 30), "application/x-www-form-urlencoded", (200, "no_task_id")),
        (fields(task_id="٣"), "application/x-www-form-urlencoded", (200, "no_task_id")),
    ],
)
def test_each_bad_request_gets_its_status_and_no_task(body: bytes, content_type: str, expected: tuple[int, str]) -> None:
    assert verdict(body, content_type) == expected


def test_deeply_nested_keys_are_only_unknown_keys() -> None:
    nested = "data" + "[x]" * 2000 + "=1"
    body = fields(task_id="undefined") + b"&" + nested.encode()
    assert verdict(body) == (200, "no_task_id")


def test_the_token_is_checked_before_the_domain_so_a_stranger_learns_nothing_about_it() -> None:
    assert verdict(fields(token="wrong-token-000", domain="evil.example")) == (401, "token")


# ---- on a real socket, through the bot --------------------------------------------------------------


async def test_hostile_requests_get_their_status_and_refresh_nobody(tmp_path: Path) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        before = h.b24.request_count()
        async with h.events() as bitrix:
            async with httpx.AsyncClient(timeout=10) as client:
                statuses = {
                    "get": (await client.get(bitrix.url)).status_code,
                    "no token": (await bitrix.post("ONTASKUPDATE", 7, token="", client=client)).status_code,
                    "one off": (await bitrix.post("ONTASKUPDATE", 7, token=EVENTS_TOKEN[:-1] + "0", client=client)).status_code,
                    "oversize": (await bitrix.raw(b"event=" + b"x" * (64 * 1024), client=client)).status_code,
                    "json": (await bitrix.raw(bitrix.body("ONTASKUPDATE", 7).encode(), content_type="application/json", client=client)).status_code,
                    "not a form": (await bitrix.raw(b"\x00\xff" * 100, client=client)).status_code,
                    "repeated keys": (await bitrix.raw("&".join(["k=v"] * 10_000).encode(), client=client)).status_code,
                    "10,000 IDs": (await bitrix.raw(("&".join(f"data[FIELDS_AFTER][ID][]={i}" for i in range(10_000))).encode(), client=client)).status_code,
                    "not a number": (await bitrix.post("ONTASKUPDATE", "7 OR 1=1", client=client)).status_code,
                    "stale": (await bitrix.post("ONTASKUPDATE", 7, ts=h.clock.timestamp() - 7200, client=client)).status_code,
                    "other event": (await bitrix.post("ONUSERADD", 7, client=client)).status_code,
                    "other path": (await client.post(bitrix.url + "x", content=b"")).status_code,
                }
            await h.events_done()
        assert statuses == {
            "get": 405, "no token": 401, "one off": 401, "oversize": 413, "json": 415, "not a form": 415,
            "repeated keys": 415, "10,000 IDs": 413, "not a number": 200, "stale": 200, "other event": 200, "other path": 404,
        }
        assert h.b24.request_count() == before, "a hostile request caused a Bitrix24 request"
        rejected = h.services.metrics.events_rejected
        assert rejected.labels("token")._value.get() == 2  # noqa: SLF001
        assert rejected.labels("no_task_id")._value.get() == 1  # noqa: SLF001


async def test_a_right_token_from_another_domain_is_refused_and_admins_are_told_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with events_portal(tmp_path, ADMIN_TELEGRAM_USER_IDS="42") as h:
        await linked(h)
        await h.poll()
        async with h.events() as bitrix:
            with caplog.at_level(logging.WARNING):
                answers = [(await bitrix.post("ONTASKUPDATE", 7, domain="other.bitrix24.example")).status_code for _ in range(3)]
                await asyncio.sleep(0.1)
            await h.events_done()
        assert answers == [403, 403, 403]
        notices = [p["text"] for p in h.tg.sent(42) if "other.bitrix24.example" in p["text"]]
        assert len(notices) == 1 and "corp.bitrix24.example" in notices[0]
        assert sum("other.bitrix24.example" in r.getMessage() for r in caplog.records) == 1
        assert EVENTS_TOKEN not in caplog.text


async def test_a_slow_client_is_cut_off_and_a_33rd_connection_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "HEADER_SECONDS", 0.5)
    monkeypatch.setattr(intake, "BODY_SECONDS", 0.5)
    async with events_portal(tmp_path) as h, h.events() as bitrix:
        port = urlsplit(bitrix.url).port
        # A byte a second (here: one every 0.2 s) of a request head: closed without an answer.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        closed_after = None
        for i, byte in enumerate(b"POST /bitrix24/events HTTP/1.1\r\n"):
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                closed_after = i
                break
            if reader.at_eof():
                closed_after = i
                break
            await asyncio.sleep(0.2)
        assert closed_after is not None and closed_after < 10, "a slow request head was not cut off"
        writer.close()
        # A whole head, then a body that trickles: 408.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /bitrix24/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 100\r\n\r\nevent="
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
        await asyncio.wait_for(reader.read(), 5)  # the rest of the answer, then the server closes (LINGER_SECONDS)
        assert reader.at_eof()
        await asyncio.sleep(0.05)  # its handler task ends and frees the slot
        writer.close()
        # 32 connections held open; the 33rd is answered 503 at once; the 32 still work.
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(32)]
        await asyncio.sleep(0.05)
        extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await asyncio.wait_for(extra_reader.read(100), 5)
        assert refused.startswith(b"HTTP/1.1 503")
        assert h.services.metrics.events_rejected.labels("connections")._value.get() == 1  # noqa: SLF001
        extra_writer.close()
        body = bitrix.body("ONCRMDEALADD", 1).encode()
        for r, w in held[:3]:
            w.write(
                b"POST /bitrix24/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            )
            await w.drain()
            assert (await asyncio.wait_for(r.readline(), 5)).startswith(b"HTTP/1.1 200")
        for _, w in held:
            w.close()


async def test_a_flood_of_bad_posts_is_refused_logged_once_and_counters_still_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        await h.poll()
        before = h.b24.request_count()
        async with h.events() as bitrix, h.polling():
            bad = bitrix.body("ONTASKUPDATE", 7, token="not-the-token-1").encode()
            limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
            with caplog.at_level(logging.WARNING, logger="bot.events.intake"):
                async with httpx.AsyncClient(timeout=10, limits=limits) as client:

                    async def sender() -> list[int]:
                        return [(await bitrix.raw(bad, client=client)).status_code for _ in range(1000 // 40)]

                    # 40 senders over at most 32 connections (httpx's pool queues the rest): 1,000 posts.
                    flood = asyncio.gather(*(sender() for _ in range(40)))
                    loop = asyncio.get_running_loop()
                    asked = loop.time()
                    answers = await h.together(h.tg.message(42, "/counters"), answers=1, chat_id=42, timeout=5)
                    answered_in = loop.time() - asked
                    statuses = [status for part in await flood for status in part]
        assert statuses == [401] * 1000
        assert answers and answered_in < 5.0, answered_in  # while 1,000 bad posts were being refused
        assert h.b24.request_count() - before <= 1  # /counters' own read at most: the flood refreshed nobody
        logged = [r for r in caplog.records if "rejected a request (token" in r.getMessage()]
        assert len(logged) == 1


async def test_past_10000_pending_tasks_the_next_poll_is_brought_forward_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.events import work as event_work

    monkeypatch.setattr(event_work, "PENDING_LIMIT", 3)
    async with events_portal(tmp_path) as h:
        moved: list[float] = []
        work = h.services.events
        assert work is not None
        work.poll_soon = lambda: moved.append(h.clock.timestamp()) is None
        work.sleep = lambda seconds: asyncio.sleep(3600)  # the round never starts: everything stays pending
        server = h.services.events_server_for()
        await server.start("127.0.0.1", 0)
        try:
            task = asyncio.create_task(work.run())
            bitrix = EventPoster(f"http://127.0.0.1:{server.port}/bitrix24/events", EVENTS_TOKEN, "corp.bitrix24.example", h.clock.timestamp)
            answers = [(await bitrix.post("ONTASKUPDATE", i)).status_code for i in range(1, 7)]
            h.clock.advance(seconds=301)
            answers.append((await bitrix.post("ONTASKUPDATE", 99)).status_code)
            task.cancel()
        finally:
            await server.close()
        assert answers == [200] * 7  # Bitrix24 does not resend: the answer stays 200
        assert work.pending == 3 and len(moved) == 2  # once, then again a poll interval later
        assert h.services.metrics.event_overflow._value.get() == 4  # noqa: SLF001


async def test_the_events_token_never_reaches_the_log_or_the_database(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with events_portal(tmp_path) as h:
        await linked(h)
        with caplog.at_level(logging.DEBUG):
            async with h.events() as bitrix:
                await bitrix.post("ONTASKUPDATE", 7)
                await bitrix.post("ONTASKUPDATE", 7, token="x" + EVENTS_TOKEN[1:])
                await h.events_done()
        assert EVENTS_TOKEN not in caplog.text and EVENTS_TOKEN[1:] not in caplog.text
        dump = ""
        for table in ("meta", "outbox", "task_members", "counter_snapshots"):
            dump += "\n".join(str(tuple(r)) for r in await tdb.rows(h.storage, f"SELECT * FROM {table}"))
        assert EVENTS_TOKEN not in dump
        assert EVENTS_TOKEN not in repr(h.settings) and EVENTS_TOKEN not in repr(h.services.events_server_for())


def harness_is_used(h: Harness) -> None:  # keeps the import for type checkers
    assert h
