"""Tasks that wait for other tasks: ``depends_on``, chains and groups with a callback,
on SQLite and PostgreSQL, with one manager and with two sharing the database; and the
store's release rule on every store (SQL and memory)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from taskflow import (
    ConfigurationError,
    TaskArgumentError,
    TaskManager,
    TaskNotFound,
    get_task_context,
    step,
)
from taskflow._store.rows import Dependency, NewTask, NewWorkflow, Outcome
from tests.conftest import wait_for_status
from tests.store_support import T0, new_task

pytestmark = pytest.mark.anyio

GATE = threading.Event()
SEEN: list[Any] = []


@pytest.fixture(autouse=True)
def _reset():
    GATE.clear()
    SEEN.clear()
    yield
    GATE.set()


def add(a: int, b: int) -> int:
    return a + b


def double_previous() -> int:
    """A chain step: twice the result of the step before."""
    context = get_task_context()
    assert context is not None
    (previous,) = context.dependency_results.values()
    return previous * 2


def total_of_members() -> int:
    """A group's callback: the sum of its members' results, which it records in order."""
    context = get_task_context()
    assert context is not None
    results = list(context.dependency_results.values())
    SEEN.append(results)
    return sum(results)


def double_in_process() -> int:
    """Registered as a process task: its dependency's result crosses to the worker."""
    return double_previous()


def boom() -> None:
    raise RuntimeError("step failed")


def record(tag: str) -> str:
    SEEN.append(tag)
    return tag


FLAKY = {"fail": True}


def flaky_double() -> int:
    """Fails while FLAKY says so; else twice the previous step's result."""
    if FLAKY["fail"]:
        raise RuntimeError("flaky")
    return double_previous()


def held(n: int) -> int:
    """A thread task that runs until the test opens the gate."""
    assert GATE.wait(20), "the gate never opened"
    return n


def _manager(manager_factory, **kwargs) -> TaskManager:
    manager = manager_factory(**kwargs)
    for func in (add, double_previous, total_of_members, boom, record, held, flaky_double):
        manager.task()(func)
    return manager


async def test_a_chain_runs_step_after_step_each_reading_the_previous_result(manager_factory):
    manager = _manager(manager_factory)
    await manager.startup()
    flow = await manager.chain(step(add, 1, 2), step(double_previous), step(double_previous))
    assert flow.kind == "chain" and flow.name == "add" and len(flow.task_ids) == 3
    assert flow.counts == {"pending": 1, "blocked": 2}

    last = await wait_for_status(manager, flow.last_id)
    assert (last.status.value, last.result) == ("success", 12)
    first, second, _third = [await manager.get_task(i) for i in flow.task_ids]
    assert first.end_time <= second.start_time  # never before the previous step ended
    assert first.workflow_id == flow.id

    stored = await manager.get_workflow(flow.id)
    assert stored is not None and stored.task_ids == flow.task_ids
    assert (stored.status, stored.total, stored.ended) == ("success", 3, 3)
    assert [w.id for w in await manager.list_workflows()] == [flow.id]


async def test_thread_and_process_steps_read_their_dependencies_results_too(manager_factory):
    manager = _manager(manager_factory, max_process_workers=1)
    manager.task(executor="process")(double_in_process)
    await manager.startup()
    flow = await manager.chain(step(add, 2, 3), step(double_in_process), step(total_of_members))
    assert (await wait_for_status(manager, flow.last_id, timeout=60)).result == 10
    assert SEEN == [[10]]


async def test_a_failed_step_cancels_the_rest_with_the_reason_unless_they_run_anyway(
    manager_factory,
):
    manager = _manager(manager_factory)
    await manager.startup()
    flow = await manager.chain(step(boom), step(record, "b"), step(record, "c"), name="etl")
    statuses = [(await wait_for_status(manager, i)).status.value for i in flow.task_ids]
    assert statuses == ["failed", "cancelled", "cancelled"]
    second = await manager.get_task(flow.task_ids[1])
    third = await manager.get_task(flow.task_ids[2])
    assert second.error == f"dependency {flow.task_ids[0]} ended failed"
    assert third.error == f"dependency {flow.task_ids[1]} ended cancelled"
    assert SEEN == []
    assert (await manager.get_workflow(flow.id)).status == "failed"

    anyway = await manager.chain(step(boom), step(record, "after"), on_failure="run")
    assert (await wait_for_status(manager, anyway.last_id)).result == "after"


