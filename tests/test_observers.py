"""Tests for taskflow.observers: the LoggerChain fan-out, FileLogger and build_chain."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from taskflow.observers import (
    FileLogger,
    LifecycleEvent,
    LogEvent,
    LoggerChain,
    TaskObserver,
    build_chain,
)

AT = datetime(2024, 5, 1, 12, 30, 45, 123000, tzinfo=UTC)


def log_event(message: str = "hello", **overrides: Any) -> LogEvent:
    """Build a LogEvent with sensible defaults."""
    fields: dict[str, Any] = {
        "task_id": "task-1",
        "func_name": "send_email",
        "at": AT,
        "level": "info",
        "message": message,
        "extra": {},
        "tags": {},
        "attempt": 1,
    }
    fields.update(overrides)
    return LogEvent(**fields)


def lifecycle_event(status: str = "running", **overrides: Any) -> LifecycleEvent:
    """Build a LifecycleEvent with sensible defaults."""
    fields: dict[str, Any] = {
        "task_id": "task-1",
        "func_name": "send_email",
        "at": AT,
        "status": status,
        "attempt": 1,
        "tags": {},
    }
    fields.update(overrides)
    return LifecycleEvent(**fields)


class Recorder(TaskObserver):
    """Records every call into a list shared between observers."""

    def __init__(self, name: str, seen: list[tuple[str, str, Any]]) -> None:
        self.name = name
        self.seen = seen

    async def on_log(self, event: LogEvent) -> None:
        self.seen.append((self.name, "log", event))

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        self.seen.append((self.name, "lifecycle", event))

    async def close(self) -> None:
        self.seen.append((self.name, "close", None))


class Exploding(TaskObserver):
    """Raises from every hook."""

    async def on_log(self, event: LogEvent) -> None:
        raise RuntimeError("on_log boom")

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        raise RuntimeError("on_lifecycle boom")

    async def close(self) -> None:
        raise RuntimeError("close boom")


class Hanging(TaskObserver):
    """Waits forever on every log event, counting how often it was cancelled."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0

    async def on_log(self, event: LogEvent) -> None:
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


def read_lines(path: Path) -> list[str]:
    """Return the file's lines without newlines."""
    return path.read_text(encoding="utf-8").splitlines()


# --- LoggerChain ---------------------------------------------------------------------------


def test_events_reach_all_observers_in_order() -> None:
    seen: list[tuple[str, str, Any]] = []
    events = [log_event("one"), lifecycle_event("success"), log_event("two")]

    async def scenario() -> None:
        chain = LoggerChain([Recorder("a", seen), Recorder("b", seen)])
        chain.start()
        for event in events:
            chain.emit(event)
        await chain.close()

    asyncio.run(scenario())

    expected = []
    for event in events:
        kind = "log" if isinstance(event, LogEvent) else "lifecycle"
        expected += [("a", kind, event), ("b", kind, event)]
    expected += [("a", "close", None), ("b", "close", None)]
    assert seen == expected


def test_raising_observer_does_not_affect_others(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, str, Any]] = []

    async def scenario() -> None:
        chain = LoggerChain([Exploding(), Recorder("after", seen)])
        chain.start()
        chain.emit(log_event("one"))
        chain.emit(lifecycle_event("failed", error="ValueError: x"))
        await chain.close()

    with caplog.at_level(logging.WARNING, logger="taskflow.observers"):
        asyncio.run(scenario())

    assert [kind for _, kind, _ in seen] == ["log", "lifecycle", "close"]
    messages = [r.getMessage() for r in caplog.records if r.name == "taskflow.observers"]
    assert len(messages) == 3
    assert all("Exploding" in message for message in messages)


def test_slow_observer_is_timed_out_and_later_events_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, str, Any]] = []
    hanging = Hanging()

    async def scenario() -> None:
        chain = LoggerChain([hanging, Recorder("after", seen)], observer_timeout=0.05)
        chain.start()
        chain.emit(log_event("one"))
        chain.emit(log_event("two"))
        await chain.close()

    with caplog.at_level(logging.WARNING, logger="taskflow.observers"):
        asyncio.run(scenario())

    assert [e.message for _, kind, e in seen if kind == "log"] == ["one", "two"]
    assert hanging.started == hanging.cancelled == 2
    timeouts = [r.getMessage() for r in caplog.records if "timed out" in r.getMessage()]
    assert len(timeouts) == 2
    assert all("Hanging" in message for message in timeouts)


