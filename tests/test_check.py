"""python -m bot check against the fakes: one line per check, exit 1 on any FAIL."""

from __future__ import annotations

from pathlib import Path

from telegram.request import HTTPXRequest

from bot.check import run_check
from tests.fakes.bitrix import FakeBitrix
from tests.fakes.server import mock_transport
from tests.fakes.telegram import FAKE_TOKEN, FakeTelegram
from tests.harness import WEBHOOK_CODE, make_settings


async def check(tmp_path: Path, tg: FakeTelegram, b24: FakeBitrix, **settings: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    status = await run_check(
        make_settings(tmp_path, **settings),
        out=lines.append,
        telegram_request=HTTPXRequest(httpx_kwargs={"transport": tg.transport()}),
        bitrix_transport=mock_transport(b24.handle),
    )
    assert all(FAKE_TOKEN not in line and WEBHOOK_CODE not in line for line in lines)
    return status, lines


def statuses(lines: list[str]) -> dict[str, str]:
    return {line.split()[1].rstrip(":"): line.split()[0] for line in lines}


async def test_healthy_setup_passes_with_warnings_only(tmp_path: Path) -> None:
    b24 = FakeBitrix(webhook_code=WEBHOOK_CODE)
    b24.scopes.add("sonet_group")
    status, lines = await check(
        tmp_path, FakeTelegram(), b24, DEFAULT_TIMEZONE="Europe/Moscow", ADMIN_TELEGRAM_USER_IDS="5",
    )
    assert status == 0
    assert statuses(lines) == {
        "settings": "OK", "telegram": "OK", "bitrix24": "OK", "plan": "OK", "scope": "OK", "task": "OK",
        "team": "WARN", "admin": "OK", "http": "OK", "timezone": "OK", "admins": "WARN",
    }


async def test_a_missing_sonet_group_scope_is_a_warning_naming_project_chats(tmp_path: Path) -> None:
    status, lines = await check(tmp_path, FakeTelegram(), FakeBitrix(webhook_code=WEBHOOK_CODE), ADMIN_TELEGRAM_USER_IDS="5")
    assert status == 0
    assert "WARN projects: the webhook lacks the optional scope sonet_group: project chats stay off" in lines


async def test_every_problem_gets_its_own_fail_line(tmp_path: Path) -> None:
    tg = FakeTelegram()
    tg.token_rejected = True
    b24 = FakeBitrix(webhook_code=WEBHOOK_CODE)
    b24.scopes = {"task"}
    b24.admin = False
    status, lines = await check(tmp_path, tg, b24)
    s = statuses(lines)
    assert status == 1
    assert (s["telegram"], s["scope"], s["admin"], s["timezone"]) == ("FAIL", "FAIL", "FAIL", "WARN")
    assert "im, user" in next(line for line in lines if line.startswith("FAIL scope"))


async def test_revoked_webhook_and_plan_without_rest_fail(tmp_path: Path) -> None:
    b24 = FakeBitrix(webhook_code=WEBHOOK_CODE)
    b24.plan_has_rest = False
    status, lines = await check(tmp_path, FakeTelegram(), b24)
    assert status == 1 and statuses(lines)["plan"] == "FAIL"
    wrong = FakeBitrix(webhook_code="anothercode123")
    status, lines = await check(tmp_path, FakeTelegram(), wrong)
    assert status == 1 and statuses(lines)["bitrix24"] == "FAIL"


async def test_a_portal_that_ignores_the_task_member_filter_fails_the_task_list_check(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    b24 = FakeBitrix(webhook_code=WEBHOOK_CODE)
    b24.add_task(1, "Someone's task", deadline=datetime.now(UTC) - timedelta(days=1), responsible=547)
    status, lines = await check(tmp_path, FakeTelegram(), b24, DEFAULT_TIMEZONE="Europe/Moscow")
    assert "OK task lists: the portal applies the member filter" in lines
    b24.ignored_task_filters = {"MEMBER"}
    status, lines = await check(tmp_path, FakeTelegram(), b24, DEFAULT_TIMEZONE="Europe/Moscow")
    assert status == 1 and "FAIL task lists: member filter ignored, lists off" in lines
    (sent,) = [r for r in b24.requests if r.method == "tasks.task.list"][:1]
    assert str(sent.params["filter"]["MEMBER"]) == "2147483000"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_with_events_on_check_prints_the_port_the_address_and_the_events_to_tick(tmp_path: Path) -> None:
    from tests.harness import EVENTS_TOKEN

    port = _free_port()
    status, lines = await check(
        tmp_path, FakeTelegram(), FakeBitrix(webhook_code=WEBHOOK_CODE), BITRIX24_EVENTS_TOKEN=EVENTS_TOKEN,
        EVENTS_PORT=str(port), EVENTS_PUBLIC_URL="https://bot.corp.example/bitrix24/events",
    )
    assert status == 0
    assert f"OK events: port {port} on 127.0.0.1 is free: the bot will listen on {port}" in lines
    url_line = next(line for line in lines if line.startswith("OK events url:"))
    assert "https://bot.corp.example/bitrix24/events" in url_line
    for name in ("ONTASKADD", "ONTASKUPDATE", "ONTASKDELETE", "ONTASKCOMMENTADD", "ONTASKCOMMENTUPDATE", "ONTASKCOMMENTDELETE"):
        assert name in url_line
    assert "WARN events last: no valid event received yet" in lines
    assert all(EVENTS_TOKEN not in line for line in lines)


async def test_check_warns_about_addresses_bitrix24_cannot_post_to_and_fails_on_a_foreign_listener(tmp_path: Path) -> None:
    import asyncio

    from tests.harness import EVENTS_TOKEN

    for url, why in [
        ("", "EVENTS_PUBLIC_URL is empty"),
        ("http://bot.corp.example/e", "uses http://"),
        ("https://localhost:8443/e", "names localhost"),
        ("https://192.168.1.20/e", "private address 192.168.1.20"),
    ]:
        _, lines = await check(
            tmp_path, FakeTelegram(), FakeBitrix(webhook_code=WEBHOOK_CODE), BITRIX24_EVENTS_TOKEN=EVENTS_TOKEN,
            EVENTS_PORT=str(_free_port()), **({"EVENTS_PUBLIC_URL": url} if url else {}),
        )
        assert any(line.startswith("WARN events url:") and why in line for line in lines), (url, lines)

    async def other_program(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(other_program, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        status, lines = await check(
            tmp_path, FakeTelegram(), FakeBitrix(webhook_code=WEBHOOK_CODE), BITRIX24_EVENTS_TOKEN=EVENTS_TOKEN,
            EVENTS_PORT=str(port),
        )
    finally:
        server.close()
    assert status == 1
    assert f"FAIL events: port {port} on 127.0.0.1 is used by another program (it answered HTTP 200)" in lines


async def test_team_view_check_warns_without_the_scope_and_fails_when_the_department_filter_is_ignored(tmp_path: Path) -> None:
    b24 = FakeBitrix(webhook_code=WEBHOOK_CODE)
    b24.add_user(547, "Anna", "Smith", departments=(2,))
    b24.scopes.add("department")
    status, lines = await check(tmp_path, FakeTelegram(), b24, DEFAULT_TIMEZONE="Europe/Moscow")
    assert "OK team view: the portal applies the department filter" in lines
    (sent,) = [r for r in b24.requests if r.method == "user.get"]
    assert [int(d) for d in sent.params["FILTER"]["UF_DEPARTMENT"]] == [2_000_000_000]
    b24.ignore_department_filter = True
    status, lines = await check(tmp_path, FakeTelegram(), b24, DEFAULT_TIMEZONE="Europe/Moscow")
    assert status == 1 and "FAIL team view: department filter ignored" in lines
    b24.scopes.discard("department")
    status, lines = await check(tmp_path, FakeTelegram(), b24, DEFAULT_TIMEZONE="Europe/Moscow")
    assert "WARN team view: the webhook lacks the scope department: team views stay off until it is added" in lines
    assert statuses(lines)["scope"] == "OK"
    b24.scopes.add("department")
    status, lines = await check(
        tmp_path, FakeTelegram(), b24, DEFAULT_TIMEZONE="Europe/Moscow", LINK_VERIFICATION="none", ALLOWED_TELEGRAM_USER_IDS="5"
    )
    assert "WARN team view: off: with LINK_VERIFICATION=none a false claim would open a whole department" in lines
