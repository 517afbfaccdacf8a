"""Tests for bot.bitrix against FakeBitrix through httpx's MockTransport (no real sleeping)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import certifi
import httpx
import pytest

from bot.bitrix import (
    COUNTERS_IN_FLIGHT,
    NO_ACCESS,
    BitrixClient,
    BitrixUser,
    Counters,
    LeakyBucket,
    build_http_client,
    normalize_webhook_url,
    php_query,
    redact,
)
from bot.errors import (
    BitrixAuthError,
    BitrixBadAnswerError,
    BitrixError,
    BitrixMethodError,
    BitrixPermissionError,
    BitrixPlanError,
    BitrixPortalGoneError,
    BitrixRateLimitedError,
    BitrixScopeError,
    BitrixTimeBudgetError,
    BitrixTransientError,
)
from bot.model import ROLES
from tests.bitrix_clock import CODE, COUNTERS, T0, WEBHOOK, FakeClock, client_for
from tests.fakes.bitrix import FakeBitrix, Scripted, batch_with_user, php_parse_query
from tests.fakes.server import LoopbackServer


def make_client(
    fake: FakeBitrix,
    clock: FakeClock,
    http: httpx.AsyncClient,
    bucket: LeakyBucket | None = None,
    **kwargs: Any,
) -> BitrixClient:
    return client_for(http, clock, bucket, **kwargs)


@pytest.fixture
def client(fake: FakeBitrix, clock: FakeClock, http: httpx.AsyncClient) -> BitrixClient:
    return make_client(fake, clock, http)


def add_users(fake: FakeBitrix, count: int, roles: tuple[str, ...] = ("view_all",)) -> list[int]:
    ids = list(range(100, 100 + count))
    for bitrix_user_id in ids:
        fake.add_user(bitrix_user_id, email=f"u{bitrix_user_id}@corp.example")
        for role in roles:
            fake.set_counters(bitrix_user_id, role, expired=bitrix_user_id % 7, new_comments=1, total=bitrix_user_id % 7 + 1)
    return ids


# -- webhook URL, redaction, query encoding -----------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"https://corp.bitrix24.com/rest/1/{CODE}/", f"https://corp.bitrix24.com/rest/1/{CODE}/"),
        (f"https://corp.bitrix24.com/rest/1/{CODE}", f"https://corp.bitrix24.com/rest/1/{CODE}/"),
        (f"  https://Corp.Bitrix24.COM/rest/1/{CODE}/profile.json ", f"https://corp.bitrix24.com/rest/1/{CODE}/"),
        (f"https://corp.bitrix24.com/rest/1/{CODE}/user.current", f"https://corp.bitrix24.com/rest/1/{CODE}/"),
        (f"https://corp.bitrix24.com/rest/1/{CODE}/user.current/", f"https://corp.bitrix24.com/rest/1/{CODE}/"),
        (f"http://b24.intranet:8080/rest/547/{CODE}/", f"http://b24.intranet:8080/rest/547/{CODE}/"),
        (f"HTTPS://corp.example/rest/12/{CODE}/", f"https://corp.example/rest/12/{CODE}/"),
    ],
)
def test_webhook_urls_are_normalised_to_their_base(raw, expected):
    assert normalize_webhook_url(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "corp.bitrix24.com",
        f"ftp://corp.bitrix24.com/rest/1/{CODE}/",
        f"https:///rest/1/{CODE}/",
        f"https://corp.bitrix24.com/rest/x/{CODE}/",
        f"https://corp.bitrix24.com/rest/1/{CODE}/profile.json/extra/",
        f"https://corp.bitrix24.com/api/1/{CODE}/",
        f"https://corp.bitrix24.com/rest/1/{CODE}/?auth=1",
        f"https://admin:pw@corp.bitrix24.com/rest/1/{CODE}/",
        f"https://corp.bitrix24.com:99999/rest/1/{CODE}/",
        "https://corp.bitrix24.com/rest/1/",
    ],
)
def test_malformed_webhook_urls_are_refused_without_echoing_the_code(raw):
    with pytest.raises(ValueError) as info:
        normalize_webhook_url(raw)
    assert CODE not in str(info.value)
    assert "/rest/<user id>/<webhook code>/" in str(info.value)


def test_redact_hides_every_webhook_code_in_a_text():
    text = f'POST https://a.test/rest/1/{CODE}/profile.json and "http://b.test/rest/77/{CODE}"'
    cleaned = redact(text)
    assert CODE not in cleaned
    assert "https://a.test/rest/1/<redacted>/profile.json" in cleaned
    assert "http://b.test/rest/77/<redacted>" in cleaned
    assert redact("https://a.test/rest/user.get") == "https://a.test/rest/user.get"


def test_php_query_encodes_nested_arrays_like_http_build_query():
    query = php_query({"FILTER": {"ID": [5, 6], "ACTIVE": True, "EMAIL": "a+b@c.d"}, "start": 0, "skip": None})
    assert query == (
        "FILTER%5BID%5D%5B0%5D=5&FILTER%5BID%5D%5B1%5D=6&FILTER%5BACTIVE%5D=1&FILTER%5BEMAIL%5D=a%2Bb%40c.d&start=0"
    )
    assert php_parse_query(query)["FILTER"]["EMAIL"] == "a+b@c.d"


async def test_the_http_client_has_the_spec_timeouts_no_redirects_and_takes_an_extra_ca_file():
    for ca_file in (certifi.where(), None):
        async with build_http_client(ca_file=ca_file) as client:
            assert client.timeout == httpx.Timeout(70.0, connect=10.0)
            assert client.follow_redirects is False


def test_a_missing_ca_file_fails_loudly():
    with pytest.raises(OSError):
        build_http_client(ca_file="/nonexistent/ca.pem")


async def test_the_client_repr_hides_the_webhook_code(http):
    client = BitrixClient(WEBHOOK, http, LeakyBucket())
    assert CODE not in repr(client)
    assert "/rest/1/<redacted>/" in repr(client)


# -- simple calls --------------------------------------------------------------------


async def test_call_posts_json_to_the_method_url_and_returns_the_result(client, fake):
    profile = await client.profile()
    assert profile["ADMIN"] is True
    assert fake.requests[-1].method == "profile"
    assert client.stats.requests_total == 1
    assert client.stats.outcomes == {"ok": 1}


async def test_user_current_and_scopes_are_read(client, fake):
    fake.add_user(1, name="Olga", last_name="Ivanova", email="olga@corp.example", time_zone="Europe/Moscow")
    fake.scopes = {"task", "user", "im"}
    user = await client.user_current()
    assert user == BitrixUser(1, "Olga", "Ivanova", "olga@corp.example", True, "Europe/Moscow", None, frozenset({1}))
    assert user.full_name == "Olga Ivanova"
    assert await client.scopes() == {"task", "user", "im"}


async def test_notify_sends_user_id_and_message(client, fake):
    await client.notify(547, "Your code is 123456")
    assert fake.notifications == [(547, "Your code is 123456")]
    assert fake.requests[-1].params == {"USER_ID": 547, "MESSAGE": "Your code is 123456"}


async def test_notify_with_an_empty_message_is_a_method_error(client, fake):
    with pytest.raises(BitrixMethodError) as info:
        await client.notify(547, "   ")
    assert info.value.code == "MESSAGE_EMPTY"


async def test_a_wrong_webhook_code_is_an_auth_error_after_one_request(fake, clock, http):
    client = BitrixClient(
        "https://corp.bitrix24.test/rest/1/wrongcode/", http, LeakyBucket(monotonic=clock.now, sleep=clock.sleep),
        wall=clock.now, monotonic=clock.now, sleep=clock.sleep,
    )
    with pytest.raises(BitrixAuthError) as info:
        await client.profile()
    assert info.value.code == "NO_AUTH_FOUND"
    assert info.value.http_status == 401
    assert len(fake.requests) == 1


async def test_an_unknown_method_is_a_method_error(client, fake):
    with pytest.raises(BitrixMethodError) as info:
        await client.call("tasks.nothing.here")
    assert (info.value.code, info.value.http_status) == ("ERROR_METHOD_NOT_FOUND", 404)


async def test_a_plan_without_rest_is_a_plan_error(client, fake):
    fake.plan_has_rest = False
    with pytest.raises(BitrixPlanError):
        await client.profile()
    assert len(fake.requests) == 1


async def test_a_missing_scope_is_a_scope_error_and_not_retried(client, fake):
    fake.scopes = {"user", "im"}
    with pytest.raises(BitrixScopeError):
        await client.call(COUNTERS, {"userId": 1})
    assert len(fake.requests) == 1


# -- every failure -> its typed error --------------------------------------------------

FAILURES = [
    # (id, scripted answer, error class, code, retried)
    ("503 query limit", Scripted.error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"), BitrixRateLimitedError, "QUERY_LIMIT_EXCEEDED", True),
    ("500 internal", Scripted.error(500, "INTERNAL_SERVER_ERROR", "Internal server error"), BitrixTransientError, "INTERNAL_SERVER_ERROR", True),
    ("500 unexpected answer", Scripted.error(500, "ERROR_UNEXPECTED_ANSWER"), BitrixTransientError, "ERROR_UNEXPECTED_ANSWER", True),
    ("502 unknown json code", Scripted.error(502, "SOMETHING_ODD"), BitrixTransientError, "SOMETHING_ODD", True),
    ("502 html", Scripted.html(502), BitrixTransientError, "HTTP_502", True),
    ("504 empty", Scripted.empty(504), BitrixTransientError, "HTTP_504", True),
    ("503 html", Scripted.html(503), BitrixTransientError, "HTTP_503", True),
    ("200 html", Scripted.html(200), BitrixBadAnswerError, "NON_JSON_BODY", True),
    ("403 html", Scripted.html(403), BitrixBadAnswerError, "NON_JSON_BODY", True),
    ("200 empty", Scripted.empty(200), BitrixBadAnswerError, "EMPTY_BODY", True),
    ("200 json list", Scripted(status=200, json=[1, 2]), BitrixBadAnswerError, "NOT_A_JSON_OBJECT", True),
    ("200 no result", Scripted(status=200, json={"time": {}}), BitrixBadAnswerError, "NO_RESULT", True),
    ("302 redirect", Scripted.redirect(), BitrixBadAnswerError, "HTTP_REDIRECT", True),
    ("301 redirect to https", Scripted.redirect(f"https://corp.bitrix24.test/rest/1/{CODE}/profile", 301), BitrixBadAnswerError, "HTTP_REDIRECT", True),
    ("connection drop", Scripted.connect_error(), BitrixTransientError, "CONNECT_ERROR", True),
    ("read timeout", Scripted.read_timeout(), BitrixTransientError, "TIMEOUT", True),
    ("401 no auth", Scripted.error(401, "NO_AUTH_FOUND", "Wrong authorization data"), BitrixAuthError, "NO_AUTH_FOUND", False),
    ("401 expired", Scripted.error(401, "expired_token"), BitrixAuthError, "expired_token", False),
    ("401 authorization_error", Scripted.error(401, "authorization_error"), BitrixAuthError, "authorization_error", False),
    ("403 access denied", Scripted.error(403, "ACCESS_DENIED", "REST API is available only on commercial plans"), BitrixPlanError, "ACCESS_DENIED", False),
    ("503 overload limit", Scripted.error(503, "OVERLOAD_LIMIT"), BitrixPlanError, "OVERLOAD_LIMIT", False),
    ("403 insufficient scope", Scripted.error(403, "insufficient_scope"), BitrixScopeError, "insufficient_scope", False),
    ("403 invalid credentials", Scripted.error(403, "INVALID_CREDENTIALS"), BitrixPermissionError, "INVALID_CREDENTIALS", False),
    ("400 https required", Scripted.error(400, "INVALID_REQUEST", "Https required"), BitrixPermissionError, "INVALID_REQUEST", False),
    ("500 portal deleted", Scripted.error(500, "PORTAL_DELETED"), BitrixPortalGoneError, "PORTAL_DELETED", False),
    ("410 portal deleted", Scripted.error(410, "PORTAL_DELETED"), BitrixPortalGoneError, "PORTAL_DELETED", False),
    ("404 method not found", Scripted.error(404, "ERROR_METHOD_NOT_FOUND"), BitrixMethodError, "ERROR_METHOD_NOT_FOUND", False),
    ("400 error 0", Scripted.error(400, "0", "Invalid value x to match with parameter {userId}"), BitrixMethodError, "0", False),
    ("429 operation time limit", Scripted.error(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit."), BitrixTimeBudgetError, "OPERATION_TIME_LIMIT", False),
]


@pytest.mark.parametrize(("answer", "cls", "code", "retried"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
async def test_each_failure_answer_raises_its_typed_error(client, fake, clock, answer, cls, code, retried):
    fake.push(answer, times=5)
    with pytest.raises(BitrixError) as info:
        await client.call(COUNTERS, {"userId": 5, "type": "view_all"})
    err = info.value
    assert type(err) is cls
    assert err.code == code
    assert err.method == COUNTERS
    assert len(fake.requests) == (5 if retried else 1)
    assert len(clock.sleeps) == (4 if retried else 0)
    assert CODE not in str(err) and CODE not in repr(err)


@pytest.mark.parametrize(
    "answer",
    [
        Scripted.error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"),
        Scripted.error(500, "INTERNAL_SERVER_ERROR"),
        Scripted.html(200),
        Scripted.html(502),
        Scripted.empty(200),
        Scripted.connect_error(),
        Scripted.read_timeout(),
        Scripted.redirect(),
    ],
    ids=["503", "500", "html", "html 502", "empty", "connect error", "timeout", "redirect"],
)
async def test_a_transient_failure_then_success_returns_the_result_after_one_backoff(client, fake, clock, answer):
    fake.push(answer)
    assert (await client.profile())["ADMIN"] is True
    assert len(fake.requests) == 2
    assert clock.sleeps == [1.0]  # base 1 s x (0.5 + rng 0.5)
    assert client.stats.retries == 1
    assert client.stats.requests_total == 2
    assert client.stats.outcomes["ok"] == 1


async def test_backoff_grows_exponentially_with_jitter(fake, clock, http):
    rolls = iter([0.0, 1.0, 0.25, 0.75])
    client = BitrixClient(
        WEBHOOK, http, LeakyBucket(monotonic=clock.now, sleep=clock.sleep),
        monotonic=clock.now, wall=clock.now, sleep=clock.sleep, rng=lambda: next(rolls),
    )
    fake.push(Scripted.error(500, "INTERNAL_SERVER_ERROR"), times=4)
    await client.profile()
    assert clock.sleeps == [0.5, 3.0, 3.0, 10.0]  # 1*0.5, 2*1.5, 4*0.75, 8*1.25


async def test_retries_stop_at_the_total_retry_time_limit(fake, clock, http):
    client = make_client(fake, clock, http, max_retry_seconds=5.0)
    fake.push(Scripted.error(503, "QUERY_LIMIT_EXCEEDED"), times=5)
    with pytest.raises(BitrixRateLimitedError):
        await client.profile()
    assert clock.sleeps == [1.0, 2.0]  # the next 4 s would pass 5 s in total
    assert len(fake.requests) == 3


async def test_retries_stop_at_max_attempts(fake, clock, http):
    client = make_client(fake, clock, http, max_attempts=2)
    fake.push(Scripted.error(500, "INTERNAL_SERVER_ERROR"), times=5)
    with pytest.raises(BitrixTransientError):
        await client.profile()
    assert len(fake.requests) == 2


async def test_a_503_counts_in_stats_and_fills_the_client_bucket(client, fake, clock):
    fake.push(Scripted.error(503, "QUERY_LIMIT_EXCEEDED"))
    await client.profile()
    assert client.stats.http_503 == 1
    assert client.stats.outcomes == {"rate_limited": 1, "ok": 1}
    assert client._bucket.level >= 48  # saturated, then one more request after a 1 s drain


@pytest.mark.parametrize(
    ("answer", "cls"),
    [
        (Scripted.error(401, "NO_AUTH_FOUND"), BitrixAuthError),
        (Scripted.error(403, "ACCESS_DENIED"), BitrixPlanError),
        (Scripted.error(403, "insufficient_scope"), BitrixScopeError),
    ],
    ids=["401", "403 access denied", "insufficient scope"],
)
async def test_permanent_errors_are_never_retried(client, fake, clock, answer, cls):
    fake.push(answer, times=3)
    with pytest.raises(cls):
        await client.profile()
    assert len(fake.requests) == 1
    assert clock.sleeps == []


async def test_a_notification_is_not_repeated_when_it_may_have_been_sent(client, fake, clock):
    fake.push(Scripted.error(500, "INTERNAL_SERVER_ERROR"), times=3)
    with pytest.raises(BitrixTransientError):
        await client.notify(5, "hello")
    assert len(fake.requests) == 1


async def test_a_notification_is_repeated_when_it_certainly_did_not_run(client, fake):
    fake.push(Scripted.connect_error(), Scripted.error(503, "QUERY_LIMIT_EXCEEDED"))
    await client.notify(5, "hello")
    assert fake.notifications == [(5, "hello")]
    assert len(fake.requests) == 3


async def test_a_delayed_answer_is_still_read(client, fake):
    fake.push(Scripted(delay=0.01))
    assert (await client.profile())["ADMIN"] is True


# -- time budget -------------------------------------------------------------------------


async def test_operation_time_limit_raises_with_retry_after_from_the_last_reset_time(client, fake, clock):
    fake.method_seconds["profile"] = 10.0
    fake.operating_limit = 15.0
    await client.profile()
    clock.t += 30
    await client.profile()
    last = client.last_operating("profile")
    assert last is not None and last.operating == 20.0 and last.reset_at == T0 + 600
    clock.t += 30
    with pytest.raises(BitrixTimeBudgetError) as info:
        await client.profile()
    assert info.value.http_status == 429
    assert info.value.retry_after == pytest.approx(T0 + 600 - clock.t)
    assert client.stats.http_429 == 1
    requests = len(fake.requests)
    clock.t += 100
    with pytest.raises(BitrixTimeBudgetError) as again:
        await client.profile()
    assert len(fake.requests) == requests  # refused without a request
    assert again.value.retry_after == pytest.approx(T0 + 600 - clock.t)
    assert (await client.scopes()) == {"task", "user", "im"}  # other methods are unaffected
    clock.t = T0 + 601
    assert (await client.profile())["ADMIN"] is True


async def test_operation_time_limit_without_a_known_reset_time_blocks_for_600_seconds(client, fake, clock):
    fake.cloud_time = False
    fake.push(Scripted.error(429, "OPERATION_TIME_LIMIT"))
    with pytest.raises(BitrixTimeBudgetError) as info:
        await client.profile()
    assert info.value.retry_after == 600.0
    clock.t += 599
    with pytest.raises(BitrixTimeBudgetError):
        await client.profile()
    assert len(fake.requests) == 1
    clock.t += 2
    await client.profile()


async def test_a_reset_time_in_the_past_falls_back_to_600_seconds(client, fake, clock):
    await client.profile()  # reset_at = T0 + 600
    clock.t += 700
    fake.cloud_time = False
    fake.push(Scripted.error(429, "OPERATION_TIME_LIMIT"))
    with pytest.raises(BitrixTimeBudgetError) as info:
        await client.profile()
    assert info.value.retry_after == 600.0


async def test_a_time_limit_inside_a_batch_blocks_the_sub_method_and_stops_the_cycle(client, fake, clock):
    ids = add_users(fake, 300)
    fake.method_seconds[COUNTERS] = 1.0
    fake.operating_limit = 30.0
    result = await client.counters(ids, ("view_all",))
    first = [result[i]["view_all"] for i in ids[:50]]
    assert all(isinstance(c, Counters) for c in first[:31])
    assert all(isinstance(c, BitrixTimeBudgetError) for c in first[31:])
    rest = [result[i]["view_all"] for i in ids[50:]]
    assert all(isinstance(c, BitrixTimeBudgetError) and c.retry_after == pytest.approx(600.0) for c in rest)
    # Batches already in flight run; the later ones are refused without a request.
    assert fake.request_count("batch") == COUNTERS_IN_FLIGHT
    assert client.method_time_used(COUNTERS) == pytest.approx(31.0)
    with pytest.raises(BitrixTimeBudgetError):
        await client.batch({"a": (COUNTERS, {"userId": 100})})
    assert fake.request_count("batch") == COUNTERS_IN_FLIGHT
    assert client.method_time_used(COUNTERS, now=clock.t + 601) == 0.0


async def test_a_whole_batch_429_blocks_its_sub_method_without_further_requests(client, fake, clock):
    ids = add_users(fake, 120)
    fake.push(Scripted.error(429, "OPERATION_TIME_LIMIT").only_for(batch_with_user(100)))
    result = await client.counters(ids, ("view_all",))
    assert all(isinstance(result[uid]["view_all"], BitrixTimeBudgetError) for uid in ids[:50])
    assert client.blocked_until(COUNTERS) == pytest.approx(clock.t + 600)
    assert client.stats.http_429 == 1
    sent = fake.request_count("batch")
    again = await client.counters(ids, ("view_all",))
    assert all(isinstance(c["view_all"], BitrixTimeBudgetError) for c in again.values())
    assert fake.request_count("batch") == sent


async def test_method_time_used_sums_durations_over_a_sliding_ten_minutes(client, fake, clock):
    fake.method_seconds[COUNTERS] = 2.0
    await client.call(COUNTERS, {"userId": 1})
    clock.t += 300
    await client.batch({"a": (COUNTERS, {"userId": 1}), "b": (COUNTERS, {"userId": 2})})
    assert client.method_time_used(COUNTERS) == pytest.approx(6.0)
    assert client.method_time_used("batch") == 0.0  # the outer batch is not counted
    clock.t += 301
    assert client.method_time_used(COUNTERS) == pytest.approx(4.0)
    clock.t += 300
    assert client.method_time_used(COUNTERS) == 0.0


# -- batch and counters -------------------------------------------------------------------


def batch_requests(fake: FakeBitrix) -> list[dict[str, str]]:
    return [r.params["cmd"] for r in fake.requests if r.method == "batch"]


async def test_120_users_of_one_role_take_exactly_three_requests(client, fake):
    ids = add_users(fake, 120)
    result = await client.counters(ids, ("view_all",))
    assert len(fake.requests) == 3
    assert sorted(len(cmd) for cmd in batch_requests(fake)) == [20, 50, 50]
    assert all(r.params["halt"] == 0 for r in fake.requests)
    assert result[105]["view_all"] == Counters({"expired": 105 % 7, "new_comments": 1, "total": 105 % 7 + 1})


async def test_12_users_of_all_five_roles_take_two_requests_with_each_users_roles_together(client, fake):
    ids = add_users(fake, 12, ROLES)
    result = await client.counters(ids)
    assert len(fake.requests) == 2
    seen: dict[str, set[int]] = {}
    for number, cmd in enumerate(batch_requests(fake)):
        for command in cmd.values():
            method, _, query = command.partition("?")
            assert method == COUNTERS
            seen.setdefault(php_parse_query(query)["userId"], set()).add(number)
    assert len(seen) == 12
    assert all(len(batches) == 1 for batches in seen.values())
    assert sorted(len(cmd) for cmd in batch_requests(fake)) == [10, 50]
    assert set(result[111]) == set(ROLES)
    assert all(isinstance(c, Counters) for roles in result.values() for c in roles.values())


async def test_per_command_errors_land_on_the_right_user_and_role(client, fake):
    ids = add_users(fake, 12, ROLES)
    fake.counter_errors[(107, "view_role_auditor")] = ("0", "Group not found or access denied. (internal error)")
    result = await client.counters(ids)
    assert isinstance(result[107]["view_role_auditor"], BitrixMethodError)
    assert result[107]["view_role_auditor"].code == "0"
    assert isinstance(result[107]["view_all"], Counters)
    assert all(
        isinstance(cell, Counters)
        for uid, roles in result.items()
        for role, cell in roles.items()
        if (uid, role) != (107, "view_role_auditor")
    )


async def test_an_empty_list_result_is_no_access_and_differs_from_zero_counters(client, fake):
    fake.add_user(200)
    fake.set_counters(200, "view_all", expired=0, new_comments=0, total=0)
    result = await client.counters([200, 201], ("view_all",))
    assert result[200]["view_all"] == Counters({"expired": 0, "new_comments": 0, "total": 0})
    assert result[201]["view_all"] is NO_ACCESS
    assert result[200]["view_all"] != NO_ACCESS


async def test_a_webhook_of_a_non_admin_gets_no_access_to_others_but_its_own_counters(client, fake):
    fake.admin = False
    fake.set_counters(1, "view_all", expired=2)
    fake.set_counters(2, "view_all", expired=3)
    result = await client.counters([1, 2], ("view_all",))
    assert result[1]["view_all"] == Counters({"expired": 2})
    assert result[2]["view_all"] is NO_ACCESS


async def test_unknown_counter_names_are_kept(client, fake):
    fake.set_counters(300, "view_all", expired=1, wo_deadline=4, expired_soon=2, total=7)
    result = await client.counters([300], ("view_all",))
    assert result[300]["view_all"].values == {"expired": 1, "wo_deadline": 4, "expired_soon": 2, "total": 7}


async def test_counter_values_are_coerced_and_odd_items_skipped(client, fake):
    fake.push(
        Scripted(
            status=200,
            json={
                "result": {
                    "result": {
                        "u5_0": {
                            "expired": {"counter": "3", "code": 6291456},
                            "new_comments": {"counter": 2.0, "code": 12582912},
                            "total": {"counter": None, "code": ""},
                            "weird": 5,
                            "flag": {"counter": True},
                        }
                    },
                    "result_error": [],
                    "result_total": [],
                    "result_next": [],
                    "result_time": [],
                },
                "time": {"duration": 0.1},
            },
        )
    )
    result = await client.counters([5], ("view_all",))
    assert result[5]["view_all"] == Counters({"expired": 3, "new_comments": 2})


async def test_empty_maps_sent_as_lists_are_accepted(client, fake):
    fake.push(
        Scripted(
            status=200,
            json={
                "result": {"result": [], "result_error": [], "result_total": [], "result_next": [], "result_time": []},
                "time": {"duration": 0.1},
            },
        )
    )
    batch = await client.batch({"a": ("profile", {})})
    assert (batch.results, batch.errors, batch.times) == ({}, {}, {})
    fake.push(Scripted(status=200, json={"result": [], "time": {}}))
    result = await client.counters([5], ("view_all",))
    assert isinstance(result[5]["view_all"], BitrixBadAnswerError)
    assert result[5]["view_all"].code == "MISSING_RESULT"


async def test_a_batch_without_errors_really_gets_empty_lists_from_the_fake(client, fake):
    fake.set_counters(5, "view_all", expired=1)
    batch = await client.batch({"a": (COUNTERS, {"userId": 5, "type": "view_all"})})
    assert batch.errors == {}
    assert batch.results["a"]["expired"]["counter"] == 1
    assert batch.times["a"] == pytest.approx(0.001)
    response = fake.handle(
        httpx.Request("POST", f"{WEBHOOK}batch", json={"halt": 0, "cmd": {"a": "profile"}})
    )
    body = response.json()["result"]
    assert body["result_error"] == [] and body["result_total"] == [] and body["result_next"] == []


async def test_batch_splits_into_chunks_of_50_and_merges(client, fake):
    commands = {f"k{i}": ("profile", {}) for i in range(120)}
    batch = await client.batch(commands)
    assert len(batch.results) == 120
    assert [len(c) for c in batch_requests(fake)] == [50, 50, 20]


async def test_batch_errors_from_the_fake_are_typed(client, fake):
    batch = await client.batch({"nested": ("batch", {"cmd": {"x": "profile"}}), "ok": ("scope", {})})
    assert isinstance(batch.errors["nested"], BitrixMethodError)
    assert batch.errors["nested"].code == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    assert batch.errors["nested"].method == "batch"
    assert batch.results["ok"] == ["im", "task", "user"]


def test_the_fake_rejects_commands_beyond_the_50th():
    fake = FakeBitrix(webhook_code=CODE)
    cmd = {f"k{i}": "scope" for i in range(52)}
    response = fake.handle(httpx.Request("POST", f"{WEBHOOK}batch", json={"halt": 0, "cmd": cmd}))
    body = response.json()["result"]
    assert len(body["result"]) == 50
    assert {e["error"] for e in body["result_error"].values()} == {"ERROR_BATCH_LENGTH_EXCEEDED"}
    assert set(body["result_error"]) == {"k50", "k51"}


async def test_a_whole_batch_failure_after_retries_hits_only_that_batchs_users(client, fake, clock):
    ids = add_users(fake, 150)
    fake.push(Scripted.error(500, "INTERNAL_SERVER_ERROR").only_for(batch_with_user(160)), times=5)
    result = await client.counters(ids, ("view_all",))
    failed = {uid for uid in ids if isinstance(result[uid]["view_all"], BitrixTransientError)}
    assert failed == set(ids[50:100])
    assert all(isinstance(result[uid]["view_all"], Counters) for uid in ids if uid not in failed)
    assert fake.request_count("batch") == 3 + 4


async def test_an_auth_failure_stops_the_remaining_batches(client, fake):
    ids = add_users(fake, 300)
    fake.push(Scripted.error(401, "NO_AUTH_FOUND").only_for(batch_with_user(100)))
    result = await client.counters(ids, ("view_all",))
    in_flight = ids[: 50 * COUNTERS_IN_FLIGHT]
    assert all(isinstance(result[uid]["view_all"], BitrixAuthError) for uid in ids[:50])
    assert all(isinstance(result[uid]["view_all"], Counters) for uid in in_flight[50:])
    assert all(isinstance(result[uid]["view_all"], BitrixAuthError) for uid in ids[len(in_flight) :])
    assert fake.request_count("batch") == COUNTERS_IN_FLIGHT


async def test_counters_of_no_users_makes_no_request(client, fake):
    assert await client.counters([]) == {}
    assert fake.requests == []


# -- users -------------------------------------------------------------------------------


async def test_users_by_ids_returns_only_active_users_that_were_asked_for(client, fake):
    fake.add_user(10, name="Ann")
    fake.add_user(11, active=False)
    fake.add_user(12)
    found = await client.users_by_ids([10, 11, 99])
    assert set(found) == {10}
    assert found[10].first_name == "Ann"
    assert fake.requests[-1].params == {"FILTER": {"ID": [10, 11, 99], "ACTIVE": True}}


async def test_users_by_ids_checks_what_came_back(client, fake):
    fake.push(
        Scripted(
            status=200,
            json={
                "result": [
                    {"ID": "10", "ACTIVE": True, "NAME": "A", "EMAIL": "a@x"},
                    {"ID": "11", "ACTIVE": "N", "NAME": "B"},
                    {"ID": "77", "ACTIVE": True, "NAME": "Not asked"},
                    {"NAME": "no id"},
                    "junk",
                ],
                "total": 5,
            },
        )
    )
    found = await client.users_by_ids([10, 11])
    assert set(found) == {10}


async def test_users_by_ids_asks_50_per_request(client, fake):
    for i in range(1, 121):
        fake.add_user(i)
    found = await client.users_by_ids(list(range(1, 121)))
    assert len(found) == 120
    assert len(fake.requests) == 3


async def test_user_by_id_returns_none_for_inactive_or_unknown(client, fake):
    fake.add_user(10)
    fake.add_user(11, active=False)
    assert (await client.user_by_id(10)).bitrix_user_id == 10
    assert await client.user_by_id(11) is None
    assert await client.user_by_id(12) is None


async def test_user_by_email_matches_one_active_user_case_insensitively(client, fake):
    fake.add_user(10, email="Anna@Corp.example")
    fake.add_user(11, email="boris@corp.example")
    user = await client.user_by_email("anna@corp.EXAMPLE")
    assert user is not None and user.bitrix_user_id == 10
    assert await client.user_by_email("nobody@corp.example") is None


async def test_user_by_email_with_the_filter_dropped_picks_only_an_exact_single_match(client, fake):
    fake.scopes = {"task", "user_basic", "im"}  # EMAIL filter is silently dropped: everyone comes back
    fake.add_user(10, email="anna@corp.example")
    fake.add_user(11, email="boris@corp.example")
    fake.add_user(12, email="old@corp.example", active=False)
    assert (await client.user_by_email("anna@corp.example")).bitrix_user_id == 10
    assert await client.user_by_email("nobody@corp.example") is None
    assert await client.user_by_email("old@corp.example") is None
    fake.add_user(13, email="ANNA@corp.example")
    assert await client.user_by_email("anna@corp.example") is None  # ambiguous


async def test_user_by_email_under_user_brief_finds_nobody(client, fake):
    fake.scopes = {"task", "user_brief", "im"}  # no EMAIL at all
    fake.add_user(10, email="anna@corp.example")
    assert await client.user_by_email("anna@corp.example") is None


async def test_user_by_email_ignores_an_inactive_user_with_the_same_email(client, fake):
    fake.push(
        Scripted(
            status=200,
            json={
                "result": [
                    {"ID": "10", "ACTIVE": False, "EMAIL": "a@corp.example"},
                    {"ID": "11", "ACTIVE": True, "EMAIL": "A@corp.example"},
                ]
            },
        )
    )
    assert (await client.user_by_email("a@corp.example")).bitrix_user_id == 11


def test_the_fake_reads_active_as_bool_or_y_n_like_the_server():
    fake = FakeBitrix(webhook_code=CODE)
    fake.add_user(10)
    fake.add_user(11, active=False)

    def ids(active: Any) -> list[str]:
        req = httpx.Request("POST", f"{WEBHOOK}user.get", json={"FILTER": {"ACTIVE": active}})
        return [u["ID"] for u in fake.handle(req).json()["result"]]

    assert ids(True) == ids("Y") == ["10"]
    assert ids(False) == ids("N") == ["11"]
    assert ids("false") == ["10"]  # the string "false" counts as active


# -- the bucket ------------------------------------------------------------------------


async def test_the_bucket_lets_a_burst_through_then_paces_at_the_rate():
    clock = FakeClock(0.0)
    bucket = LeakyBucket(2.0, 50, monotonic=clock.now, sleep=clock.sleep)
    for _ in range(49):
        await bucket.acquire()
    assert clock.t == 0.0
    await bucket.acquire()
    assert clock.t == pytest.approx(1 / 1.96)
    for _ in range(98):
        await bucket.acquire()
    assert clock.t == pytest.approx(99 / 1.96)


async def test_500_concurrent_calls_against_the_limited_fake_get_no_503_and_take_the_expected_time(fake, clock):
    fake.limit(rate=2.0, burst=50, clock=clock.now)
    # A synchronous MockTransport serves each request at the fake instant it is sent; with
    # a thread hop the fake clock could run ahead of requests still in flight.
    async with build_http_client(transport=httpx.MockTransport(fake.handle)) as http:
        client = make_client(fake, clock, http)
        results = await asyncio.gather(*(client.profile() for _ in range(500)))
    assert len(results) == 500
    assert fake.rejected_503 == 0
    assert client.stats.http_503 == 0
    assert len(fake.requests) == 500
    elapsed = clock.t - T0
    assert elapsed == pytest.approx((500 - 50) / 2, rel=0.10)


async def test_without_a_client_bucket_the_fake_answers_503_and_the_client_backs_off_and_finishes(fake, clock):
    fake.limit(rate=2.0, burst=50, clock=clock.now)
    async with build_http_client(transport=httpx.MockTransport(fake.handle)) as http:
        client = make_client(fake, clock, http, bucket=LeakyBucket(1000.0, 1000, monotonic=clock.now, sleep=clock.sleep))
        results = await asyncio.gather(*(client.profile() for _ in range(60)), return_exceptions=True)
    assert fake.rejected_503 > 0
    assert client.stats.http_503 == fake.rejected_503
    assert all(isinstance(r, dict) for r in results)


# -- real sockets --------------------------------------------------------------------------


async def test_a_counters_cycle_and_a_scripted_failure_work_over_a_real_loopback_socket():
    fake = FakeBitrix(webhook_code=CODE)
    ids = add_users(fake, 60)
    fake.push(Scripted.html(502))
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    with LoopbackServer(fake.handle) as server:
        async with build_http_client() as http:
            client = BitrixClient(f"{server.url}/rest/1/{CODE}/", http, LeakyBucket(), sleep=no_sleep, rng=lambda: 0.5)
            result = await client.counters(ids, ("view_all",))
    assert all(isinstance(roles["view_all"], Counters) for roles in result.values())
    assert fake.request_count("batch") == 3  # two batches, one of them retried once after the 502
    assert sleeps == [1.0]


# -- secrets ---------------------------------------------------------------------------------


async def test_the_webhook_code_never_reaches_a_log_record_or_an_error_text(fake, clock, http, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(fake, clock, http)
    texts: list[str] = []
    for _, answer, *_ in FAILURES:
        fake.push(answer, times=5)
        try:
            await client.call(COUNTERS, {"userId": 5})
        except BitrixError as err:
            texts += [str(err), repr(err), err.text("en"), err.text("ru"), *map(str, err.args)]
            logging.getLogger("bot.test").warning("failed", exc_info=True)
        fake.script.clear()
        client.budget._blocked_until.clear()
    bad = BitrixClient(
        "https://corp.bitrix24.test/rest/1/anothersecretcode/", http, LeakyBucket(monotonic=clock.now, sleep=clock.sleep),
        wall=clock.now, monotonic=clock.now, sleep=clock.sleep,
    )
    with pytest.raises(BitrixAuthError) as info:
        await bad.profile()
    texts += [str(info.value), repr(info.value)]
    assert caplog.records, "expected some log records"
    assert any("/rest/1/<redacted>/" in r.getMessage() for r in caplog.records)  # httpx's own line
    for record in caplog.records:
        assert CODE not in record.getMessage()
        assert "anothersecretcode" not in record.getMessage()
    assert CODE not in caplog.text and "anothersecretcode" not in caplog.text
    for text in texts:
        assert CODE not in text


async def test_the_company_structure_and_a_departments_people_are_read_in_two_requests_each(client, fake):
    fake.scopes.add("department")
    for department_id in range(1, 121):
        fake.add_department(department_id, f"D{department_id}", parent=None if department_id == 1 else 1, head=department_id + 1000)
    for bitrix_user_id in range(2000, 2130):
        fake.add_user(bitrix_user_id, departments=(2 + bitrix_user_id % 3,))
    fake.add_user(9999, departments=(50,))
    found = await client.departments()
    assert [d.department_id for d in found] == list(range(1, 121)) and found[5].parent_id == 1 and found[5].head_id == 1006
    assert [r.method for r in fake.requests] == ["department.get", "batch"]
    fake.requests.clear()
    people = await client.users_in_departments([2, 3, 4])
    assert [p.bitrix_user_id for p in people] == list(range(2000, 2130))
    assert [r.method for r in fake.requests] == ["user.get", "batch"]
    fake.ignore_department_filter = True
    with pytest.raises(BitrixBadAnswerError) as err:
        await client.users_in_departments([2])
    assert err.value.code == "FILTER_IGNORED"


async def test_department_get_without_its_scope_is_a_scope_error(client, fake):
    fake.scopes.discard("department")
    with pytest.raises(BitrixScopeError):
        await client.departments()
