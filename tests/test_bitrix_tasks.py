"""Task lists behind a counter (SPEC 11): BitrixClient + FakeBitrix's task model over httpx's MockTransport."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from bot.bitrix import (
    NO_ACCESS,
    ROLE_FILTER_KEYS,
    TASK_SELECT,
    BitrixClient,
    Counters,
    LeakyBucket,
    Task,
    TaskPage,
)
from bot.bitrix.results import parse_task_page, task_from
from bot.errors import BitrixBadAnswerError, BitrixMethodError, BitrixTimeBudgetError, BitrixTransientError
from bot.model import ROLES
from bot.tasks import row_fits
from tests.bitrix_clock import T0, WEBHOOK, FakeClock, client_for
from tests.fakes.bitrix import FakeBitrix, Scripted, php_parse_query

TASKS = "tasks.task.list"
NOW = datetime.fromtimestamp(T0, UTC)
MSK = timezone(timedelta(hours=3))
USER = 7


@pytest.fixture
def client(fake: FakeBitrix, clock: FakeClock, http: httpx.AsyncClient) -> BitrixClient:
    return client_for(http, clock)


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def add_role_tasks(fake: FakeBitrix) -> None:
    """USER in every role, plus tasks that must never be listed as overdue."""
    fake.add_task(1, "doing", deadline=ago(days=3), responsible=USER, created_by=2)
    fake.add_task(2, "helping", deadline=ago(hours=5), status=2, responsible=2, created_by=3, accomplices=(USER,))
    fake.add_task(3, "following", deadline=ago(minutes=10), responsible=2, created_by=3, auditors=(USER, 9))
    fake.add_task(4, "created", deadline=ago(days=1), responsible=2, created_by=USER, group=(5, "Site"))
    fake.add_task(5, "for myself", deadline=ago(days=2), responsible=USER, created_by=USER)
    fake.add_task(6, "deferred", deadline=ago(days=4), status=6, responsible=USER, created_by=2)
    fake.add_task(7, "awaiting control", deadline=ago(days=4), status=4, responsible=USER, created_by=2)
    fake.add_task(8, "not yet due", deadline=NOW + timedelta(minutes=1), responsible=USER, created_by=2)
    fake.add_task(9, "no deadline", responsible=USER, created_by=2)
    fake.add_task(10, "someone else's", deadline=ago(days=9), responsible=2, created_by=3)


def task_requests(fake: FakeBitrix) -> list[dict[str, Any]]:
    return [r.params for r in fake.requests if r.method == TASKS]


def batch_commands(fake: FakeBitrix) -> list[dict[str, str]]:
    return [r.params["cmd"] for r in fake.requests if r.method == "batch"]


EXPECTED = {
    "view_all": [1, 5, 4, 2, 3],  # deadline ascending: 3 d, 2 d, 1 d, 5 h, 10 min
    "view_role_responsible": [1, 5],
    "view_role_accomplice": [2],
    "view_role_auditor": [3],
    "view_role_originator": [4],
}


# -- one role's list ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_sends_its_filter_key_and_gets_its_overdue_tasks_most_overdue_first(client, fake, role):
    add_role_tasks(fake)
    page = await client.overdue_tasks(USER, role, NOW)
    assert [task.task_id for task in page.tasks] == EXPECTED[role]
    assert page.total == len(EXPECTED[role]) and page.next_start is None
    assert all(row_fits(task, USER, role, NOW) for task in page.tasks)
    (sent,) = task_requests(fake)
    flt = sent["filter"]
    assert flt[ROLE_FILTER_KEYS[role]] == USER
    assert datetime.fromisoformat(flt["<DEADLINE"]) == NOW
    assert flt["REAL_STATUS"] == [2, 3]
    assert not {"IS_MUTED", "ONLY_ROOT_TASKS"} & {key.upper() for key in flt}
    assert sent["select"] == list(TASK_SELECT)
    assert sent["order"] == {"DEADLINE": "asc", "ID": "asc"}
    assert sent["start"] == 0


async def test_a_listed_task_carries_every_selected_field_parsed(client, fake):
    add_role_tasks(fake)
    page = await client.overdue_tasks(USER, "view_role_originator", NOW)
    assert page.tasks == (
        Task(
            task_id=4,
            title="created",
            deadline=ago(days=1),
            status=3,
            group_id=5,
            group_name="Site",
            responsible_id=2,
            created_by=USER,
            accomplices=frozenset(),
            auditors=frozenset(),
        ),
    )
    assert page.tasks[0].deadline is not None and page.tasks[0].deadline.utcoffset() == timedelta(hours=3)


async def test_a_task_without_a_group_has_no_group_and_a_string_zero_group_id_on_the_wire(client, fake):
    fake.add_task(1, "loose", deadline=ago(days=1), responsible=USER)
    raw = await client.call(TASKS, {"filter": {"ID": 1}})
    assert raw["tasks"][0]["groupId"] == "0" and raw["tasks"][0]["group"] == []
    page = await client.overdue_tasks(USER, "view_all", NOW)
    assert page.tasks[0].group_id is None and page.tasks[0].group_name is None


async def test_120_overdue_tasks_come_in_pages_of_50_50_20_with_the_total_and_next(client, fake):
    for task_id in range(1, 121):
        fake.add_task(task_id, f"t{task_id}", deadline=ago(minutes=200 - task_id), responsible=USER)
    pages = [await client.overdue_tasks(USER, "view_role_responsible", NOW, start=start) for start in (0, 50, 100)]
    assert [len(p.tasks) for p in pages] == [50, 50, 20]
    assert [p.total for p in pages] == [120, 120, 120]
    assert [p.next_start for p in pages] == [50, 100, None]
    assert [t.task_id for p in pages for t in p.tasks] == list(range(1, 121))
    assert [r["start"] for r in task_requests(fake)] == [0, 50, 100]


async def test_a_start_that_is_not_a_page_boundary_is_refused_without_a_request(client, fake):
    with pytest.raises(ValueError):
        await client.overdue_tasks(USER, "view_all", NOW, start=10)
    with pytest.raises(ValueError):
        await client.overdue_tasks(USER, "view_all", NOW.replace(tzinfo=None))
    assert fake.requests == []


async def test_a_deleted_task_leaves_the_list_and_the_counter(client, fake):
    add_role_tasks(fake)
    fake.delete_task(1)
    page = await client.overdue_tasks(USER, "view_role_responsible", NOW)
    assert [t.task_id for t in page.tasks] == [5]
    counters = await client.counters([USER], ("view_role_responsible",))
    assert counters[USER]["view_role_responsible"] == Counters({"new_comments": 0, "expired": 1, "total": 1})


# -- counters derived from the tasks ------------------------------------------------------------


async def test_derived_counters_equal_the_listed_rows_for_every_role_and_muted_tasks_are_only_listed(client, fake):
    add_role_tasks(fake)
    fake.add_task(11, "muted", deadline=ago(days=6), responsible=USER, created_by=3, auditors=(9,), muted_by=(USER,))
    counters = await client.counters([USER, 9])
    for role in ROLES:
        listed = (await client.overdue_tasks(USER, role, NOW)).tasks
        muted = [t for t in listed if t.task_id == 11]
        cell = counters[USER][role]
        assert isinstance(cell, Counters)
        assert cell.get("expired") == len(listed) - len(muted), role
        assert cell.get("new_comments") == 0
    assert [t.task_id for t in (await client.overdue_tasks(USER, "view_all", NOW)).tasks][0] == 11
    # The auditor who did not mute task 11 counts it.
    assert counters[9]["view_role_auditor"] == Counters({"new_comments": 0, "expired": 2, "total": 2})


async def test_explicit_counters_win_unless_derivation_is_forced_and_new_comments_stay_as_set(client, fake):
    add_role_tasks(fake)
    fake.set_counters(USER, "view_all", expired=40, new_comments=3, total=43)
    assert (await client.counters([USER], ("view_all",)))[USER]["view_all"] == Counters(
        {"expired": 40, "new_comments": 3, "total": 43}
    )
    fake.derive_counters = True
    assert (await client.counters([USER], ("view_all",)))[USER]["view_all"] == Counters(
        {"expired": 5, "new_comments": 3, "total": 8}
    )
    fake.derive_counters = False
    assert (await client.counters([9], ("view_all",)))[9]["view_all"] is NO_ACCESS


async def test_a_deadline_passing_on_the_fake_clock_raises_the_derived_counter(client, fake, clock):
    fake.add_task(1, "soon", deadline=NOW + timedelta(seconds=30), responsible=USER)
    before = (await client.counters([USER], ("view_all",)))[USER]["view_all"]
    clock.t += 31
    after = (await client.counters([USER], ("view_all",)))[USER]["view_all"]
    assert isinstance(before, Counters) and before.get("expired") == 0
    assert isinstance(after, Counters) and after.get("expired") == 1


# -- the row check ------------------------------------------------------------------------------


async def test_an_ignored_member_filter_returns_other_peoples_tasks_and_row_fits_rejects_them(client, fake):
    add_role_tasks(fake)
    fake.ignored_task_filters = {"MEMBER"}
    page = await client.overdue_tasks(USER, "view_all", NOW)
    assert 10 in {t.task_id for t in page.tasks}  # somebody else's task came back
    misfits = [t.task_id for t in page.tasks if not row_fits(t, USER, "view_all", NOW)]
    assert misfits == [10]


async def test_an_ignored_status_or_deadline_filter_is_caught_by_row_fits(client, fake):
    add_role_tasks(fake)
    fake.ignored_task_filters = {"REAL_STATUS", "<DEADLINE"}
    page = await client.overdue_tasks(USER, "view_role_responsible", NOW)
    misfits = {t.task_id for t in page.tasks if not row_fits(t, USER, "view_role_responsible", NOW)}
    assert misfits == {6, 7, 8, 9}


async def test_an_ignored_originator_reference_lets_self_assigned_tasks_through_and_row_fits_rejects_them(client, fake):
    add_role_tasks(fake)
    assert [t.task_id for t in (await client.overdue_tasks(USER, "view_role_originator", NOW)).tasks] == [4]
    fake.ignored_task_filters = {"!REFERENCE:RESPONSIBLE_ID"}
    page = await client.overdue_tasks(USER, "view_role_originator", NOW)
    assert [t.task_id for t in page.tasks if not row_fits(t, USER, "view_role_originator", NOW)] == [5]


def make_task(**changes: Any) -> Task:
    fields: dict[str, Any] = {
        "task_id": 1,
        "title": "t",
        "deadline": ago(hours=1),
        "status": 3,
        "group_id": None,
        "group_name": None,
        "responsible_id": 2,
        "created_by": 3,
        "accomplices": frozenset({4}),
        "auditors": frozenset({5}),
    }
    fields.update(changes)
    return Task(**fields)


@pytest.mark.parametrize(
    ("user", "role", "fits"),
    [
        (2, "view_role_responsible", True),
        (4, "view_role_accomplice", True),
        (5, "view_role_auditor", True),
        (3, "view_role_originator", True),
        (2, "view_role_accomplice", False),
        (4, "view_role_auditor", False),
        (5, "view_role_responsible", False),
        (2, "view_role_originator", False),
        (6, "view_all", False),
        (2, "view_all", True),
        (3, "view_all", True),
        (4, "view_all", True),
        (5, "view_all", True),
        (2, "no_such_role", False),
    ],
)
def test_row_fits_asks_for_the_user_in_the_roles_field(user, role, fits):
    assert row_fits(make_task(), user, role, NOW) is fits


@pytest.mark.parametrize(
    "changes",
    [
        {"status": 4},
        {"status": 5},
        {"status": 6},
        {"status": None},
        {"deadline": None},
        {"deadline": NOW},
        {"deadline": NOW + timedelta(seconds=1)},
    ],
)
def test_row_fits_rejects_a_status_or_deadline_the_counter_would_not_count(changes):
    assert row_fits(make_task(**changes), 2, "view_all", NOW) is False


def test_row_fits_rejects_a_self_assigned_task_for_the_originator_role():
    assert row_fits(make_task(created_by=2), 2, "view_role_originator", NOW) is False
    assert row_fits(make_task(created_by=2), 2, "view_role_responsible", NOW) is True


# -- the digest's batch -------------------------------------------------------------------------


async def test_the_digest_reads_60_users_in_two_batches_with_start_minus_one_and_no_total(client, fake):
    ids = list(range(100, 160))
    for bitrix_user_id in ids:
        fake.add_task(bitrix_user_id, f"t{bitrix_user_id}", deadline=ago(hours=2), responsible=bitrix_user_id)
    pages = await client.first_overdue_pages(ids, NOW)
    assert fake.request_count() == 2 and fake.request_count("batch") == 2
    assert sorted(len(cmd) for cmd in batch_commands(fake)) == [10, 50]
    for cmd in batch_commands(fake):
        for command in cmd.values():
            method, _, query = command.partition("?")
            params = php_parse_query(query)
            assert method == TASKS
            assert params["start"] == "-1"
            assert params["filter"]["REAL_STATUS"] == {"0": "2", "1": "3"}
            assert "MEMBER" in params["filter"]
    assert set(pages) == set(ids)
    for bitrix_user_id in ids:
        page = pages[bitrix_user_id]
        assert isinstance(page, TaskPage)
        assert [t.task_id for t in page.tasks] == [bitrix_user_id]
        assert page.total is None and page.next_start is None


async def test_a_per_command_error_in_the_digest_batch_leaves_the_other_users(client, fake):
    ids = list(range(100, 160))
    for bitrix_user_id in ids:
        fake.add_task(bitrix_user_id, "t", deadline=ago(hours=2), responsible=bitrix_user_id)
    fake.task_list_errors[123] = ("ERROR_CORE", "internal error")
    pages = await client.first_overdue_pages(ids, NOW)
    assert isinstance(pages[123], BitrixMethodError) and pages[123].code == "ERROR_CORE"
    assert all(isinstance(pages[i], TaskPage) and len(pages[i].tasks) == 1 for i in ids if i != 123)


async def test_a_batch_that_fails_after_its_retries_stops_the_digests_remaining_batches(client, fake):
    ids = list(range(100, 160))
    fake.push(Scripted.error(500, "INTERNAL_SERVER_ERROR"), times=5)
    pages = await client.first_overdue_pages(ids, NOW)
    assert all(isinstance(pages[i], BitrixTransientError) for i in ids)
    assert fake.request_count("batch") == 5  # the retries of the first batch; the second is never sent


async def test_a_batch_that_recovers_on_retry_reads_every_user(client, fake):
    ids = list(range(100, 160))
    fake.push(Scripted.error(500, "INTERNAL_SERVER_ERROR"))
    pages = await client.first_overdue_pages(ids, NOW)
    assert all(isinstance(pages[i], TaskPage) for i in ids)
    assert fake.request_count("batch") == 3


async def test_the_digest_of_no_users_makes_no_request(client, fake):
    assert await client.first_overdue_pages([], NOW) == {}
    assert fake.requests == []


async def test_a_plus_0300_deadline_instant_arrives_intact_inside_a_batch(client, fake):
    now = datetime(2027, 1, 15, 11, 0, 0, tzinfo=MSK)
    fake.add_task(1, "just overdue", deadline=now - timedelta(seconds=1), responsible=USER)
    fake.add_task(2, "just not", deadline=now + timedelta(seconds=1), responsible=USER)
    fake.add_task(3, "exactly now", deadline=now.astimezone(UTC), responsible=USER)
    pages = await client.first_overdue_pages([USER], now)
    (cmd,) = batch_commands(fake)
    (command,) = cmd.values()
    assert "%3CDEADLINE" in command and "%2B03%3A00" in command  # `<` and `+` percent-encoded
    sent = php_parse_query(command.partition("?")[2])["filter"]["<DEADLINE"]
    assert sent == "2027-01-15T11:00:00+03:00"
    assert datetime.fromisoformat(sent) == now
    page = pages[USER]
    assert isinstance(page, TaskPage)
    assert [t.task_id for t in page.tasks] == [1]


# -- time budget and retries ------------------------------------------------------------------


async def test_task_lists_spend_the_time_budget_directly_and_inside_a_batch(client, fake, clock):
    fake.method_seconds[TASKS] = 2.0
    await client.overdue_tasks(USER, "view_all", NOW)
    assert client.method_time_used(TASKS) == pytest.approx(2.0)
    await client.first_overdue_pages([1, 2, 3], NOW)
    assert client.method_time_used(TASKS) == pytest.approx(8.0)
    assert client.method_time_used("batch") == 0.0
    assert client.budget.per_command(TASKS) == pytest.approx(2.0)


async def test_a_time_limited_task_list_blocks_the_method_and_refuses_the_next_read_without_a_request(client, fake, clock):
    fake.method_seconds[TASKS] = 10.0
    fake.operating_limit = 15.0
    await client.overdue_tasks(USER, "view_all", NOW)
    await client.overdue_tasks(USER, "view_all", NOW)
    with pytest.raises(BitrixTimeBudgetError):
        await client.overdue_tasks(USER, "view_all", NOW)
    sent = fake.request_count(TASKS)
    with pytest.raises(BitrixTimeBudgetError):
        await client.overdue_tasks(USER, "view_all", NOW, bulk=True)
    pages = await client.first_overdue_pages([1, 2], NOW)
    assert all(isinstance(p, BitrixTimeBudgetError) for p in pages.values())
    assert fake.request_count(TASKS) == sent and fake.request_count("batch") == 0


async def test_bulk_task_lists_wait_for_the_bulk_share_of_the_time_budget(fake, clock, http):
    from bot.bitrix import TimeBudget

    budget = TimeBudget(wall=clock.now, sleep=clock.sleep, limit=100.0, bulk_share=0.5)
    bucket = LeakyBucket(2, 50, monotonic=clock.now, sleep=clock.sleep)
    client = BitrixClient(
        WEBHOOK, http, bucket, monotonic=clock.now, wall=clock.now, sleep=clock.sleep, rng=lambda: 0.5, budget=budget
    )
    fake.method_seconds[TASKS] = 20.0
    await client.overdue_tasks(USER, "view_all", NOW, bulk=True)  # learns the cost: 20 s
    await client.overdue_tasks(USER, "view_all", NOW, bulk=True)  # 40 s of the 50 s share
    started = clock.t
    await client.overdue_tasks(USER, "view_all", NOW, bulk=True)  # would pass 50 s: waits
    assert clock.t - started > 0
    assert fake.request_count(TASKS) == 3


async def test_a_transient_failure_of_a_task_list_is_retried(client, fake, clock):
    fake.add_task(1, "t", deadline=ago(days=1), responsible=USER)
    fake.push(Scripted.error(503, "QUERY_LIMIT_EXCEEDED"))
    page = await client.overdue_tasks(USER, "view_all", NOW)
    assert [t.task_id for t in page.tasks] == [1]
    assert fake.request_count(TASKS) == 2


async def test_an_interactive_task_list_gives_up_at_its_deadline(client, fake, clock):
    fake.wait_until = clock.wait_until
    fake.push(Scripted.read_timeout(), times=5)
    with pytest.raises(BitrixTransientError):
        await client.overdue_tasks(USER, "view_all", NOW, deadline=5.0)
    assert fake.requests[0].timeout is not None and fake.requests[0].timeout <= 5.0


# -- bad data -----------------------------------------------------------------------------------


BAD_ROWS: list[Any] = [
    {"id": "1"},  # no title, nothing else
    {"id": "2", "title": "x" * 5000, "deadline": "not a date", "status": "3", "group": []},
    {"id": "3", "title": "<b>bold</b> & <script>", "deadline": "", "group": {"id": "5", "name": "Site"}},
    {"id": "4", "title": "🔥 огонь", "deadline": "2027-01-14T10:00:00", "groupId": "6", "group": {"name": None}},
    "not a dict",
    None,
    ["1", "2"],
    {"id": "x", "title": "no usable id"},
    {"id": 5, "title": 12, "status": 2, "responsibleId": 7, "createdBy": "7", "accomplices": {"0": "8", "1": "x"}},
    {"id": "6", "accomplices": "8", "auditors": None, "responsibleId": "", "createdBy": "0", "group": "odd"},
]


async def test_bad_rows_parse_without_raising(client, fake):
    fake.push(Scripted(status=200, json={"result": {"tasks": BAD_ROWS}, "total": "10", "time": {"duration": 0.1}}))
    page = await client.overdue_tasks(USER, "view_all", NOW)
    by_id = {t.task_id: t for t in page.tasks}
    assert sorted(by_id) == [1, 2, 3, 4, 5, 6]
    assert page.total == 10 and page.next_start is None
    assert by_id[1].title == "" and by_id[1].deadline is None and by_id[1].status is None
    assert by_id[2].title == "x" * 5000 and by_id[2].deadline is None and by_id[2].group_id is None
    assert by_id[3].title == "<b>bold</b> & <script>" and (by_id[3].group_id, by_id[3].group_name) == (5, "Site")
    assert by_id[4].title == "🔥 огонь" and by_id[4].deadline is None  # no offset: unknown instant
    assert (by_id[4].group_id, by_id[4].group_name) == (6, None)
    assert by_id[5].title == "12" and by_id[5].accomplices == frozenset({8}) and by_id[5].responsible_id == 7
    assert by_id[6].accomplices == frozenset() and by_id[6].responsible_id is None and by_id[6].created_by is None
    assert not any(row_fits(t, USER, role, NOW) for t in page.tasks for role in ROLES)


@pytest.mark.parametrize("result", [None, "text", 5, {"tasks": "oops"}, ["a"]])
async def test_an_answer_that_is_not_a_task_list_is_a_bad_answer(client, fake, result):
    fake.push(Scripted(status=200, json={"result": result, "time": {"duration": 0.1}}))
    with pytest.raises(BitrixBadAnswerError):
        await client.overdue_tasks(USER, "view_all", NOW)


@pytest.mark.parametrize("result", [[], {}, {"tasks": []}, {"tasks": {}}])
def test_empty_task_lists_in_every_php_shape_are_empty_pages(result):
    assert parse_task_page(result, None, None, TASKS) == TaskPage((), None, None)


def test_a_task_row_of_a_map_shaped_list_and_huge_values_never_raises():
    assert task_from({"id": "9" * 40, "deadline": "9999-99-99T99:99:99+99:99"}) is not None
    assert parse_task_page({"tasks": {"0": {"id": "1"}, "x": {"id": "2"}}}, "-5", "abc", TASKS) == TaskPage(
        tuple(t for t in (task_from({"id": "1"}), task_from({"id": "2"})) if t is not None),
        None,
        None,
    )
