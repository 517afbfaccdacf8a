"""Operations: /stats, /healthz and /metrics as an administrator meets them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bot import health
from tests.harness import Harness
from tests.test_linking import ANNA, link


def admin_portal(tmp_path: Path) -> Harness:
    h = Harness(tmp_path, ADMIN_TELEGRAM_USER_IDS="1")
    h.b24.add_user(ANNA, "Anna", "Smith")
    h.b24.set_counters(ANNA, "view_all", expired=1, new_comments=2)
    return h


async def http_request(port: int, method: str, path: str, raw: bytes | None = None) -> tuple[int, bytes]:
    """One request on a real socket, the connection closed after it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw or f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """GET path."""
    return await http_request(port, "GET", path)


async def test_stats_shows_the_figures_to_admins_only(tmp_path: Path) -> None:
    async with admin_portal(tmp_path) as h:
        await link(h, 42)
        await h.poll()
        assert "Only the bot's administrators" in (await h.say(42, "/stats"))[0]
        (text,) = await h.say(1, "/stats")
        assert "Linked users: 1, active: 1" in text
        assert "1 of 1 users read" in text
        assert "Bitrix24 requests in the last hour:" in text and "Users whose counters read as no access: 0" in text


async def test_unknown_commands_get_a_pointer_to_help(tmp_path: Path) -> None:
    async with admin_portal(tmp_path) as h:
        assert "/help" in (await h.say(42, "/frobnicate"))[0]


async def test_healthz_is_503_with_a_reason_until_polling_runs_and_metrics_speak_prometheus(tmp_path: Path) -> None:
    async with admin_portal(tmp_path) as h:
        await link(h, 42)
        await h.poll()
        server = await health.serve(h.app, 0, host="127.0.0.1")
        port = server.port
        try:
            status, body = await http_get(port, "/healthz")
            assert status == 503 and "telegram polling is not running" in json.loads(body)["problems"]
            status, body = await http_get(port, "/metrics")
            text = body.decode()
            assert status == 200
            assert 'bot_bitrix24_requests_total{outcome="ok"}' in text
            assert "bot_poll_cycles_total{result=\"ok\"} 1.0" in text and "bot_linked_users 1.0" in text
            assert (await http_get(port, "/nope"))[0] == 404
            assert (await http_request(port, "POST", "/healthz"))[0] == 405
            assert (await http_request(port, "GET", "/healthz", raw=b"GARBAGE\r\n\r\n"))[0] == 400
        finally:
            await server.close()


async def test_healthz_turns_503_when_the_last_good_poll_is_too_old(tmp_path: Path) -> None:
    async with admin_portal(tmp_path) as h:
        await h.poll()
        ok, info = health.health_status(h.app)
        assert info["last_poll_ok_age_seconds"] == 0
        h.clock.advance(seconds=2 * 300 + 61)
        ok, info = health.health_status(h.app)
        assert not ok and any("no successful poll cycle" in p for p in info["problems"])


async def test_with_events_on_stats_metrics_and_healthz_say_how_events_go(tmp_path: Path) -> None:
    from tests.harness import EVENTS_TOKEN

    h = Harness(tmp_path, ADMIN_TELEGRAM_USER_IDS="1", BITRIX24_EVENTS_TOKEN=EVENTS_TOKEN)
    h.b24.add_user(ANNA, "Anna", "Smith")
    h.b24.set_counters(ANNA, "view_all", expired=0, new_comments=0)
    async with h:
        await link(h, 42)
        await h.poll()
        ok, info = health.health_status(h.app)
        assert "the Bitrix24 events listener is not running" in info["problems"]
        async with h.events() as bitrix:
            ok, info = health.health_status(h.app)
            assert "the Bitrix24 events listener is not running" not in info.get("problems", [])
            await bitrix.post("ONTASKUPDATE", 7)
            await bitrix.post("ONTASKUPDATE", 7, token="wrong-token-0000")
            await h.events_done()
            (text,) = await h.say(1, "/stats")
            assert "Bitrix24 events since start: received 1, rejected 1, refreshes 0; last valid event: 1 s ago" in text  # the 1 s gathering window passed
            server = await health.serve(h.app, 0, host="127.0.0.1")
            try:
                metrics = (await http_get(server.port, "/metrics"))[1].decode()
            finally:
                await server.close()
        assert 'bot_events_received_total{event="ONTASKUPDATE"} 1.0' in metrics
        assert 'bot_events_rejected_total{reason="token"} 1.0' in metrics
        assert "bot_event_to_sent_seconds_count" in metrics and EVENTS_TOKEN not in metrics
