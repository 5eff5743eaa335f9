"""Group commit: many small writes from many callers share one transaction.

Callers hand an operation to :meth:`GroupCommitter.submit` and await its future. A single
flusher task collects whatever is waiting, runs it in one write transaction grouped by
kind (all inserts in one ``executemany``, all starts in one ``UPDATE ... RETURNING``) and
resolves every future at commit. Under load a batch grows to cover everything that
arrived while the previous commit was in flight, so durability costs one commit per batch
instead of one per task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow.errors import DatabaseError, NotStarted

logger = logging.getLogger("taskflow.store")

Handler = Callable[[AsyncConnection, Sequence["Op"]], Awaitable[Sequence[Any]]]
Transaction = Callable[[], Any]  # returns an async context manager yielding a connection

MAX_BATCH = 1000


@dataclass(slots=True)
class Op:
    """One queued write: its kind (handler name), its data and the caller's future."""

    kind: str
    data: Any
    future: asyncio.Future[Any] = field(repr=False)


class GroupCommitter:
    """Runs queued operations in shared write transactions.

    ``handlers`` maps a kind to ``async (conn, ops) -> results`` (one result per op, in
    order). ``order`` is the order kinds run in within a batch. ``transaction`` opens a
    write transaction. A failing batch is retried one operation per transaction so a
    single bad operation fails alone.
    """

    def __init__(
        self, *, handlers: dict[str, Handler], order: Sequence[str], transaction: Transaction
    ) -> None:
        self._handlers = handlers
        self._order = list(order)
        self._transaction = transaction
        self._queue: list[Op] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start the flusher on the running loop."""
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="taskflow-commit")

    def submit(self, kind: str, data: Any) -> asyncio.Future[Any]:
        """Queue one operation; the returned future resolves after its commit."""
        if self._task is None or self._closing:
            raise NotStarted("the task store is not open; start the TaskManager first")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(Op(kind, data, future))
        self._wake.set()
        return future

    @property
    def backlog(self) -> int:
        """Operations waiting for the next commit."""
        return len(self._queue)

    async def close(self) -> None:
        """Commit what is queued, then stop the flusher."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            # Let every coroutine that is ready now add its write first: one pass of the
            # loop costs microseconds and makes batches (and so commits) far fewer.
            await asyncio.sleep(0)
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._commit(batch)
            if self._closing:
                return

    async def _commit(self, batch: list[Op]) -> None:
        try:
            results = await self._execute(batch)
        except Exception as exc:  # noqa: BLE001 - isolate the failing operation below
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            logger.warning(
                "group commit of %d operations failed (%s); retrying one by one", len(batch), exc
            )
            for op in batch:
                await self._commit([op])
            return
        for op, result in zip(batch, results, strict=True):
            if not op.future.done():
                op.future.set_result(result)

    async def _execute(self, batch: list[Op]) -> list[Any]:
        by_kind: dict[str, list[Op]] = {}
        for op in batch:
            by_kind.setdefault(op.kind, []).append(op)
        results: dict[int, Any] = {}
        async with self._transaction() as conn:
            for kind in self._order:
                ops = by_kind.get(kind)
                if ops:
                    outcome = await self._handlers[kind](conn, ops)
                    results.update(zip(map(id, ops), outcome, strict=True))
        return [results[id(op)] for op in batch]


def _fail(op: Op, exc: Exception) -> None:
    if op.future.done():
        return
    if not isinstance(exc, DatabaseError):
        wrapped = DatabaseError(f"could not write to the task database: {exc}")
        wrapped.__cause__ = exc
        exc = wrapped
    op.future.set_exception(exc)
