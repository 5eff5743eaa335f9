"""Every public name of the three original libraries imports from the same place in taskflow.

Each row is a module of the original, the names its package exports or its documentation
imports from there, and the taskflow module that must hold them (the original's module
name with ``taskflow`` in place of the package). ``docs/migrating.md`` maps each name to
what it does here; the other ``test_compat_*`` files test the behaviour behind them.
"""

from __future__ import annotations

import importlib

import pytest

FASTAPI_TASKFLOW = {
    "taskflow": [
        "TaskAdmin",
        "TaskAuthBackend",
        "TaskManager",
        "ManagedBackgroundTasks",
        "TaskStatus",
        "TaskRecord",
        "TaskConfig",
        "QueueConfig",
        "ScheduledOnce",
        "QueueFullError",
        "SnapshotBackend",
        "SqliteBackend",
        "RedisBackend",
        "TaskArgumentError",
        "TaskObserver",
        "LogEvent",
        "LifecycleEvent",
        "LoggerChain",
        "FileLogger",
        "InMemoryLogger",
        "StdoutLogger",
        "task_log",
        "TaskContext",
        "get_task_context",
    ],
    "taskflow.models": [
        "QueueConfig",
        "TaskStatus",
        "TaskConfig",
        "TaskRecord",
        "ScheduledOnce",
        "AuditEntry",
    ],
    "taskflow.backends": [
        "SnapshotBackend",
        "SqliteBackend",
        "RedisBackend",
        "PostgresBackend",
        "MySQLBackend",
    ],
    "taskflow.backends.base": ["SnapshotBackend"],
    "taskflow.backends.sqlite": ["SqliteBackend"],
    "taskflow.backends.postgres": ["PostgresBackend"],
    "taskflow.backends.redis": ["RedisBackend"],
    "taskflow.backends.mysql": ["MySQLBackend"],
    "taskflow.loggers": [
        "TaskObserver",
        "LogEvent",
        "LifecycleEvent",
        "LoggerChain",
        "FileLogger",
        "InMemoryLogger",
        "StdoutLogger",
    ],
    "taskflow.loggers.base": ["TaskObserver", "LogEvent", "LifecycleEvent"],
    "taskflow.periodic": ["ScheduledEntry", "DEFAULT_HORIZON", "DEFAULT_REFILL_INTERVAL"],
    "taskflow.exceptions": ["QueueFullError"],
}

FASTAPI_TASK_MANAGER = {
    "taskflow": ["Config", "HealthResponse", "TaskGroup", "TaskManager"],
    "taskflow.schema.health": ["HealthResponse", "ConfigResponse"],
    "taskflow.schema.task": [
        "TaskBase",
        "TaskRun",
        "TaskDetailed",
        "TaskStatistics",
        "Task",
        "AffectedTask",
        "TaskActionResponse",
        "CreateDynamicTaskRequest",
        "DynamicTaskResponse",
        "RegisteredFunctionInfo",
        "RegisteredFunctionsResponse",
    ],
    "taskflow.schema.task_group": ["TaskGroup"],
}

FASTAPI_TASKS = {
    "taskflow": [
        "TaskErrorHandler",
        "Tasks",
        "add_tasks",
        # imported from the package in its documentation's examples
        "Task",
        "TaskConfig",
        "FastAPITasksError",
        "FastAPITasksUninitializedAppError",
    ],
    "taskflow.errors": ["FastAPITasksError", "FastAPITasksUninitializedAppError"],
    "taskflow.tasks": ["Task", "TaskConfig", "TaskErrorHandler"],
}

ROWS = [
    pytest.param(module, name, id=f"{library}:{module}.{name}")
    for library, table in (
        ("fastapi-taskflow", FASTAPI_TASKFLOW),
        ("fastapi-task-manager", FASTAPI_TASK_MANAGER),
        ("fastapi-tasks", FASTAPI_TASKS),
    )
    for module, names in table.items()
    for name in names
]


@pytest.mark.parametrize(("module", "name"), ROWS)
def test_documented_name_imports_from_the_same_place(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


def test_names_shared_by_module_and_package_are_the_same_object() -> None:
    """``from taskflow import X`` and ``from taskflow.<module> import X`` give one class,
    so ``isinstance`` checks and ``except`` clauses agree whichever path code used."""
    import taskflow

    for table in (FASTAPI_TASKFLOW, FASTAPI_TASK_MANAGER, FASTAPI_TASKS):
        for module, names in table.items():
            if module == "taskflow" or module.startswith("taskflow.schema"):
                continue
            loaded = importlib.import_module(module)
            for name in names:
                if hasattr(taskflow, name):
                    assert getattr(loaded, name) is getattr(taskflow, name), (module, name)


def test_one_task_config_serves_both_libraries() -> None:
    """fastapi-taskflow's ``TaskConfig`` (retry policy) and fastapi-tasks' (name,
    shield, on_error) share a name in the package, so one class takes both forms."""
    from taskflow import TaskConfig

    retrying = TaskConfig(retries=3, delay=1.0, backoff=2.0)
    assert (retrying.retries, retrying.delay, retrying.backoff) == (3, 1.0, 2.0)
    assert TaskConfig(name="process_payment", shield=True).shielded is True
    assert TaskConfig(shield=False).shielded is False
    assert TaskConfig().shielded is False


def test_task_record_builds_as_fastapi_taskflow_documents_it() -> None:
    """Its documented fields in their documented order, positionally and by keyword."""
    from datetime import UTC, datetime

    from taskflow.models import TaskRecord, TaskStatus

    created = datetime(2026, 1, 2, tzinfo=UTC)
    by_keyword = TaskRecord(
        task_id="7d1c2f64-0b5e-4c59-9d2a-3f1e8c6b5a40",
        func_name="send_email",
        status=TaskStatus.FAILED,
        args=("ada@example.com",),
        kwargs={"urgent": True},
        created_at=created,
        start_time=created,
        end_time=created,
        retries_used=2,
        error="SMTPError: refused",
        logs=[],
        stacktrace="Traceback ...",
        idempotency_key="signup-1",
        tags={"team": "growth"},
        encrypted_payload=None,
        source="manual",
        priority=5,
        executor="thread",
        queue="email",
    )
    positional = TaskRecord(
        "7d1c2f64-0b5e-4c59-9d2a-3f1e8c6b5a40",
        "send_email",
        TaskStatus.FAILED,
        ("ada@example.com",),
        {"urgent": True},
        created,
        created,
        created,
        2,
        "SMTPError: refused",
    )
    assert by_keyword.retries_used == positional.retries_used == 2
    assert by_keyword.duration == 0.0
    assert by_keyword.to_dict()["status"] == "failed"
    assert by_keyword.to_dict()["executor"] == "thread"
    assert "encrypted_payload" not in by_keyword.to_dict()
    assert TaskRecord("a", "f", TaskStatus.PENDING).retries_used == 0  # the rest defaults
