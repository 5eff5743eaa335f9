"""kill -9 in the middle of a workflow, on SQLite and PostgreSQL: the next process runs
every remaining step once, a step that was running when the process died runs again
only when it is declared re-runnable, and the steps after one that ended interrupted
end cancelled. Real uvicorn processes serving ``tests/apps/web.py``; the steps count
their runs in a side file (``$TASKFLOW_TEST_RUN_LOG``)."""

from __future__ import annotations

import pytest

from tests.apps.web import RUN_LOG_ENV
from tests.conftest import wait_until
from tests.servers import post, read_runs

pytestmark = pytest.mark.slow

FINAL = {"success", "failed", "cancelled", "interrupted"}


def test_kill_9_mid_workflow_loses_no_step_and_runs_none_twice(db, spawn, tmp_path):
    runs = tmp_path / "runs.log"
    env = {RUN_LOG_ENV: str(runs)}
    a = spawn("a", extra_env=env).start()
    again = post(a.url, "/workflow", steps=4, seconds=2.0, rerun="true")["task_ids"]
    once = post(a.url, "/workflow", steps=4, seconds=2.0, rerun="false")["task_ids"]

    def second_steps_running() -> bool:
        rows, counted = db.tasks(), read_runs(runs)
        return all(
            rows[chain[1]]["status"] == "running" and counted[chain[1]] == 1
            for chain in (again, once)
        )

    wait_until(second_steps_running, timeout=30, what="both chains at their second step")
    a.kill()
    at_kill = db.tasks()
    for chain in (again, once):
        assert at_kill[chain[0]]["status"] == "success"
        assert [at_kill[t]["status"] for t in chain[2:]] == ["blocked", "blocked"]

    b = spawn("b", extra_env=env, instance_timeout=60.0).start()  # A found dead by its pid
    wait_until(
        lambda: all(db.tasks()[t]["status"] in FINAL for t in [*again, *once]),
        timeout=60,
        what="both chains to end",
    )
    final = db.tasks()
    assert [final[t]["status"] for t in again] == ["success"] * 4
    assert [final[t]["status"] for t in once] == [
        "success",
        "interrupted",
        "cancelled",
        "cancelled",
    ]
    assert final[once[2]]["error"] == f"dependency {once[1]} ended interrupted"
    counted = read_runs(runs)
    # The re-runnable second step ran on A, then again on B; every other step ran once,
    # and nothing ran after the interrupted one.
    assert [counted[t] for t in again] == [1, 2, 1, 1]
    assert [counted[t] for t in once] == [1, 1, 0, 0]
    assert b.running()