async def test_a_group_callback_runs_once_every_member_ended_with_their_results_in_order(
    manager_factory,
):
    manager = _manager(manager_factory, max_sync_threads=4)
    await manager.startup()
    flow = await manager.group(
        [step(held, 1), step(add, 2, 3), step(held, 10)], then=step(total_of_members)
    )
    callback = flow.last_id
    await wait_for_status(manager, flow.task_ids[1])
    assert (await manager.get_task(callback)).status.value == "blocked"
    GATE.set()
    assert (await wait_for_status(manager, callback)).result == 16
    assert SEEN == [[1, 5, 10]]


async def test_depends_on_waits_for_ids_from_earlier_calls(manager_factory):
    manager = _manager(manager_factory)
    await manager.startup()
    slow = await manager.enqueue(held, 4)
    done = await manager.enqueue(add, 1, 1)
    await wait_for_status(manager, done)
    after = await manager.enqueue(total_of_members, depends_on=[slow, done])
    assert (await manager.get_task(after)).status.value == "blocked"
    GATE.set()
    assert (await wait_for_status(manager, after)).result == 6

    # Dependencies that have all ended already: it starts at once.
    ready = await manager.enqueue(total_of_members, depends_on=[done])
    assert (await wait_for_status(manager, ready)).result == 2


async def test_bad_dependencies_are_refused_and_store_nothing(manager_factory):
    manager = _manager(manager_factory)
    await manager.startup()
    before = await manager.list_tasks()
    with pytest.raises(TaskNotFound, match="no stored task"):
        await manager.enqueue(add, 1, 2, depends_on=["0" * 32])
    with pytest.raises(TaskArgumentError, match="depends_on"):
        await manager.enqueue(add, 1, 2, depends_on=[42])
    with pytest.raises(ConfigurationError, match="on_dependency_failure"):
        await manager.enqueue(add, 1, 2, depends_on=[], on_dependency_failure="maybe")
    with pytest.raises(ConfigurationError, match="at least one step"):
        await manager.chain()
    with pytest.raises(TaskArgumentError):  # one step cannot be stored: none is
        await manager.chain(step(add, 1, 2), step(add, object(), 1))
    with pytest.raises(TaskArgumentError, match="step"):
        await manager.group([add])
    assert await manager.list_tasks() == before
    assert await manager.list_workflows() == []


async def test_cancelling_a_blocked_task_or_a_workflow_cancels_what_waits_for_it(
    manager_factory,
):
    manager = _manager(manager_factory)
    await manager.startup()
    flow = await manager.chain(step(held, 1), step(record, "b"), step(record, "c"))
    await wait_for_status(manager, flow.task_ids[0], "running")
    assert await manager.cancel(flow.task_ids[1]) is True
    third = await wait_for_status(manager, flow.task_ids[2])
    assert third.status.value == "cancelled"
    assert third.error == f"dependency {flow.task_ids[1]} ended cancelled"

    other = await manager.chain(step(held, 2), step(record, "x"))
    await wait_for_status(manager, other.task_ids[0], "running")
    assert await manager.cancel_workflow(other.id) == 2
    GATE.set()
    statuses = [(await wait_for_status(manager, i)).status.value for i in other.task_ids]
    assert statuses == ["cancelled", "cancelled"]
    assert SEEN == []


async def test_retrying_a_workflow_runs_what_failed_and_what_it_cancelled_again(
    manager_factory,
):
    manager = _manager(manager_factory)
    await manager.startup()
    FLAKY["fail"] = True
    flow = await manager.chain(step(add, 1, 2), step(flaky_double), step(double_previous))
    assert (await wait_for_status(manager, flow.last_id)).status.value == "cancelled"
    with pytest.raises(TaskNotFound):
        await manager.retry_workflow("no-such-workflow")

    FLAKY["fail"] = False
    copies = await manager.retry_workflow(flow.id)
    assert len(copies) == 2
    assert (await wait_for_status(manager, copies[-1])).result == 12
    again = await manager.get_workflow(flow.id)
    assert (again.status, again.total, len(again.task_ids)) == ("success", 3, 5)
    assert await manager.retry_workflow(flow.id) == []  # nothing failed any more


async def test_a_dependency_that_ends_in_another_process_releases_the_task_here(
    manager_factory,
):
    here = _manager(manager_factory, queues=["default"])
    there = _manager(manager_factory, queues=["remote"])
    there.task(queue="remote", name="add_remote")(add_remote)
    here.task(queue="remote", name="add_remote")(add_remote)
    await here.startup()
    dep = await here.enqueue(add_remote, 20, 1)  # only ``there`` serves its queue
    after = await here.enqueue(total_of_members, depends_on=[dep])
    assert (await manager_status(here, after)) == "blocked"
    await there.startup()
    assert (await wait_for_status(here, after)).result == 21  # released by a sweep
    assert (await here.get_task(dep)).owner == there.instance_id


def add_remote(a: int, b: int) -> int:
    return a + b


