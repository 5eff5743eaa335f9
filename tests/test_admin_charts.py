"""The Overview's charts over HTTP, on SQLite and PostgreSQL: enqueued and processed
tasks, backlog and wait time per bucket, exact for tasks with known times, filtered by
queue and function (``GET /tasks/stats/series`` and the Overview page)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.admin_support import build, call, insert_rows, task_row

# The window's end, inside its last bucket: the last hour is 11:01 … 12:00 (per minute).
END = datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)
START = datetime(2025, 1, 1, 11, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    """A time of 2025-01-01, ``"HH:MM:SS"``."""
    hours, minutes, seconds = (int(part) for part in text.split(":"))
    return datetime(2025, 1, 1, hours, minutes, seconds, tzinfo=UTC)


def row(
    created: str,
    started: str | None,
    finished: str | None,
    status: str,
    *,
    func_name: str = "admin_ok",
    queue: str = "default",
) -> dict[str, Any]:
    """A task row with exactly these times."""
    values = task_row(func_name=func_name, status=status, queue=queue)
    values.update(
        created_at=at(created),
        started_at=at(started) if started else None,
        finished_at=at(finished) if finished else None,
        next_attempt_at=at(created),
        attempts=1 if started else 0,
    )
    return values


# (created, started, finished, status, func, queue); wait = started - created.
ROWS = {
    "A": row("11:57:10", "11:57:20", "11:58:00", "success"),  # waits 10 s
    "B": row("11:57:30", "11:58:30", "11:58:40", "failed", func_name="admin_fail"),  # 60 s
    "C": row("11:58:05", None, None, "pending", func_name="admin_parked", queue="parked"),
    "D": row("11:58:10", None, "11:59:00", "cancelled"),  # never started
    "E": row("11:30:00", "11:59:30", "11:59:40", "success", queue="other"),  # 1,770 s
    "F": row("10:50:00", "11:02:00", "11:02:10", "success"),  # before the window; 720 s
    "G": row("10:00:00", None, None, "pending", func_name="admin_parked", queue="parked"),
    "H": row("12:05:00", None, None, "pending", func_name="admin_parked", queue="parked"),
    "I": row("11:59:10", None, "11:59:10", "rejected"),  # a full queue's record
    "K": row("11:58:50", "11:59:20", "11:59:25", "success"),  # 30 s
    "L": row("11:59:00", "11:59:05", "11:59:06", "success"),  # 5 s
}


def spread(values: dict[int, Any], default: Any = 0, count: int = 60) -> list[Any]:
    """A list of ``count`` values: ``values[i]`` at index ``i``, else ``default``."""
    return [values.get(index, default) for index in range(count)]


def minute(text: str) -> int:
    """The bucket of the last-hour window that holds ``HH:MM:SS``."""
    return int((at(text) - START).total_seconds()) // 60


@pytest.fixture
def env(db_url):
    built = build(db_url, stats_ttl=0.0)
    with TestClient(built.app) as client:
        built.client = client
        call(client, insert_rows, built.manager, list(ROWS.values()))
        yield built


# The server's clock: real (2025 is older than the per-minute rollups keep, so every
# figure comes from the task rows), 3 minutes after END (every minute of the last hour is
# closed and rolled up), or 11:58:40 (the minutes before 11:56 rolled up, the rest read
# from the task rows). The numbers are the same; only wait percentiles of rolled-up
# minutes are estimates (within 4.5 %, exact for the smallest and largest wait).
CLOCKS = {"rows": None, "rolled": END + timedelta(minutes=3), "partly": at("11:58:40")}


@pytest.fixture(params=list(CLOCKS))
def clock(request, monkeypatch) -> str:
    moment = CLOCKS[request.param]
    if moment is not None:
        monkeypatch.setattr("taskflow.admin._api.utcnow", lambda: moment)
    return str(request.param)


def series(env, **params: str) -> dict[str, Any]:
    response = env.client.get("/tasks/stats/series", params={"end": END.isoformat(), **params})
    assert response.status_code == 200, response.text
    return response.json()


def test_series_of_known_tasks(env, clock):
    found = series(env)
    assert found["window"] == "1h"
    assert found["bucket_seconds"] == 60
    assert len(found["buckets"]) == 60
    assert datetime.fromisoformat(found["buckets"][0]) == START
    assert found["enqueued"] == spread({29: 1, 56: 2, 57: 3, 58: 2})
    assert found["started"] == spread({1: 1, 56: 1, 57: 1, 58: 3})
    assert found["processed"] == spread({1: 1, 57: 2, 58: 5})
    assert found["succeeded"] == spread({1: 1, 57: 1, 58: 3})
    assert found["failed"] == spread({57: 1})
    # Waiting at each bucket's end: G throughout; F until it starts at 11:02:00; E from
    # 11:30 to 11:59:30; B, C, D and K as they come and go (D leaves when cancelled).
    assert found["backlog_at_start"] == 2  # G and F at 11:01
    assert found["backlog"] == [2] + [1] * 28 + [2] * 27 + [3, 5, 2, 2]
    assert found["wait_sampled"] == spread({1: 1, 56: 1, 57: 1, 58: 3})
    p50 = found["wait_p50_seconds"]
    p95 = found["wait_p95_seconds"]
    expected = {1: (720, 720), 56: (10, 10), 57: (60, 60), 58: (30, 1770)}
    for index in range(60):
        if index == 58 and clock == "rolled":  # the median of 5, 30 and 1,770 s
            assert p50[index] == pytest.approx(30, rel=0.045)
            assert p95[index] == pytest.approx(1770, abs=1e-3)
        elif index in expected:
            assert p50[index] == pytest.approx(expected[index][0], abs=1e-3)
            assert p95[index] == pytest.approx(expected[index][1], abs=1e-3)
        else:
            assert p50[index] is None and p95[index] is None


def test_filters_by_queue_and_function_change_the_numbers(env, clock):
    parked = series(env, queue="parked")
    assert parked["queue"] == "parked"
    assert parked["enqueued"] == spread({minute("11:58:05"): 1})
    assert parked["processed"] == spread({})
    assert parked["backlog"] == [1] * 57 + [2, 2, 2]  # G, then C from 11:58:05
    assert parked["wait_p50_seconds"] == [None] * 60

    failing = series(env, func="admin_fail")
    assert failing["enqueued"] == spread({56: 1})
    assert failing["started"] == spread({57: 1})
    assert failing["failed"] == spread({57: 1})
    assert failing["succeeded"] == spread({})
    assert failing["backlog"] == spread({56: 1})
    assert failing["wait_p50_seconds"][57] == pytest.approx(60, abs=1e-3)

    both = series(env, queue="default", func="admin_ok")  # A, D, F, I, K, L (not E)
    assert both["enqueued"] == spread({56: 1, 57: 2, 58: 2})
    assert both["started"] == spread({1: 1, 56: 1, 58: 2})
    assert both["backlog"] == [1] + [0] * 56 + [2, 0, 0]  # F; then D and K at 11:59:00
    assert both["wait_p95_seconds"][58] == pytest.approx(30, abs=1e-3)


def test_windows_and_bad_parameters(env, clock):
    day = series(env, window="24h")
    assert day["bucket_seconds"] == 3600 and len(day["buckets"]) == 24
    assert datetime.fromisoformat(day["buckets"][-1]) == at("12:00:00")
    # 10:00 … 12:00: G and F (10:xx), the rest at 11:xx; H (12:05) is in the last bucket.
    assert day["enqueued"][-3:] == [2, 8, 1]
    assert sum(day["processed"]) == 8
    assert day["backlog"][-1] == 3  # G, C and H wait at the end of the 12:00 bucket
    assert day["backlog"][-2] == 2  # G and C at 12:00
    assert env.client.get("/tasks/stats/series", params={"window": "7d"}).status_code == 422
    assert env.client.get("/tasks/stats/series", params={"end": "yesterday"}).status_code == 422


def test_overview_page_draws_the_filtered_charts(env):
    page = env.client.get(
        "/tasks/dashboard",
        params={"window": "1h", "queue": "default", "func": "admin_fail", "end": END.isoformat()},
    )
    assert page.status_code == 200
    html = page.text
    for title in (
        "Finished (queue default · admin_fail)",
        "Enqueued and processed (queue default · admin_fail)",
        "Backlog (queue default · admin_fail)",
        "Wait before start (queue default · admin_fail)",
    ):
        assert title in html
    assert "1 enqueued · 1 processed" in html
    assert "11:57: enqueued 1, processed 0" in html  # a bucket's tooltip and table row
    assert 'value="admin_fail"' in html
    # The live fragment keeps the filters in its refresh URL.
    assert "/tasks/dashboard/_/overview?queue=default&amp;func=admin_fail&amp;end=" in html
    fragment = env.client.get(
        "/tasks/dashboard/_/overview", params={"window": "24h", "queue": "parked"}
    )
    assert fragment.status_code == 200
    assert "Backlog (queue parked)" in fragment.text
    assert "Charts, last 24 hours" in fragment.text
    wrong = env.client.get("/tasks/dashboard", params={"window": "2h"})
    assert wrong.status_code == 200
    assert "unknown window" in wrong.text
    # Without ``end`` the window ends in the bucket that holds the server's clock.
    last = datetime.fromisoformat(env.client.get("/tasks/stats/series").json()["buckets"][-1])
    assert timedelta(0) <= datetime.now(UTC) - last < timedelta(seconds=120)