def test_emit_does_not_wait_for_observers() -> None:
    hanging = Hanging()

    async def scenario() -> None:
        chain = LoggerChain([hanging], observer_timeout=0.05)
        chain.start()
        chain.emit(log_event())
        # Let the drain task pick the event up, so the observer is now stuck.
        while hanging.started == 0:
            await asyncio.sleep(0)
        chain.emit(log_event("while busy"))
        # emit returned without delivering inline and without dropping.
        assert hanging.started == 1
        assert chain.dropped == 0
        await chain.close()

    asyncio.run(scenario())
    assert hanging.started == 2


def test_queue_full_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, str, Any]] = []

    async def scenario() -> LoggerChain:
        chain = LoggerChain([Recorder("a", seen)], queue_size=2)
        # Nothing drains before start(), so everything past the first two is dropped.
        for index in range(1005):
            chain.emit(log_event(str(index)))
        chain.start()
        await chain.close()
        return chain

    with caplog.at_level(logging.WARNING, logger="taskflow"):
        chain = asyncio.run(scenario())

    assert chain.dropped == 1003
    assert [e.message for _, kind, e in seen if kind == "log"] == ["0", "1"]
    drop_warnings = [r for r in caplog.records if r.name == "taskflow"]
    # First drop and the 1001st: at most one warning per 1000 drops.
    assert len(drop_warnings) == 2


def test_events_emitted_before_the_loop_runs_are_delivered() -> None:
    seen: list[tuple[str, str, Any]] = []
    chain = LoggerChain([Recorder("a", seen)])
    # Emitted with no event loop at all, e.g. while the application is being built.
    chain.emit(log_event("early"))

    async def scenario() -> None:
        chain.start()
        chain.emit(log_event("late"))
        await chain.close()

    asyncio.run(scenario())
    assert [e.message for _, kind, e in seen if kind == "log"] == ["early", "late"]


def test_close_without_start_still_delivers() -> None:
    seen: list[tuple[str, str, Any]] = []

    async def scenario() -> None:
        chain = LoggerChain([Recorder("a", seen)])
        chain.emit(log_event("early"))
        await chain.close()

    asyncio.run(scenario())
    assert [kind for _, kind, _ in seen] == ["log", "close"]


def test_emit_threadsafe_from_worker_thread() -> None:
    seen: list[tuple[str, str, Any]] = []

    async def scenario() -> None:
        chain = LoggerChain([Recorder("a", seen)])
        chain.start()
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(chain.emit_threadsafe, loop, log_event("from thread"))
        await chain.close()

    asyncio.run(scenario())
    assert [e.message for _, kind, e in seen if kind == "log"] == ["from thread"]


def test_emit_threadsafe_on_closed_loop_counts_drop() -> None:
    chain = LoggerChain([])
    loop = asyncio.new_event_loop()
    loop.close()
    chain.emit_threadsafe(loop, log_event())
    assert chain.dropped == 1


def test_close_is_idempotent_and_later_emits_are_ignored() -> None:
    seen: list[tuple[str, str, Any]] = []

    async def scenario() -> None:
        chain = LoggerChain([Recorder("a", seen)])
        chain.start()
        await chain.close()
        chain.emit(log_event("late"))
        await chain.close()

    asyncio.run(scenario())
    assert seen == [("a", "close", None)]


def test_close_timeout_bounds_draining(caplog: pytest.LogCaptureFixture) -> None:
    hanging = Hanging()

    async def scenario() -> None:
        chain = LoggerChain([hanging], observer_timeout=10)
        chain.start()
        chain.emit(log_event("one"))
        chain.emit(log_event("two"))
        await chain.close(timeout=0.05)

    with caplog.at_level(logging.WARNING, logger="taskflow.observers"):
        asyncio.run(scenario())

    # The first delivery was cut short by close(); the second never started.
    assert hanging.started == hanging.cancelled == 1
    assert any("not delivered" in r.getMessage() for r in caplog.records)