async def manager_status(manager: TaskManager, task_id: str) -> str:
    record = await manager.get_task(task_id)
    return record.status.value


# -- the store's release rule, on every store ----------------------------------------------


def _blocked(**changes: Any) -> NewTask:
    changes.setdefault("on_dependency_failure", "cancel")
    return new_task(blocked=True, **changes)


async def _end(view: Any, task_id: str, status: str) -> None:
    assert await view.start_task(task_id, instance="i1", now=T0) == 1
    outcome = Outcome(
        id=task_id, owner="i1", attempt=1, status=status, finished_at=T0 + timedelta(seconds=1)
    )
    await view.finish_task(outcome)


async def test_store_releases_a_dependent_once_all_its_dependencies_ended(store):  # noqa: F811
    first = new_task(owner="i1", workflow_id="w1")
    second = new_task(owner="i1", workflow_id="w1")
    waiting = _blocked(workflow_id="w1")
    workflow = NewWorkflow(id="w1", name="flow", kind="group", created_at=T0)
    edges = [Dependency(waiting.id, first.id, 0), Dependency(waiting.id, second.id, 1)]
    assert (
        await store.insert_dependent(
            [first, second, waiting],
            edges,
            workflow=workflow,
            instance="i1",
            queues=["default"],
            now=T0,
        )
        == []
    )
    assert (await store.get_task(waiting.id)).status == "blocked"
    await _end(store, first.id, "success")
    assert await store.release_dependents([first.id], instance="i1", queues=["x"], now=T0) == []
    await _end(store, second.id, "success")
    assert await store.release_dependents(None, instance="i1", queues=["x"], now=T0) == []
    released = await store.get_task(waiting.id)
    assert (released.status, released.owner) == ("pending", None)  # queue not served: any
    up, down = await store.dependency_links(waiting.id)
    assert [(link.id, link.status) for link in up] == [
        (first.id, "success"),
        (second.id, "success"),
    ]
    assert [link.id for link in (await store.dependency_links(first.id))[1]] == [waiting.id]
    row = await store.get_workflow("w1")
    assert row.counts == {"success": 2, "pending": 1}
    assert [r.id for r in await store.list_workflows()] == ["w1"]
    assert {t.id for t in await store.workflow_tasks("w1")} == {first.id, second.id, waiting.id}


async def test_store_cancels_dependents_in_cascade_and_runs_those_that_say_run(store):  # noqa: F811
    root = new_task(owner="i1")
    middle = _blocked()
    leaf = _blocked()
    tolerant = _blocked(on_dependency_failure="run")
    edges = [
        Dependency(middle.id, root.id, 0),
        Dependency(leaf.id, middle.id, 0),
        Dependency(tolerant.id, middle.id, 0),
    ]
    await store.insert_dependent(
        [root, middle, leaf, tolerant], edges, workflow=None, instance="i1", queues=[], now=T0
    )
    await _end(store, root.id, "failed")
    mine = await store.release_dependents([root.id], instance="i1", queues=["default"], now=T0)
    assert [t.id for t in mine] == [tolerant.id]  # released and owned here: start it
    assert (await store.get_task(middle.id)).error == f"dependency {root.id} ended failed"
    assert (await store.get_task(leaf.id)).status == "cancelled"
    assert (await store.get_task(tolerant.id)).status == "pending"


async def test_store_refuses_an_unknown_dependency_and_writes_nothing(store):  # noqa: F811
    task = _blocked()
    with pytest.raises(TaskNotFound):
        await store.insert_dependent(
            [task],
            [Dependency(task.id, "0" * 32, 0)],
            workflow=NewWorkflow(id="w2", name="x", kind="chain", created_at=T0),
            instance="i1",
            queues=[],
            now=T0,
        )
    assert await store.get_task(task.id) is None
    assert await store.get_workflow("w2") is None


async def test_store_gives_dependency_results_in_order_and_reads_a_deleted_one_as_ended(store):  # noqa: F811
    first, second = new_task(owner="i1"), new_task(owner="i1")
    waiting = _blocked()
    edges = [Dependency(waiting.id, second.id, 0), Dependency(waiting.id, first.id, 1)]
    await store.insert_dependent(
        [first, second, waiting], edges, workflow=None, instance="i1", queues=[], now=T0
    )
    await _end(store, first.id, "success")
    await _end(store, second.id, "success")
    assert [dep for dep, _r, _e in await store.dependency_results(waiting.id)] == [
        second.id,
        first.id,
    ]
    assert await store.delete_task(first.id) is True
    await store.release_dependents(None, instance="i1", queues=[], now=T0)
    assert (await store.get_task(waiting.id)).error == f"dependency {first.id} ended deleted"
