"""How one process cooperates with the others on the same database.

Each running TaskManager is an *instance* with a heartbeat row. This module keeps the
heartbeat, takes over the tasks of instances that stopped, claims tasks nobody owns,
notices cancellations requested from other processes, and listens for PostgreSQL
notifications so claimable work starts within milliseconds (polling stays as the
fallback, and is enough alone, e.g. behind a transaction-mode pooler).

Self-fencing: another instance takes this one's tasks over once its heartbeat is
``instance_timeout`` old. So an instance that is only cut off from the database (a
network partition: alive, but unable to renew its heartbeat) must stop first. It holds a
*lease* of ``instance_timeout - 2 x heartbeat_interval`` seconds, counted on its own
monotonic clock from when the last heartbeat that went through was *sent* (so clocks of
other machines do not matter). When the lease runs out it is *fenced*: it claims and
starts nothing, cancels its running async tasks, kills the workers of its process tasks
and flags its thread tasks (``is_cancelled()``; a thread cannot be killed, so a sync
task that does not check keeps running). Once a heartbeat goes through again it
settles every task it still owns as if it had died (re-runnable ones go back to the
queue, others end ``interrupted``), re-registers if it was taken over meanwhile, and
carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Any

from taskflow._engine import dbclock, retention
from taskflow._engine.executors import ExecutorPool
from taskflow._engine.guard import StepGuard
from taskflow._engine.intake import Intake
from taskflow._engine.job import utcnow
from taskflow._engine.queues import Queues
from taskflow._engine.registry import TaskRegistry
from taskflow._engine.runtime import Runtime
from taskflow._engine.settings import Settings
from taskflow._engine.submission import job_from_row
from taskflow._store.protocol import Listening
from taskflow._store.rows import PAUSES_CHANGED, InstanceRow

logger = logging.getLogger("taskflow")

SWEEP_EVERY = 1.0  # seconds between sweeps of blocked tasks, at the least

CLAIM_BATCH = 100
# A task this instance owns in the database but has not known about for this long (its
# commit's acknowledgement was lost, say) is settled as if the instance had died.
ORPHAN_AGE = 120.0


class Coordinator:
    """The background loops of one instance.

    Args:
        runtime: the manager's running state.
        settings: the intervals and limits it reads (they may change before startup).
        queues: the queues this process serves.
        executors: reported with the instance's heartbeat.
        intake: what this process holds, and how to stop a task running here.
        registry: the config of claimed tasks' functions.
        waiters: hears every notification first; True when it was about ended tasks
            (nothing to claim then).
        sweep: starts blocked tasks whose dependencies have ended.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        settings: Settings,
        queues: Queues,
        executors: ExecutorPool,
        intake: Intake,
        registry: TaskRegistry,
        waiters: Callable[[str], bool] | None = None,
        sweep: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self._runtime = runtime
        self._settings = settings
        self._queues = queues
        self._executors = executors
        self._intake = intake
        self._registry = registry
        self._waiters = waiters
        self._sweep = sweep
        self._swept_at = float("-inf")  # loop time of the last sweep of blocked tasks
        self.hostname = socket.gethostname()
        self._wake = asyncio.Event()
        # When the paused queues were last read (loop time), and whether a notification
        # said they changed since: the poll loop reads them once per poll_interval, not
        # on every wake-up (a notification per enqueue wakes it on PostgreSQL).
        self._pauses_read_at = float("-inf")
        self._pauses_changed = True
        self._loops: list[asyncio.Task[None]] = []
        self._listener: Listening | None = None
        self._guard = StepGuard("taskflow")
        # time.monotonic() when the last heartbeat that went through was sent.
        self._lease_from = time.monotonic()

    def wake(self) -> None:
        """Look for claimable tasks now."""
        self._wake.set()

    async def start(
        self, loops: Mapping[str, Callable[[], Coroutine[Any, Any, None]]] | None = None
    ) -> None:
        """Register this instance, take over stopped ones and start the loops, with
        ``loops`` (by name: the scheduler's) beside them."""
        self._wake = asyncio.Event()
        self._settings.check_lease()  # settings may have changed since they were made
        self._runtime.fenced = False
        sent = time.monotonic()
        await self.register()
        self._lease_from = sent
        await self.rescue_dead()
        self._loops = [
            asyncio.create_task(self._poll_loop(), name="taskflow-poll"),
            asyncio.create_task(self._heartbeat_loop(), name="taskflow-heartbeat"),
            asyncio.create_task(self._lease_loop(), name="taskflow-lease"),
        ]
        for name, loop in (loops or {}).items():
            self._loops.append(asyncio.create_task(loop(), name=f"taskflow-{name}"))
        if self._settings.retention_days is not None:
            self._loops.append(
                asyncio.create_task(self._retention_loop(), name="taskflow-retention")
            )
        db = self._runtime.db
        self._listener = await self._guard("listen", lambda: db.listen(self._notified))

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
        await self._runtime.db.register_instance(
            InstanceRow(
                id=self._runtime.instance_id,
                hostname=self.hostname,
                pid=os.getpid(),
                queues=list(self._queues.served),
                started_at=now,
                heartbeat_at=now,
                info=self.info(),
            )
        )

    def info(self) -> dict[str, Any]:
        """What the dashboard shows about this instance."""
        dispatcher = self._runtime.dispatcher
        return {
            "running": len(dispatcher.running) if dispatcher else 0,
            "waiting": dispatcher.waiting() if dispatcher else 0,
            "threads": self._executors.thread_workers,
            "processes": self._executors.process_workers,
            "max_concurrent_tasks": self._settings.max_concurrent_tasks,
        }

    async def rescue_dead(self) -> None:
        """Settle the tasks of instances whose heartbeat is stale, or which ran on this
        host under a process id that no longer exists (a restart after ``kill -9``)."""
        db, me = self._runtime.db, self._runtime.instance_id
        local = await db.host_pids(hostname=self.hostname, me=me)
        dead_pids = [pid for pid in local.values() if not _pid_alive(pid)]
        stale_before = utcnow() - timedelta(seconds=self._settings.instance_timeout)
        for instance in await db.dead_instances(
            me=me,
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
            await asyncio.sleep(self._settings.heartbeat_interval)
            await self._guard("heartbeat", self._beat)

    async def _beat(self) -> None:
        me = self._runtime.instance_id
        await dbclock.follow(self._runtime.db)  # a stepped host clock is corrected here
        sent = time.monotonic()
        alive = await self._runtime.db.heartbeat(me, now=utcnow(), info=self.info())
        if not alive or self._runtime.fenced:
            await self._come_back(alive=alive, sent=sent)
        self._lease_from = sent
        await self.rescue_dead()
        await self.reconcile()

    # -- self-fencing ------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Fence this instance when its lease runs out (see the module's docstring)."""
        while True:
            left = self._lease_from + self._settings.lease() - time.monotonic()
            if left > 0:
                await asyncio.sleep(min(left, self._settings.heartbeat_interval))
                continue
            if not self._runtime.fenced:
                self.fence(f"no heartbeat went through for {self._settings.lease():g} s")
            await asyncio.sleep(self._settings.heartbeat_interval)

    def fence(self, why: str) -> list[asyncio.Task[None]]:
        """Start nothing more and stop every task running here; returns the stopped
        tasks. Async tasks are cancelled, process tasks' workers killed; thread tasks
        are flagged (``is_cancelled()``): a thread cannot be killed."""
        runtime = self._runtime
        if not runtime.fenced:
            logger.error(
                "instance %s fenced itself (%s): another instance may take over its tasks, "
                "so it stops its running tasks and starts none until a heartbeat goes "
                "through again",
                runtime.instance_id,
                why,
            )
        runtime.fenced = True
        dispatcher = runtime.dispatcher
        if dispatcher is None:
            return []
        stopped = []
        for task_id, running in list(dispatcher.running.items()):
            job = dispatcher.job(task_id)
            if job is not None:
                job.cancel_reason = "fenced"  # not "cancelled": no outcome is written
                job.cancel.set()
                if job.executor == "process":
                    self._executors.kill_process_task(task_id)
            running.cancel()
            stopped.append(running)
        return stopped

    async def _come_back(self, *, alive: bool, sent: float) -> None:
        """A heartbeat went through after this instance was fenced, or it was taken
        over (``alive`` False): settle what it still owns, re-register, carry on."""
        me = self._runtime.instance_id
        if not alive:
            logger.error(
                "instance %s was declared dead by another process; it drops what it had "
                "claimed and re-registers",
                me,
            )
        stopped = self.fence("it was taken over" if not alive else "it was fenced")
        if stopped:  # cancelled async tasks end at once; abandoned threads are not awaited
            await asyncio.wait(stopped, timeout=self._settings.heartbeat_interval)
        counts = await self._runtime.db.settle_instance(
            me,
            now=utcnow(),
            reason=f"instance {me} was cut off from the database for longer than its lease",
            remove=False,
        )
        if not alive:
            await self.register()
        self._lease_from = sent
        self._runtime.fenced = False
        logger.warning("instance %s reaches the database again; settled its tasks: %s", me, counts)
        self._wake.set()

    async def reconcile(self) -> None:
        """Settle tasks the database says this instance owns but this process does not
        know: pending ones become claimable, running ones are re-queued or interrupted."""
        db, me = self._runtime.db, self._runtime.instance_id
        before = utcnow() - timedelta(seconds=ORPHAN_AGE)
        owned = await db.owned_since(owner=me, before=before)
        known = self._intake.known_task_ids()
        orphans = [task_id for task_id in owned if task_id not in known]
        if not orphans:
            return
        counts = await db.settle_instance(
            me,
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
                async with asyncio.timeout(self._settings.poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            self._intake.release_stale_holds()
            await self._refresh_paused()
            await self._sweep_blocked()
            await self._guard("claim", self.claim_now)
            await self._guard("cancel requests", self._apply_cancel_requests)

    async def _sweep_blocked(self) -> None:
        """Once per poll interval, at most once a second: start blocked tasks whose
        dependencies have ended (elsewhere, or before a crash); one indexed read when
        none is blocked."""
        now = asyncio.get_running_loop().time()
        every = max(self._settings.poll_interval, SWEEP_EVERY)
        if self._sweep is not None and now - self._swept_at >= every:
            self._swept_at = now
            await self._guard("dependencies", self._sweep)

    async def _refresh_paused(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._pauses_changed or now - self._pauses_read_at >= self._settings.poll_interval:
            self._pauses_changed, self._pauses_read_at = False, now
            await self._guard("paused queues", self._queues.refresh_paused)

    async def claim_now(self) -> int:
        """Claim due tasks nobody owns, as the poll loop does; how many were claimed."""
        dispatcher = self._runtime.dispatcher
        assert dispatcher is not None
        if self._runtime.fenced:
            return 0
        free = min(dispatcher.free_slots(), CLAIM_BATCH)
        queues = self._queues.claimable()  # never a paused queue's tasks
        if free <= 0 or not queues:
            return 0
        rows = await self._runtime.db.claim_tasks(
            instance=self._runtime.instance_id,
            queues=queues,
            limit=free,
            now=utcnow(),
        )
        for task in rows:
            config = self._registry.config_or_none(task.func_name, task.func_path)
            self._runtime.dispatch(job_from_row(task, config))
        if len(rows) == free:
            self._wake.set()
        return len(rows)

    async def _apply_cancel_requests(self) -> None:
        """Cancel running tasks of ours that another process asked to cancel."""
        db = self._runtime.db
        for task_id in await db.cancel_requests(owner=self._runtime.instance_id):
            self._intake.cancel_running(task_id)

    def _notified(self, payload: str) -> None:
        if self._waiters is not None and self._waiters(payload):
            return  # tasks ended: nothing became claimable
        if payload in (PAUSES_CHANGED, "reconnected"):
            self._pauses_changed = True
        self._wake.set()

    # -- retention -----------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        settings = self._settings
        while True:
            await self._guard(
                "retention",
                lambda: retention.run_if_due(
                    self._runtime.db,
                    days=settings.retention_days or 0,
                    interval=settings.retention_interval,
                ),
            )
            await asyncio.sleep(min(settings.retention_interval, 3600))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
