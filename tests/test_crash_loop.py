"""``kill -9`` in a loop: one server under load is killed with SIGKILL and restarted, five
times in a row, while clients keep enqueueing over HTTP and a static sub-second schedule
fires. After the last restart every acknowledged task has ended, nothing is left
running, and no schedule slot fired twice.

One server restarted each time, rather than a survivor beside it: with nobody else
alive, only the restarted process can rescue the killed one's tasks (the same-host dead
pid check at startup; the 60 s instance timeout rules out the heartbeat path), the
schedule has to resume from what each dead process left in the database, and every
restart starts while the previous incarnation's tasks are still marked running. The
re-queued tasks are claimed by the next incarnation, which may itself be killed while
it runs them: a re-runnable task can be interrupted several times in a row.

What ran is counted twice, as in ``tests/test_cluster.py``: by the database, and by the
run log the ``counted_*`` tasks and ``every_slot`` append to. Nothing sleeps to
synchronise: every wait polls the database or an HTTP answer with a deadline.
"""

from __future__ import annotations

import collections
import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.apps.web import RUN_LOG_ENV, SCHEDULE_EVERY_ENV, SCHEDULE_NAME
from tests.servers import Database, Server
from tests.test_cluster import (
    FINAL,
    POOL_SIZE,
    Enqueuer,
    assert_clean_log,
    full_log,
    instances,
    poll,
    read_runs,
    running_by_owner,
    slot_rows,
    unfinished,
)

pytestmark = pytest.mark.slow

KILLS = 5
EVERY = 0.5  # the schedule's interval (seconds): each incarnation fires several slots
TASK_SECONDS = 1.0  # how long each counted task runs: a kill always finds some running
ACKED_PER_LIFE = 100  # tasks acknowledged by an incarnation before it may be killed
DONE_PER_LIFE = 20  # ... tasks it must have run to success
RUNNING_OF_EACH = 2  # ... and tasks of each kind it must be running at that moment


# -- helpers ----------------------------------------------------------------------------------


def finished_by(db: Database, instance: str) -> dict[str, int]:
    """How many tasks of each function ``instance`` ran to success."""
    rows = db.rows(
        "SELECT func_name, count(*) AS n FROM taskflow_tasks "
        "WHERE owner = :me AND status = 'success' GROUP BY func_name",
        me=instance,
    )
    return {row["func_name"]: row["n"] for row in rows}


def wait_until_busy(db: Database, load: Enqueuer, instance: str, *, acked_before: int) -> None:
    """Wait until ``instance`` has acknowledged ``ACKED_PER_LIFE`` tasks, run a slot and
    ``DONE_PER_LIFE`` tasks to success, and is running at least ``RUNNING_OF_EACH`` tasks
    of each kind (re-runnable or not): a kill then hits work in every state."""

    def busy() -> bool:
        if load.count - acked_before < ACKED_PER_LIFE:
            return False
        done = finished_by(db, instance)
        counted = done.get("counted_rerunnable", 0) + done.get("counted_once", 0)
        if done.get(SCHEDULE_NAME, 0) < 1 or counted < DONE_PER_LIFE:
            return False
        kinds = running_by_owner(db).get(instance, {})
        return min(kinds.get("counted_rerunnable", 0), kinds.get("counted_once", 0)) >= (
            RUNNING_OF_EACH
        )

    poll(
        busy,
        timeout=60,
        interval=0.1,
        what=f"{instance} to acknowledge and finish tasks, run a slot and be running both kinds",
    )


def check_outcomes(
    db: Database, runs: collections.Counter[str], acknowledged: list[str], killed: list[str]
) -> dict[str, int]:
    """Every stored task (enqueued or scheduled) ended, and ran as often as it may.

    A task that ran on no killed instance, or finished there before the kill, ran once
    and succeeded. A task running on a killed instance ended ``interrupted`` naming that
    instance, unless it is re-runnable: then each interrupted attempt was on a different
    killed instance, the last attempt succeeded, and it ran at most once per attempt.
    Returns counts by kind of outcome."""
    tasks = {row["id"]: row for row in db.rows("SELECT * FROM taskflow_tasks")}
    tries = db.attempts()

    missing = [t for t in acknowledged if t not in tasks]
    assert not missing, f"{len(missing)} acknowledged tasks are not stored, e.g. {missing[:3]}"
    assert len(set(acknowledged)) == len(acknowledged), "an id was acknowledged twice"
    phantom = [t for t in runs if t not in tasks]
    assert not phantom, f"runs of tasks that are not stored: {phantom[:3]}"

    counts: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    for task_id, row in tasks.items():
        attempts = tries[task_id]
        ran = runs[task_id]
        outcome = (row["func_name"], row["status"], row["attempts"], ran, attempts)
        if not attempts:
            problems.append(f"{task_id} never started: {outcome}")
            continue
        *earlier, last = attempts
        earlier_ok = all(a.instance in killed and a.status == "interrupted" for a in earlier)
        distinct = len({a.instance for a in attempts}) == len(attempts)
        if row["status"] == "success":
            good = (
                earlier_ok
                and distinct
                and last.status == "success"
                and row["attempts"] == len(attempts)
                and 1 <= ran <= len(attempts)
                and (not earlier or bool(row["requeue_on_interrupt"]))
            )
            counts["rerun" if earlier else "once"] += 1
        else:
            good = (
                row["status"] == "interrupted"
                and not row["requeue_on_interrupt"]
                and len(attempts) == 1
                and row["attempts"] == 1
                and ran <= 1
                and last.instance in killed
                and last.status == "interrupted"
                and last.instance in (row["error"] or "")
            )
            counts["interrupted"] += 1
        if len(attempts) > 2:
            counts["interrupted twice or more, then rerun"] += 1
        if not good:
            problems.append(f"{task_id}: {outcome} {row['error']}")
    assert not problems, f"{len(problems)} tasks ran wrongly:\n" + "\n".join(problems[:20])
    counts["stored"] = len(tasks)
    return dict(counts)


