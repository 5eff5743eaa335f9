"""``wait()``: a task's final record, as soon as the task ends, whichever process ran it.

Three signals end a wait; the record returned (without its log lines) is read once the
end is committed:

- the runner of this process says a task ended here (:meth:`Waiters.ended`);
- on PostgreSQL, the notification sent with every commit of finishes
  (:data:`~taskflow._store.rows.TASKS_ENDED`) says a task ended in another process;
- otherwise a poll with backoff, from :data:`FIRST_POLL` up to :data:`LAST_POLL` seconds
  (SQLite across processes, or a task ended without either signal, e.g. cancelled
  before it started).

Nothing is kept for tasks nobody waits on: a signal for such a task costs a dict lookup.
"""

from __future__ import annotations

import asyncio
import contextlib

from taskflow._engine.reader import TaskReader
from taskflow._store.ids import task_id_forms
from taskflow._store.rows import ended_ids
from taskflow._store.schema import TERMINAL_STATUSES
from taskflow.errors import TaskNotFound
from taskflow.records import TaskRecord

FIRST_POLL = 0.05  # seconds before the first look when no signal came
LAST_POLL = 2.0  # the longest pause between looks


class Waiters:
    """The callers of :meth:`wait` in this process, by task id.

    Args:
        reader: reads the task (the same decoding as ``get_task``).
    """

    def __init__(self, reader: TaskReader) -> None:
        self._reader = reader
        # True resolves a wait (the task's end is committed); False asks for a look.
        self._waiting: dict[str, set[asyncio.Future[bool]]] = {}

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskRecord:
        """The task's record once it has ended (``success``, ``failed``, ``cancelled``,
        ``interrupted`` or ``rejected``), read after the end was committed, with its
        attempts but without its log lines (``get_task`` reads those). A task pending
        again for a retry has not ended: the wait goes on to its last attempt.

        Args:
            task_id: the task's id, in either shape ``get_task`` accepts.
            timeout: most seconds to wait for the end (None: no limit); a task that
                has ended already is returned even with ``timeout=0``. The task is not
                affected when the wait gives up.

        Raises:
            TimeoutError: the task did not end within ``timeout`` seconds.
            TaskNotFound: no task has this id.
            NotStarted: the manager is not running.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        stored, status = await self._look(task_id)
        if status not in TERMINAL_STATUSES:
            async with asyncio.timeout_at(deadline):
                await self._wait_for_end(stored)
        record = await self._reader.get_task(stored, logs=False)
        if record is None:  # deleted right after it ended
            raise TaskNotFound(f"no task with id {task_id!r}")
        return record

    async def _wait_for_end(self, task_id: str) -> None:
        keys = task_id_forms(task_id)  # a signal names the stored shape of the id
        pause = 0.0  # read once more right after registering: no end slips between
        while True:
            signal: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            for key in keys:
                self._waiting.setdefault(key, set()).add(signal)
            try:
                if pause:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(pause):
                            if await signal:  # its end is committed: nothing to look at
                                return
                _stored, status = await self._look(task_id)
            finally:
                self._forget(keys, signal)
            if status in TERMINAL_STATUSES:
                return
            pause = min(max(pause * 2, FIRST_POLL), LAST_POLL)

    async def _look(self, task_id: str) -> tuple[str, str]:
        """The task's stored id and status (one row read: the record is read once, at
        the end)."""
        found = await self._reader.status(task_id)
        if found is None:
            raise TaskNotFound(f"no task with id {task_id!r}")
        return found

    def _forget(self, keys: tuple[str, ...], signal: asyncio.Future[bool]) -> None:
        signal.cancel()
        for key in keys:
            waiting = self._waiting.get(key)
            if waiting is not None:
                waiting.discard(signal)
                if not waiting:
                    del self._waiting[key]

    @property
    def count(self) -> int:
        """Waits in progress (each may be listed under both id shapes)."""
        return len({id(signal) for signals in self._waiting.values() for signal in signals})

    def ended(self, task_id: str) -> None:
        """Task ``task_id`` ended (its end is committed): wake whoever waits on it."""
        self._signal(task_id, committed=True)

    def _signal(self, task_id: str, *, committed: bool) -> None:
        for signal in self._waiting.get(task_id, ()):
            if not signal.done():
                signal.set_result(committed)

    def notified(self, payload: str) -> bool:
        """Act on a store notification; True when it was about ended tasks (a bare one,
        or a lost connection, wakes every waiter)."""
        if payload == "reconnected":
            self.wake_all()
            return False
        ids = ended_ids(payload)
        if ids is None:
            return False
        if not ids:
            self.wake_all()
        for task_id in ids:
            self.ended(task_id)
        return True

    def wake_all(self) -> None:
        """Make every waiter read its task's status again."""
        for task_id in list(self._waiting):
            self._signal(task_id, committed=False)
