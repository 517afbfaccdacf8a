"""Counter values outside 0..2**31-1 become a typed error for that user and role only (issue item 7)."""

from __future__ import annotations

import pytest

from bot.bitrix import BitrixClient, Counters, LeakyBucket, build_http_client
from bot.errors import BitrixBadAnswerError
from bot.model import ROLES
from tests.bitrix_clock import CODE, WEBHOOK
from tests.fakes.bitrix import FakeBitrix, Scripted, php_parse_query
from tests.fakes.server import mock_transport

INT32_MAX = 2**31 - 1


async def _counters(fake: FakeBitrix, ids: list[int], roles: tuple[str, ...]) -> dict:
    async def no_sleep(seconds: float) -> None:
        return None

    async with build_http_client(transport=mock_transport(fake.handle)) as http:
        client = BitrixClient(WEBHOOK, http, LeakyBucket(), sleep=no_sleep, rng=lambda: 0.5)
        return await client.counters(ids, roles)


@pytest.mark.parametrize("value", [10**20, -1, INT32_MAX + 1, -(2**63)], ids=["1e20", "negative", "2^31", "-2^63"])
async def test_a_counter_out_of_range_fails_only_that_users_cell(value):
    fake = FakeBitrix(webhook_code=CODE)
    for bitrix_user_id in (100, 101, 102):
        fake.set_counters(bitrix_user_id, "view_all", expired=1, new_comments=2, total=3)
    fake.set_counters(101, "view_all", expired=value, new_comments=2, total=3)
    result = await _counters(fake, [100, 101, 102], ("view_all",))
    cell = result[101]["view_all"]
    assert isinstance(cell, BitrixBadAnswerError)
    assert (cell.code, cell.method) == ("COUNTER_OUT_OF_RANGE", "tasks.task.counters.get")
    assert result[100]["view_all"] == Counters({"expired": 1, "new_comments": 2, "total": 3})
    assert result[102]["view_all"] == Counters({"expired": 1, "new_comments": 2, "total": 3})
    # One batch carried all three users; nothing was retried because of the bad value.
    batches = [r for r in fake.requests if r.method == "batch"]
    assert len(batches) == 1
    assert sorted(php_parse_query(c.partition("?")[2])["userId"] for c in batches[0].params["cmd"].values()) == [
        "100", "101", "102",
    ]


async def test_the_edges_of_the_range_are_kept():
    fake = FakeBitrix(webhook_code=CODE)
    fake.set_counters(100, "view_all", expired=0, new_comments=INT32_MAX)
    result = await _counters(fake, [100], ("view_all",))
    assert result[100]["view_all"] == Counters({"expired": 0, "new_comments": INT32_MAX})


async def test_an_out_of_range_role_leaves_the_users_other_roles_alone():
    fake = FakeBitrix(webhook_code=CODE)
    for role in ROLES:
        fake.set_counters(100, role, expired=1, new_comments=0)
    fake.set_counters(100, "view_role_auditor", expired=1, new_comments=10**20)
    result = await _counters(fake, [100], ROLES)
    assert isinstance(result[100]["view_role_auditor"], BitrixBadAnswerError)
    assert all(result[100][role] == Counters({"expired": 1, "new_comments": 0}) for role in ROLES if role != "view_role_auditor")


@pytest.mark.parametrize("raw", [1e20, "100000000000000000000", -3.0, "-1"], ids=["float", "string", "neg float", "neg string"])
async def test_out_of_range_numbers_in_any_json_form_are_caught(raw):
    fake = FakeBitrix(webhook_code=CODE)
    inner = {
        "result": {"u5_0": {"expired": {"counter": raw, "code": 6291456}}, "u6_0": {"expired": {"counter": 4}}},
        "result_error": [], "result_total": [], "result_next": [], "result_time": [],
    }
    fake.push(Scripted(status=200, json={"result": inner, "time": {"duration": 0.1}}))
    result = await _counters(fake, [5, 6], ("view_all",))
    assert isinstance(result[5]["view_all"], BitrixBadAnswerError)
    assert result[5]["view_all"].code == "COUNTER_OUT_OF_RANGE"
    assert result[6]["view_all"] == Counters({"expired": 4})