def check_slots(db: Database, runs: collections.Counter[str]) -> list[dict[str, Any]]:
    """One task per slot, run at most once, and every slot on the schedule's phase (first
    slot + k × EVERY): a restart neither fires a slot again nor shifts the schedule."""
    rows = slot_rows(db)
    slots = [row["slot"] for row in rows]
    doubles = [slot for slot, n in collections.Counter(slots).items() if n > 1]
    assert not doubles, f"slots fired more than once: {doubles}"
    rerun = [(row["slot"], runs[row["id"]]) for row in rows if runs[row["id"]] > 1]
    assert not rerun, f"slot tasks run more than once: {rerun}"
    step = timedelta(seconds=EVERY)
    off_phase = [slot for slot in slots if (slot - slots[0]) % step]
    assert not off_phase, f"slots out of phase: {off_phase[:5]}"
    return rows


# -- the test ---------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_kill_9_five_times_under_load_loses_nothing(db, spawn, tmp_path):
    """One server, enqueued into continuously over HTTP and firing an ``every=0.5``
    schedule, is killed with SIGKILL and restarted five times in a row, each time while it
    runs tasks of both kinds. Each restart takes over the killed instance before it
    answers. In the end every acknowledged task has ended and none is lost, no task is
    left pending or running, each slot fired once and ran at most once, and the only
    tasks that ran more than once are re-runnable ones interrupted by a kill."""
    run_log = tmp_path / "runs.log"
    env = {
        RUN_LOG_ENV: str(run_log),
        SCHEDULE_EVERY_ENV: str(EVERY),
        "TASKFLOW_POOL_SIZE": POOL_SIZE,
    }

    def boot(generation: int) -> tuple[Server, str]:
        # A 60 s instance timeout: the takeover can only come from the dead-pid check.
        server = spawn(f"gen{generation}", extra_env=env, instance_timeout=60.0).start()
        answer = httpx.get(f"{server.url}/whoami", timeout=10.0)
        assert answer.status_code == 200, answer.text
        return server, answer.json()["instance"]

    server, instance = boot(0)
    servers, killed = [server], []
    up = threading.Event()  # cleared while no server answers: the clients wait on it
    up.set()

    def targets() -> list[str]:
        up.wait(timeout=60)
        return [server.url]

    load = Enqueuer(targets, target=10**9, batch=10, seconds=TASK_SECONDS, threads=2)
    try:
        acked_before = 0
        for generation in range(1, KILLS + 1):
            wait_until_busy(db, load, instance, acked_before=acked_before)
            up.clear()
            server.kill()
            killed.append(instance)
            server, instance = boot(generation)
            servers.append(server)
            # The restart settled the killed instance's tasks before it answered.
            assert killed[-1] not in instances(db), f"{killed[-1]} was not taken over"
            assert f"took over tasks of stopped instance {killed[-1]}" in full_log(server)
            acked_before = load.count
            up.set()
        # The last incarnation takes work and fires slots too.
        wait_until_busy(db, load, instance, acked_before=acked_before)
    finally:
        load.stop.set()
        up.set()
    load.finish(timeout=60)
    refused = [entry for entry in load.refused if entry[0] != "transport"]
    assert not refused, refused[:5]

    # Stop the schedule so that "nothing pending or running" becomes a stable state.
    paused = httpx.post(f"{server.url}/schedules/{SCHEDULE_NAME}/pause", timeout=30.0)
    assert paused.status_code == 200 and paused.json() == {"enabled": False}, paused.text
    poll(lambda: unfinished(db) == 0, timeout=60, what="every task to end")

    assert set(instances(db)) == {instance}, "a killed instance is still registered"
    runs = read_runs(run_log)
    counts = check_outcomes(db, runs, load.acknowledged, killed)
    slots = check_slots(db, runs)
    statuses = {row["status"] for row in slots}
    assert statuses <= set(FINAL), statuses
    print(
        f"acknowledged {load.count}, {len(slots)} slots fired, outcomes {counts}, "
        f"transport failures {len(load.refused)}"
    )
    assert counts.get("rerun", 0) >= KILLS and counts.get("interrupted", 0) >= KILLS, (
        "precondition: the kills interrupted tasks of both kinds",
        counts,
    )
    assert server.running()
    for each in servers:
        assert_clean_log(each)
