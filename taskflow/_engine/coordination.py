"""How one process cooperates with the others on the same database.

Each running TaskManager is an *instance* with a heartbeat row. This module keeps the
heartbeat, takes over the tasks of instances that stopped, claims tasks nobody owns,
notices cancellations requested from other processes, and listens for PostgreSQL
notifications so claimable work starts within milliseconds (polling stays as the
fallback, and is enough alone, e.g. behind a transaction-mode pooler).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from taskflow._engine import retention
from taskflow._engine.guard import StepGuard
from taskflow._engine.runner import utcnow
from taskflow._engine.submission import job_from_row

if TYPE_CHECKING:
    from taskflow._store.sql import Listener
    from taskflow.manager import TaskManager

logger = logging.getLogger("taskflow")

CLAIM_BATCH = 100
# A task this instance owns in the database but has not known about for this long (its
# commit's acknowledgement was lost, say) is settled as if the instance had died.
ORPHAN_AGE = 120.0


class Coordinator:
    """The background loops of one instance."""

    def __init__(self, manager: TaskManager) -> None:
        self.manager = manager
        self.hostname = socket.gethostname()
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._listener: Listener | None = None
        self._guard = StepGuard("taskflow")

    def wake(self) -> None:
        """Look for claimable tasks now."""
        self._wake.set()

    async def start(self) -> None:
        """Register this instance, take over stopped ones and start the loops."""
        self._wake = asyncio.Event()
        await self.register()
        await self.rescue_dead()
        manager = self.manager
        self._loops = [
            asyncio.create_task(self._poll_loop(), name="taskflow-poll"),
            asyncio.create_task(self._heartbeat_loop(), name="taskflow-heartbeat"),
            asyncio.create_task(manager.scheduler.run(), name="taskflow-scheduler"),
        ]
        if manager.retention_days is not None:
            self._loops.append(
                asyncio.create_task(self._retention_loop(), name="taskflow-retention")
            )
        self._listener = await self._guard("listen", lambda: manager.db.listen(self._notified))

    async def stop(self) -> None:
        """Stop every loop and the listener."""
        for loop_task in self._loops:
            loop_task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        if self._listener is not None:
            await self._listener.close()
            self._listener = None

    # -- instance row ----------------------------------------------------------------

    async def register(self) -> None:
        """Insert this instance's row."""
        now = utcnow()
        manager = self.manager
        await manager.db.register_instance(
            {
                "id": manager.instance_id,
                "hostname": self.hostname,
                "pid": os.getpid(),
                "queues": list(manager.queues),
                "started_at": now,
                "heartbeat_at": now,
                "info": self.info(),
            }
        )

    def info(self) -> dict[str, Any]:
        """What the dashboard shows about this instance."""
        manager = self.manager
        dispatcher = manager._dispatcher
        return {
            "running": len(dispatcher.running) if dispatcher else 0,
            "waiting": dispatcher.waiting() if dispatcher else 0,
            "threads": manager.executors.thread_workers,
            "processes": manager.executors.process_workers,
            "max_concurrent_tasks": manager.max_concurrent_tasks,
        }

    async def rescue_dead(self) -> None:
        """Settle the tasks of instances whose heartbeat is stale, or which ran on this
        host under a process id that no longer exists (a restart after ``kill -9``)."""
        manager, db = self.manager, self.manager.db
        local = await db.host_instances(hostname=self.hostname, me=manager.instance_id)
        dead_pids = [row["pid"] for row in local if not _pid_alive(row["pid"])]
        stale_before = utcnow() - timedelta(seconds=manager.instance_timeout)
        for instance in await db.dead_instances(
            me=manager.instance_id,
            stale_before=stale_before,
            hostname=self.hostname,
            dead_pids=dead_pids,
        ):
            counts = await db.settle_instance(
                instance, now=utcnow(), reason=f"instance {instance} stopped while it ran"
            )
            logger.warning("took over tasks of stopped instance %s: %s", instance, counts)
            self._wake.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.manager.heartbeat_interval)
            await self._guard("heartbeat", self._beat)

    async def _beat(self) -> None:
        manager = self.manager
        alive = await manager.db.heartbeat(manager.instance_id, now=utcnow(), info=self.info())
        if not alive:
            logger.error(
                "instance %s was declared dead by another process; re-registering",
                manager.instance_id,
            )
            await self.register()
        await self.rescue_dead()
        await self.reconcile()

    async def reconcile(self) -> None:
        """Settle tasks the database says this instance owns but this process does not
        know: pending ones become claimable, running ones are re-queued or interrupted."""
        manager = self.manager
        before = utcnow() - timedelta(seconds=ORPHAN_AGE)
        owned = await manager.db.owned_since(owner=manager.instance_id, before=before)
        orphans = [task_id for task_id in owned if task_id not in manager.known_task_ids()]
        if not orphans:
            return
        counts = await manager.db.settle_instance(
            manager.instance_id,
            now=utcnow(),
            only=orphans,
            reason="this instance lost track of the task (a database reply was lost)",
        )
        logger.warning("settled %d tasks this instance had lost track of: %s", len(orphans), counts)
        self._wake.set()

    # -- claiming and cancelling ---------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.manager.poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            self.manager.release_stale_holds()
            await self._guard("claim", self._claim)
            await self._guard("cancel requests", self._apply_cancel_requests)

    async def _claim(self) -> None:
        manager = self.manager
        dispatcher = manager._dispatcher
        assert dispatcher is not None
        free = min(dispatcher.free_slots(), CLAIM_BATCH)
        if free <= 0:
            return
        rows = await manager.db.claim_tasks(
            instance=manager.instance_id, queues=manager.queues, limit=free, now=utcnow()
        )
        for row in rows:
            dispatcher.submit(
                job_from_row(row, manager.config_or_none(row["func_name"], row["func_path"]))
            )
        if len(rows) == free:
            self._wake.set()

    async def _apply_cancel_requests(self) -> None:
        """Cancel running tasks of ours that another process asked to cancel."""
        manager = self.manager
        for task_id in await manager.db.cancel_requests(owner=manager.instance_id):
            manager.cancel_running(task_id)

    def _notified(self, payload: str) -> None:
        self._wake.set()

    # -- retention -----------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        manager = self.manager
        while True:
            await self._guard(
                "retention",
                lambda: retention.run_if_due(
                    manager.db,
                    days=manager.retention_days or 0,
                    interval=manager.retention_interval,
                ),
            )
            await asyncio.sleep(min(manager.retention_interval, 3600))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
