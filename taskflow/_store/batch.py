"""Group commit: many small writes from many callers share one transaction.

Callers hand an operation to :meth:`GroupCommitter.submit` and await its future. A single
flusher task collects whatever is waiting, runs it in one write transaction grouped by
kind (all inserts in one ``executemany``, all starts in one ``UPDATE ... RETURNING``) and
resolves every future at commit. How a batch is written is the store's business: the
committer hands it the operations grouped by kind, in order. Under load a batch grows to
cover everything that arrived while the previous commit was in flight, so durability
costs one commit per batch instead of one per task.

With ``lanes=2`` (PostgreSQL) a second batch may start while one is in flight, so the
application and the database stop taking turns. Log lines and finishes are *ordered*
kinds: only one batch holding them is in flight at a time, so log ids grow in commit
order (a live tail reading ``id > last`` never skips a line) and a task's finish never
commits before its earlier log lines and progress reports. Inserts and starts need no
such care: a task's start is queued only after its insert has committed, and its finish
after its start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from taskflow.errors import (
    DatabaseError,
    DatabaseFull,
    DatabaseReadOnly,
    DatabaseUnavailable,
    NotStarted,
)

logger = logging.getLogger("taskflow._store")

D = TypeVar("D")


MAX_BATCH = 1000
# Failures of the database as a whole, not of one operation: a batch is not split on them.
WHOLE_DATABASE_ERRORS = (DatabaseUnavailable, DatabaseFull, DatabaseReadOnly)
ORDERED_KINDS = frozenset({"log", "progress", "finish"})


@dataclass(slots=True)
class Op(Generic[D]):
    """One queued write: its kind (handler name), its data and the caller's future.

    The committer never looks at the result: the kind's handler and the code that
    submits that kind agree on what it is.
    """

    kind: str
    data: D
    future: asyncio.Future[object] = field(repr=False)


# The operations of one batch by kind, kinds in the committer's order.
Groups = list[tuple[str, Sequence[Op[D]]]]
# Writes a batch in one transaction: one result list per group, one result per operation.
WriteBatch = Callable[[Groups[D]], Awaitable[Sequence[Sequence[object]]]]


class GroupCommitter(Generic[D]):
    """Runs queued operations in shared write transactions.

    ``write_batch`` writes a batch's operations, grouped by kind in ``order``, in one
    transaction and returns one result per operation of each group. ``lanes`` is how
    many batches may be in flight at once. A failing batch is retried one operation per
    transaction so a single bad operation fails alone, unless the database as a whole
    failed (``WHOLE_DATABASE_ERRORS``): then every operation of the batch fails with that
    error at once.
    """

    def __init__(
        self,
        *,
        write_batch: WriteBatch[D],
        order: Sequence[str],
        lanes: int = 1,
    ) -> None:
        self._write_batch = write_batch
        self._order = list(order)
        self._lanes = lanes
        self._queue: list[Op[D]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start the flusher on the running loop."""
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="taskflow-commit")

    def submit(self, kind: str, data: D) -> asyncio.Future[object]:
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
        in_flight: dict[asyncio.Task[None], bool] = {}  # batch → holds ordered kinds
        while True:
            await self._wake.wait()
            # Let every coroutine that is ready now add its write first: one pass of the
            # loop costs microseconds and makes batches (and so commits) far fewer.
            await asyncio.sleep(0)
            self._wake.clear()
            while self._queue:
                batch = None
                if len(in_flight) < self._lanes:
                    batch = self._take(ordered=not any(in_flight.values()))
                if not batch:  # every lane busy, or only ordered work that must wait
                    done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for flush in done:
                        del in_flight[flush]
                    continue
                flush = asyncio.get_running_loop().create_task(self._commit(batch))
                in_flight[flush] = any(op.kind in ORDERED_KINDS for op in batch)
            for flush in [flush for flush in in_flight if flush.done()]:
                del in_flight[flush]
            if self._closing:
                if in_flight:
                    await asyncio.wait(in_flight)
                return

    def _take(self, *, ordered: bool) -> list[Op[D]]:
        """The next batch in queue order; without ``ordered``, ordered kinds stay queued."""
        if ordered:
            taken, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            return taken
        batch: list[Op[D]] = []
        rest: list[Op[D]] = []
        for op in self._queue:
            if op.kind in ORDERED_KINDS or len(batch) >= MAX_BATCH:
                rest.append(op)
            else:
                batch.append(op)
        self._queue = rest
        return batch

    async def _commit(self, batch: list[Op[D]]) -> None:
        try:
            results = await self._execute(batch)
        except Exception as exc:  # noqa: BLE001 - isolate the failing operation below
            if len(batch) == 1 or isinstance(exc, WHOLE_DATABASE_ERRORS):
                # Locked, down, full or read-only: every operation would fail the same
                # way, one busy timeout after another, so they fail together now.
                for op in batch:
                    _fail(op, exc)
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

    async def _execute(self, batch: list[Op[D]]) -> list[object]:
        by_kind: dict[str, list[Op[D]]] = {}
        for op in batch:
            by_kind.setdefault(op.kind, []).append(op)
        groups: Groups[D] = [(kind, by_kind[kind]) for kind in self._order if kind in by_kind]
        results: dict[int, object] = {}
        for (_kind, ops), outcome in zip(groups, await self._write_batch(groups), strict=True):
            results.update(zip(map(id, ops), outcome, strict=True))
        return [results[id(op)] for op in batch]


def _fail(op: Op[D], exc: Exception) -> None:
    if op.future.done():
        return
    if not isinstance(exc, DatabaseError):
        wrapped = DatabaseError(f"could not write to the task database: {exc}")
        wrapped.__cause__ = exc
        exc = wrapped
    op.future.set_exception(exc)