def test_observer_raising_cancelled_error_does_not_stop_drain() -> None:
    seen: list[tuple[str, str, Any]] = []

    class SelfCancelling(TaskObserver):
        async def on_log(self, event: LogEvent) -> None:
            raise asyncio.CancelledError

    async def scenario() -> None:
        chain = LoggerChain([SelfCancelling(), Recorder("a", seen)])
        chain.start()
        chain.emit(log_event("one"))
        chain.emit(log_event("two"))
        await chain.close()

    asyncio.run(scenario())
    assert [e.message for _, kind, e in seen if kind == "log"] == ["one", "two"]


def test_duck_typed_and_sync_observers_are_tolerated() -> None:
    seen: list[str] = []

    class SyncLogOnly:
        def on_log(self, event: LogEvent) -> None:
            seen.append(event.message)

    async def scenario() -> None:
        chain = build_chain(loggers=[SyncLogOnly()])  # type: ignore[list-item]
        assert chain is not None
        chain.start()
        chain.emit(log_event("sync"))
        chain.emit(lifecycle_event())
        await chain.close()

    asyncio.run(scenario())
    assert seen == ["sync"]


@pytest.mark.parametrize("kwargs", [{"queue_size": 0}, {"observer_timeout": 0}])
def test_chain_rejects_non_positive_limits(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LoggerChain([], **kwargs)


# --- FileLogger ----------------------------------------------------------------------------


def write_events(logger: FileLogger, events: list[LogEvent | LifecycleEvent]) -> None:
    """Deliver events through a real chain and close it."""

    async def scenario() -> None:
        chain = LoggerChain([logger])
        chain.start()
        for event in events:
            chain.emit(event)
        await chain.close()

    asyncio.run(scenario())


def test_file_logger_writes_log_lines(tmp_path: Path) -> None:
    path = tmp_path / "tasks.log"
    event = log_event(
        "sent mail",
        level="warning",
        extra={"recipient": "bob@example.com", "count": 3, "meta": {"a": [1, 2]}},
        tags={"tenant": "acme"},
    )
    logger = FileLogger(str(path))
    write_events(logger, [event, lifecycle_event("success", duration=1.5)])

    lines = read_lines(path)
    assert lines == [
        "2024-05-01T12:30:45.123Z WARNING send_email task-1 sent mail "
        'recipient=bob@example.com count=3 meta={"a": [1, 2]} tenant=acme'
    ]


def test_file_logger_keeps_each_event_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "tasks.log"
    logger = FileLogger(str(path))
    write_events(logger, [log_event("line one\nline two", extra={"trace": "a\r\nb"})])

    lines = read_lines(path)
    assert len(lines) == 1
    assert "line one\\nline two" in lines[0]
    assert "trace=a\\r\\nb" in lines[0]


def test_file_logger_writes_lifecycle_only_when_enabled(tmp_path: Path) -> None:
    quiet_path = tmp_path / "quiet.log"
    loud_path = tmp_path / "loud.log"
    events: list[LogEvent | LifecycleEvent] = [
        lifecycle_event("running", tags={"tenant": "acme"}),
        log_event("working"),
        lifecycle_event("failed", attempt=2, error="boom", duration=0.25),
    ]
    write_events(FileLogger(str(quiet_path)), events)
    write_events(FileLogger(str(loud_path), log_lifecycle=True), events)

    assert len(read_lines(quiet_path)) == 1
    running, working, failed = read_lines(loud_path)
    assert running.startswith("2024-05-01T12:30:45.123Z INFO send_email task-1 ")
    assert "status=running" in running and "tenant=acme" in running
    assert "working" in working
    assert failed.split()[1] == "ERROR"
    assert "status=failed" in failed and "attempt=2" in failed
    assert "error=boom" in failed and "duration=0.25" in failed


def test_file_logger_converts_times_to_utc(tmp_path: Path) -> None:
    path = tmp_path / "tasks.log"
    local = datetime(2024, 5, 1, 14, 30, 45, tzinfo=timezone(timedelta(hours=2)))
    write_events(FileLogger(str(path)), [log_event(at=local)])
    assert read_lines(path)[0].startswith("2024-05-01T12:30:45.000Z ")


def test_file_logger_rotates(tmp_path: Path) -> None:
    path = tmp_path / "tasks.log"
    logger = FileLogger(str(path), max_bytes=200, backup_count=2)
    write_events(logger, [log_event(f"message number {i}") for i in range(20)])

    assert path.exists()
    assert (tmp_path / "tasks.log.1").exists()
    assert (tmp_path / "tasks.log.2").exists()
    assert not (tmp_path / "tasks.log.3").exists()
    assert "message number 19" in path.read_text(encoding="utf-8")


def test_file_logger_watched_mode_reopens_moved_file(tmp_path: Path) -> None:
    path = tmp_path / "tasks.log"
    moved = tmp_path / "tasks.log.old"
    logger = FileLogger(str(path), mode="watched", max_bytes=10)

    async def scenario() -> None:
        await logger.on_log(log_event("before move"))
        # What logrotate does: move the file away and expect the writer to reopen it.
        os.rename(path, moved)
        await logger.on_log(log_event("after move"))
        await logger.close()

    asyncio.run(scenario())
    (before,) = read_lines(moved)
    (after,) = read_lines(path)
    assert "before move" in before
    assert "after move" in after
    # max_bytes is ignored in watched mode: no rotation happened.
    assert not (tmp_path / "tasks.log.1").exists()


def test_file_logger_rejects_unknown_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'rotate'.*'watched'"):
        FileLogger(str(tmp_path / "tasks.log"), mode="daily")
    assert not (tmp_path / "tasks.log").exists()


def test_file_logger_does_not_touch_root_logger(tmp_path: Path) -> None:
    root_handlers = list(logging.getLogger().handlers)
    known = set(logging.root.manager.loggerDict)
    logger = FileLogger(str(tmp_path / "tasks.log"))
    write_events(logger, [log_event()])
    assert logging.getLogger().handlers == root_handlers
    assert set(logging.root.manager.loggerDict) == known


def test_file_logger_ignores_events_after_close(tmp_path: Path) -> None:
    path = tmp_path / "tasks.log"
    logger = FileLogger(str(path))

    async def scenario() -> None:
        await logger.close()
        await logger.on_log(log_event("too late"))
        await logger.close()

    asyncio.run(scenario())
    assert path.read_text(encoding="utf-8") == ""


# --- build_chain ---------------------------------------------------------------------------


def close_chain(chain: LoggerChain) -> None:
    """Close a chain so its FileLoggers release their files."""
    asyncio.run(chain.close())


def test_build_chain_returns_none_without_observers() -> None:
    assert build_chain(loggers=None, log_file=None) is None
    assert build_chain(loggers=[], log_file=None) is None


def test_build_chain_adds_file_logger_for_log_file(tmp_path: Path) -> None:
    path = tmp_path / "tasks.log"
    recorder = Recorder("a", [])
    chain = build_chain(
        loggers=[recorder],
        log_file=str(path),
        log_file_max_bytes=1234,
        log_file_backup_count=3,
        log_file_mode="rotate",
        log_lifecycle=True,
    )
    assert chain is not None
    try:
        assert chain.observers[0] is recorder
        added = chain.observers[1]
        assert isinstance(added, FileLogger)
        assert added.path == str(path)
        assert added.log_lifecycle is True
    finally:
        close_chain(chain)


def test_build_chain_dedupes_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    existing = FileLogger("tasks.log")
    chain = build_chain(loggers=[existing], log_file=str(tmp_path / "tasks.log"))
    assert chain is not None
    try:
        assert chain.observers == [existing]
    finally:
        close_chain(chain)


def test_build_chain_keeps_different_files(tmp_path: Path) -> None:
    existing = FileLogger(str(tmp_path / "a.log"))
    chain = build_chain(loggers=[existing], log_file=str(tmp_path / "b.log"))
    assert chain is not None
    try:
        assert len(chain.observers) == 2
    finally:
        close_chain(chain)


def test_build_chain_rejects_non_observers() -> None:
    with pytest.raises(TypeError):
        build_chain(loggers=[object()])  # type: ignore[list-item]


def test_build_chain_bad_mode_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        build_chain(log_file=str(tmp_path / "x.log"), log_file_mode="nope")
