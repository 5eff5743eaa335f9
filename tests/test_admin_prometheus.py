"""``GET /tasks/prometheus`` over HTTP, on SQLite and PostgreSQL: who may scrape it,
that ``prometheus_client``'s own parser reads it, and that its values are right after
known tasks ran (counters and histogram of this process) and with known rows stored
(gauges from the database). Also the ``taskflow.events`` log records."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from taskflow._engine.metrics import DURATION_BUCKETS, Histogram, MetricsSnapshot
from taskflow._store.gauges import Gauges, QueueGauges
from taskflow.admin._prometheus import render
from tests.admin_support import (
    admin_fail,
    admin_ok,
    build,
    call,
    insert_rows,
    login,
    task_row,
    wait_status,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, **headers: str) -> Samples:
    """Every sample of the endpoint, as prometheus_client's parser reads them."""
    response = client.get("/tasks/prometheus", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


def parse(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(client: TestClient, condition: Any, timeout: float = 10.0) -> Samples:
    """Scrape until ``condition(samples)`` holds (the counters are updated right after
    a task's outcome is stored, so a test may see the outcome first)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(client)
        if condition(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError("the metrics never reached the expected values")
        time.sleep(0.02)


@pytest.fixture
def env(db_url):
    built = build(db_url)
    with TestClient(built.app) as client:
        built.client = client
        yield built


def test_the_dashboards_login_guards_the_endpoint(db_url):
    built = build(db_url, auth=("admin", "pw"))
    with TestClient(built.app) as client:
        refused = client.get("/tasks/prometheus")
        assert refused.status_code == 401
        assert "taskflow_" not in refused.text
        assert login(client).status_code == 303
        samples = scrape(client)
        assert value(samples, "taskflow_live_instances") == 1


def test_a_metrics_token_opens_it_to_a_bearer_only(db_url):
    built = build(db_url, auth=("admin", "pw"), metrics_token="scrape-secret")
    with TestClient(built.app) as client:
        assert client.get("/tasks/prometheus").status_code == 401
        wrong = client.get("/tasks/prometheus", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        assert login(client).status_code == 303
        assert client.get("/tasks/prometheus").status_code == 401  # a session is not enough
        samples = scrape(client, Authorization="Bearer scrape-secret")
        assert value(samples, "taskflow_live_instances") == 1
        # The rest of the dashboard still takes the login, not the token.
        assert client.get("/tasks").status_code == 200


def test_counters_and_durations_after_a_success_a_retry_and_a_failure(env):
    client = env.client
    before = scrape(client)
    ok = {"function": "admin_ok", "queue": "default"}
    failing = {"function": "admin_fail", "queue": "default"}
    # Registered functions are listed at zero before they ever run.
    assert (
        "taskflow_tasks_finished_total",
        frozenset({**ok, "status": "failed"}.items()),
    ) in before

    ok_ids = [call(client, env.manager.enqueue, admin_ok, n) for n in range(2)]
    fail_id = call(client, env.manager.enqueue, admin_fail, 7)  # retries=1: two attempts
    for task_id in (*ok_ids, fail_id):
        wait_status(client, env.manager, task_id)

    def all_counted(samples: Samples) -> bool:
        ended = "taskflow_tasks_finished_total"
        return (
            value(samples, ended, **ok, status="success")
            - value(before, ended, **ok, status="success")
            >= 2
            and value(samples, ended, **failing, status="failed")
            - value(before, ended, **failing, status="failed")
            >= 1
        )

    after = wait_for(client, all_counted)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("taskflow_tasks_finished_total", **ok, status="success") == 2
    assert delta("taskflow_tasks_finished_total", **ok, status="failed") == 0
    assert delta("taskflow_tasks_finished_total", **failing, status="failed") == 1
    assert delta("taskflow_tasks_finished_total", **failing, status="success") == 0
    assert delta("taskflow_task_retries_total", **failing) == 1
    assert delta("taskflow_task_retries_total", **ok) == 0
    assert delta("taskflow_attempts_started_total", **ok) == 2
    assert delta("taskflow_attempts_started_total", **failing) == 2
    # Every ended attempt is one observation, in the +Inf bucket and in a finite one.
    assert delta("taskflow_attempt_duration_seconds_count", **failing) == 2
    assert delta("taskflow_attempt_duration_seconds_count", **ok) == 2
    assert delta("taskflow_attempt_duration_seconds_bucket", **ok, le="+Inf") == 2
    assert delta("taskflow_attempt_duration_seconds_bucket", **ok, le="3600.0") == 2
    assert 0 <= delta("taskflow_attempt_duration_seconds_sum", **ok) < 60


def test_gauges_count_waiting_deferred_and_running_tasks_by_queue(env):
    client = env.client
    now = datetime.now(UTC)
    waiting = [
        task_row(status="pending", queue="unserved", created_at=now - timedelta(minutes=m))
        for m in (2, 1, 0)
    ]
    deferred = [task_row(status="pending", queue="unserved", created_at=now) for _ in range(2)]
    for row in deferred:
        row["next_attempt_at"] = now + timedelta(hours=1)
    running = task_row(status="running", queue="busy", created_at=now)
    call(client, insert_rows, env.manager, [*waiting, *deferred, running])

    samples = scrape(client)
    unserved = {"queue": "unserved"}
    assert value(samples, "taskflow_queue_waiting", **unserved) == 3
    assert value(samples, "taskflow_queue_deferred", **unserved) == 2
    assert value(samples, "taskflow_queue_running", **unserved) == 0
    age = value(samples, "taskflow_queue_oldest_waiting_seconds", **unserved)
    assert 120 <= age < 180
    assert value(samples, "taskflow_queue_live_instances", **unserved) == 0
    assert value(samples, "taskflow_queue_running", queue="busy") == 1
    assert value(samples, "taskflow_queue_waiting", queue="busy") == 0
    # The configured queue is listed even when empty, with the instance that serves it.
    assert value(samples, "taskflow_queue_waiting", queue="default") == 0
    assert ("taskflow_queue_waiting", frozenset({"queue": "default"}.items())) in samples
    assert value(samples, "taskflow_queue_oldest_waiting_seconds", queue="default") == 0
    assert value(samples, "taskflow_queue_live_instances", queue="default") == 1
    assert value(samples, "taskflow_live_instances") == 1
    # The hourly schedule's next run is ahead: not late.
    lateness = (
        "taskflow_schedule_lateness_seconds",
        frozenset({"schedule": "hourly_report"}.items()),
    )
    assert samples[lateness] == 0


def test_render_reports_lateness_and_escapes_labels():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    histogram = Histogram()
    histogram.observe(0.2)
    histogram.observe(7200.0)
    counters = MetricsSnapshot(
        started={('say "hi"\\\n', "q"): 2},
        finished={('say "hi"\\\n', "q", "success"): 1},
        retries={},
        durations={('say "hi"\\\n', "q"): histogram},
        since=now.timestamp() - 60,
    )
    gauges = Gauges(
        queues=[QueueGauges("q", running=1, waiting=4, deferred=0, oldest_due=now)],
        live_instances=[["q", "q"], ["other"]],
        schedules=[("nightly", now - timedelta(seconds=90)), ("later", now + timedelta(hours=1))],
    )
    samples = parse(render(counters, gauges, now=now.timestamp()))
    odd = {"function": 'say "hi"\\\n', "queue": "q"}
    assert value(samples, "taskflow_attempts_started_total", **odd) == 2
    assert value(samples, "taskflow_tasks_finished_total", **odd, status="success") == 1
    buckets = {
        bound: value(samples, "taskflow_attempt_duration_seconds_bucket", **odd, le=label)
        for bound, label in ((0.25, "0.25"), (0.1, "0.1"), (3600.0, "3600.0"))
    }
    assert buckets == {0.1: 0, 0.25: 1, 3600.0: 1}
    assert value(samples, "taskflow_attempt_duration_seconds_bucket", **odd, le="+Inf") == 2
    assert value(samples, "taskflow_attempt_duration_seconds_sum", **odd) == pytest.approx(7200.2)
    assert len(DURATION_BUCKETS) + 1 == sum(
        1 for name, _ in samples if name == "taskflow_attempt_duration_seconds_bucket"
    )
    assert value(samples, "taskflow_schedule_lateness_seconds", schedule="nightly") == 90
    assert value(samples, "taskflow_schedule_lateness_seconds", schedule="later") == 0
    assert value(samples, "taskflow_live_instances") == 2
    assert value(samples, "taskflow_queue_live_instances", queue="q") == 1
    assert value(samples, "taskflow_queue_live_instances", queue="other") == 1


def test_lifecycle_events_are_structured_log_records(env, caplog):
    client = env.client
    caplog.set_level(logging.DEBUG, logger="taskflow.events")
    ok_id = call(client, env.manager.enqueue, admin_ok, 1)
    fail_id = call(client, env.manager.enqueue, admin_fail, 2)
    for task_id in (ok_id, fail_id):
        wait_status(client, env.manager, task_id)

    def records(task_id: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "task_id", None) == task_id]

    deadline = time.monotonic() + 10
    while len(records(ok_id)) < 2 or len(records(fail_id)) < 4:
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.02)

    started, succeeded = records(ok_id)
    assert all(r.name == "taskflow.events" for r in (started, succeeded))
    assert (started.levelno, started.status, started.duration) == (logging.DEBUG, "running", None)
    assert succeeded.levelno == logging.INFO
    assert succeeded.status == "success"
    assert (succeeded.func_name, succeeded.queue, succeeded.attempt) == ("admin_ok", "default", 0)
    assert succeeded.duration >= 0 and succeeded.error is None
    assert succeeded.getMessage().startswith(f"task admin_ok {ok_id} succeeded after ")

    statuses = [(r.status, r.attempt) for r in records(fail_id)]
    assert statuses == [("running", 0), ("retrying", 0), ("running", 1), ("failed", 1)]
    failed = records(fail_id)[-1]
    assert failed.levelno == logging.INFO
    assert failed.error == "RuntimeError: admin_fail broke on 2"
    assert failed.getMessage().endswith(
        "(queue default, attempt 1): RuntimeError: admin_fail broke on 2"
    )
    # One record per transition: nothing else in taskflow logs a task's outcome.
    outcome_lines = [r for r in caplog.records if ok_id in r.getMessage()]
    assert outcome_lines == records(ok_id)
