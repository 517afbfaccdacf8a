"""The overdue-task list message (SPEC 11): lines, ages, cuts, pages, the 4096-unit limit, buttons, callback data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from bot import tasklist
from bot.render import visible

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PORTAL = "https://corp.bitrix24.example"


@dataclass(frozen=True)
class T:
    task_id: int
    title: str
    deadline: datetime | None
    group_id: int | None = None
    group_name: str | None = None


def page(tasks: list[T], **kw: object) -> str:
    args = {"block_start": 0, "page": 0, "total": len(tasks), "counter": len(tasks), "portal_url": PORTAL,
            "viewer_bitrix_id": 547, "now": NOW, **kw}
    return tasklist.render_task_page("en", "view_all", tasks, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ago", "en", "ru"),
    [
        (timedelta(seconds=20), "1 min", "1 мин"),
        (timedelta(minutes=59), "59 min", "59 мин"),
        (timedelta(hours=1), "1 h", "1 ч"),
        (timedelta(hours=23, minutes=59), "23 h", "23 ч"),
        (timedelta(days=3, hours=5), "3 d", "3 дн."),
    ],
)
def test_overdue_age_is_minutes_then_hours_then_days(ago: timedelta, en: str, ru: str) -> None:
    assert tasklist.overdue_age("en", NOW - ago, NOW) == en
    assert tasklist.overdue_age("ru", NOW - ago, NOW) == ru


def test_a_line_links_the_task_with_its_age_and_project_and_a_project_task_links_under_the_project() -> None:
    text = page([T(8017, "Report", NOW - timedelta(days=3), 12, "Sales"), T(8018, "Call", NOW - timedelta(hours=2))])
    assert text.splitlines()[0] == "<b>Overdue: All</b> (2)"
    assert f'<a href="{PORTAL}/workgroups/group/12/tasks/task/view/8017/">Report</a> — overdue by 3 d · Sales' in text
    assert f'<a href="{PORTAL}/company/personal/user/547/tasks/task/view/8018/">Call</a> — overdue by 2 h' in text


def test_titles_are_cut_to_80_code_points_before_escaping_and_html_is_escaped() -> None:
    title = "<b>" + "x" * 200
    text = page([T(1, title, NOW - timedelta(days=1))])
    (line,) = [ln for ln in text.splitlines() if "view/1/" in ln]
    shown = line.split('">', 1)[1].split("</a>")[0]
    assert shown == "&lt;b&gt;" + "x" * 76 + "…"  # 3 + 76 + 1 = 80 code points, then escaped
    assert "<b>x" not in text


def test_no_title_and_no_deadline_still_make_a_readable_line() -> None:
    text = page([T(5, "", None, None, None)])
    assert '">Task #5</a>' in text and "overdue by" not in text.split("\n")[1]


def test_nothing_overdue_says_so_and_the_footer_tells_when_the_counter_differs() -> None:
    text = page([], total=0, counter=3)
    assert text.startswith("Nothing overdue for All.")
    assert "The list has 0, the counter says 3" in text and "muted" in text
    assert "counter says" not in page([T(1, "a", NOW - timedelta(days=1))])


def test_pages_of_ten_come_out_of_blocks_of_fifty() -> None:
    block = [T(100 + i, f"task {i}", NOW - timedelta(days=60 - i)) for i in range(50)]
    text = page(block, block_start=50, page=7, total=120, counter=120)  # tasks 70..79 of the list
    assert "task 20<" in text and "task 29<" in text and "task 19<" not in text and "task 30<" not in text
    assert "page 8 of 12" in text
    assert tasklist.block_of(7) == 50 and tasklist.block_of(4) == 0 and tasklist.block_of(10) == 100


def test_a_page_of_long_emoji_titles_stays_within_4096_utf16_units() -> None:
    long_project = "🚀" * 60
    block = [T(i, "😀" * 500, NOW - timedelta(days=1), 3, long_project) for i in range(10)]
    text = page(block, total=10, counter=12)
    assert visible(text) <= 4096
    assert text.splitlines()[0].startswith("<b>Overdue") and "counter says 12" in text.splitlines()[-1]


def test_a_page_that_would_pass_4096_units_drops_task_lines_not_the_header_or_footer() -> None:
    block = [T(i, "😀" * 79, NOW - timedelta(days=1), 3, "🚀" * 39) for i in range(10)]
    base = page(block, total=10, counter=12)
    assert visible(base) <= 4096
    padded = tasklist.fit_lines(["head"], ["x" * 1000] * 5, ["tail"])
    assert padded.splitlines()[0] == "head" and padded.splitlines()[-1] == "tail" and visible(padded) <= 4096
    assert padded.count("x" * 1000) == 4


def test_buttons_page_back_and_forth_refresh_and_go_back_to_the_counters() -> None:
    keyboard = tasklist.task_keyboard("en", "view_role_responsible", 1, 35, back_to_counters=True).to_dict()
    data = [b["callback_data"] for row in keyboard["inline_keyboard"] for b in row]
    assert data == ["t:doing:0", "t:doing:2", "tr:doing:1", "c:every"]
    single = tasklist.task_keyboard("ru", "view_all", 0, 3, back_to_counters=False).to_dict()
    assert [b["callback_data"] for row in single["inline_keyboard"] for b in row] == ["tr:all:0"]
    assert all(len(d.encode()) <= 64 for d in data)


@pytest.mark.parametrize(
    ("data", "parsed"),
    [
        ("t:all:0", ("view_all", 0, False, None)),
        ("t:created:12", ("view_role_originator", 12, False, None)),
        ("tr:doing:3", ("view_role_responsible", 3, True, None)),
        ("t:doing:1:548", ("view_role_responsible", 1, False, 548)),  # a team member's doing list (SPEC 12)
        ("tr:doing:0:548", ("view_role_responsible", 0, True, 548)),
        ("t:doing:0:0", None),
        ("t:doing:0:x", None),
        ("t:all:-1", None),
        ("t:boss:1", None),
        ("t:all:99999", None),
        ("t:all", None),
        ("t:all:1:547", None),  # a person only with the doing role; never a viewer
        ("c:all:1", None),
    ],
)
def test_callback_data_carries_only_role_page_and_person(data: str, parsed: tuple[str, int, bool, int | None] | None) -> None:
    assert tasklist.parse_callback(data) == parsed


def test_russian_header_and_footer() -> None:
    text = tasklist.render_task_page(
        "ru", "view_role_auditor", [], block_start=0, page=0, total=0, counter=2, portal_url=PORTAL,
        viewer_bitrix_id=547, now=NOW,
    )
    assert text.startswith("Нет просроченных задач: Наблюдаю.") and "счётчик показывает 2" in text
