"""Real uvicorn processes serving ``tests/apps/web.py`` for the process tests, and a
small synchronous reader of the task tables.

Nothing here sleeps blindly: readiness is an HTTP answer, exits are ``Popen.wait`` with
a timeout, and everything else polls with a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from taskflow._store import engine as engines
from taskflow._store.rows import AttemptRow, TaskRow, attempt_history

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 20.0


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One uvicorn process serving ``tests.apps.web:app`` on ``db_url``.

    Output (stdout and stderr) goes to ``log_dir/<name>.log``; :meth:`log` reads it back.
    Used as a context manager, the process is always gone on exit (SIGKILL if needed).

    With ``workers=N``, uvicorn runs in its multiprocess mode (``--workers N``): ``pid``
    is then the supervising parent, which serves nothing itself; :meth:`children` lists
    the processes it spawned. The parent gets its own process group, so :meth:`kill`
    takes the workers down with it.
    """

    def __init__(
        self,
        db_url: str,
        log_dir: Path,
        name: str = "server",
        *,
        heartbeat: float = 1.0,
        instance_timeout: float = 5.0,
        extra_env: dict[str, str] | None = None,
        workers: int | None = None,
    ) -> None:
        self.db_url = db_url
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self.heartbeat = heartbeat
        self.instance_timeout = instance_timeout
        self.extra_env = extra_env or {}
        self.workers = workers
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self, *, wait: bool = True) -> Server:
        """Spawn the process (and wait until it answers, unless ``wait=False``)."""
        assert self.proc is None, f"{self.name} already started"
        self.port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "TASKFLOW_SERVE_TEST_APP": "1",
            "TASKFLOW_DATABASE_URL": self.db_url,
            "TASKFLOW_HEARTBEAT": str(self.heartbeat),
            "TASKFLOW_INSTANCE_TIMEOUT": str(self.instance_timeout),
            **self.extra_env,
        }
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.apps.web:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        if self.workers is not None:
            command += ["--workers", str(self.workers)]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=self.workers is not None,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll ``GET /docs`` until it answers 200; fail early if the process exits."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise AssertionError(
                        f"{self.name} exited with {code} before it was ready:\n{self.log()}"
                    )
                try:
                    if client.get(f"{self.url}/docs").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready after {timeout}s:\n{self.log()}")
                time.sleep(0.05)

    @property
    def url(self) -> str:
        assert self.port is not None, f"{self.name} not started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (uvicorn's graceful shutdown) and wait; returns the exit code.

        Raises AssertionError when the process is still alive after ``timeout``.
        """
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s of SIGTERM:\n{self.log()}"
            ) from None
        self._reap()
        return code

    def kill(self) -> int:
        """SIGKILL and reap (a zombie would still look alive to ``os.kill(pid, 0)``).

        With ``workers``, the whole process group is killed (the parent and its workers).
        """
        assert self.proc is not None
        if self.workers is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        elif self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait(10)
        self._reap()
        return code

    def children(self) -> list[int]:
        """Process ids whose parent is this server's process (its uvicorn workers, and
        any helper process such as multiprocessing's resource tracker)."""
        assert self.proc is not None
        return child_pids(self.proc.pid)

    def _reap(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log(self, tail: int = 12000) -> str:
        """The process output so far (its last ``tail`` characters)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "<no log>"
        return text[-tail:]

    def __enter__(self) -> Server:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        self._reap()


def child_pids(parent: int) -> list[int]:
    """Process ids whose parent is ``parent`` (Linux ``/proc``; zombies left out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces, so split after ")".
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def start_all(servers: list[Server]) -> list[Server]:
    """Spawn every server first, then wait for each (parallel imports save time)."""
    for server in servers:
        server.start(wait=False)
    for server in servers:
        server.wait_ready()
    return servers


class Database:
    """Synchronous SQL on the test database, with taskflow's own engine settings
    (SQLite busy timeout), for checking what the servers stored."""

    def __init__(self, url: str) -> None:
        self._runner = asyncio.Runner()
        self._engine = engines.create_engine(engines.normalize_url(url), pool_size=2)

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        async def run() -> list[dict[str, Any]]:
            async with self._engine.connect() as conn:
                result = await conn.execute(sa.text(sql), params)
                return [dict(row) for row in result.mappings()]

        return self._runner.run(run())

    def tasks(self) -> dict[str, dict[str, Any]]:
        """Every task row by id (the columns the tests look at)."""
        rows = self.rows(
            "SELECT id, func_name, status, attempts, error, owner, "
            "idempotency_key FROM taskflow_tasks"
        )
        return {row["id"]: row for row in rows}

    def attempts(self) -> dict[str, list[AttemptRow]]:
        """Every task's attempts by task id, first first, as the store reads them back
        (the stored rows of ended attempts, then the task row's own)."""
        ended: dict[str, list[AttemptRow]] = collections.defaultdict(list)
        for row in self.rows("SELECT * FROM taskflow_task_attempts"):
            ended[row["task_id"]].append(AttemptRow.of(row))
        return {
            row["id"]: attempt_history(TaskRow.of(row), ended[row["id"]])
            for row in self.rows("SELECT * FROM taskflow_tasks")
        }

    def close(self) -> None:
        self._runner.run(self._engine.dispose())
        self._runner.close()


def post(url: str, path: str, **params: Any) -> Any:
    """POST and return the JSON body, failing on a non-200 answer."""
    response = httpx.post(f"{url}{path}", params=params, timeout=30.0)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


def poll(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Call ``condition`` until it returns something truthy (returned), or fail after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def read_runs(path: Path) -> collections.Counter[str]:
    """Runs per task id, from the ``$TASKFLOW_TEST_RUN_LOG`` side channel."""
    if not path.exists():
        return collections.Counter()
    return collections.Counter(line.split()[0] for line in path.read_text().splitlines())


# -- load that records every answer ------------------------------------------------------------


@dataclass(slots=True)
class Answer:
    """One enqueue request: when it was sent and answered (``time.monotonic()``), its
    HTTP status (``"transport"`` when no answer came) and body."""

    route: str
    sent: float
    answered: float
    status: int | str
    body: Any
    retry_after: str | None = None


class Load:
    """Client threads posting ``/counted`` and ``/counted-sync`` in turn to ``url`` until
    :meth:`stop`. Every answer is kept; the ids of the 200 answers are the acknowledged
    tasks. The client timeout is long: a request that has no answer within it counts as
    a hang (status ``"transport"``)."""

    ROUTES = ("/counted", "/counted-sync")

    def __init__(
        self,
        url: str,
        *,
        threads: int = 6,
        batch: int = 5,
        seconds: float = 0.05,
        timeout: float = 120.0,
    ) -> None:
        self.url = url
        self.batch = batch
        self.seconds = seconds
        self.timeout = timeout
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="load")
        self._futures = [self._pool.submit(self._fire, i) for i in range(threads)]

    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    def acknowledged(self) -> list[str]:
        return [t for a in self.answers() if a.status == 200 for t in a.body["task_ids"]]

    def ok_after(self, moment: float) -> int:
        """200 answers to requests sent after ``moment``."""
        return sum(1 for a in self.answers() if a.status == 200 and a.sent > moment)

    def _fire(self, index: int) -> None:
        turn = index
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                route = self.ROUTES[turn % len(self.ROUTES)]
                turn += 1
                sent = time.monotonic()
                try:
                    response = client.post(
                        f"{self.url}{route}", params={"count": self.batch, "seconds": self.seconds}
                    )
                except httpx.TransportError as exc:
                    answer = Answer(route, sent, time.monotonic(), "transport", repr(exc))
                else:
                    try:
                        body = response.json()
                    except ValueError:
                        body = response.text[:2000]
                    answer = Answer(
                        route,
                        sent,
                        time.monotonic(),
                        response.status_code,
                        body,
                        response.headers.get("retry-after"),
                    )
                with self._lock:
                    self._answers.append(answer)
                if answer.status != 200:
                    self._stop.wait(0.1)  # a refusal comes fast: do not spin on it

    def stop(self, timeout: float) -> list[Answer]:
        """Stop sending, wait for the requests in flight; returns every answer."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for future in self._futures:
            future.result(timeout=max(deadline - time.monotonic(), 0.1))
        self._pool.shutdown()
        return self.answers()


# -- faults: a SQLite lock held by another process, a full disk, a read-only mount -----------

_SQLITE_LOCKER = """
import sqlite3, sys, time
path, hold = sys.argv[1], float(sys.argv[2])
conn = sqlite3.connect(path, isolation_level=None, timeout=60)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(hold)  # the outage itself: the lock is held this long
conn.execute("COMMIT")
conn.close()
print("released", flush=True)
"""


class SqliteLock:
    """Another process (plain ``python`` with the ``sqlite3`` module) that takes
    ``BEGIN EXCLUSIVE`` on a SQLite database and holds it for ``hold`` seconds.

    :meth:`wait_locked` and :meth:`wait_released` return ``time.monotonic()`` when the
    locker reported the lock taken and given back."""

    def __init__(self, path: Path, hold: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SQLITE_LOCKER, str(path), str(hold)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._buffer = b""

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the SQLite locker said nothing for {timeout}s")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError(f"the SQLite locker exited: {self._buffer!r}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    def wait_locked(self, timeout: float = 60.0) -> float:
        line = self._line(timeout)
        assert line == "locked", line
        return time.monotonic()

    def wait_released(self, timeout: float) -> float:
        line = self._line(timeout)
        assert line == "released", line
        released = time.monotonic()
        assert self.proc.wait(10) == 0
        return released

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def mount_or_skip(args: list[str], what: str) -> None:
    """Run ``mount`` with ``args``; skip the test (naming ``what``) when this machine does
    not allow it (not root, no CAP_SYS_ADMIN in a container)."""
    import pytest

    result = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"{what} needs mount (root with CAP_SYS_ADMIN): {result.stderr.strip()}")


def unmount(path: Path) -> None:
    """Unmount ``path`` (lazily if something still holds it open)."""
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode:
        subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True, timeout=30)


def fill_disk(directory: Path) -> Path:
    """Write a ballast file in ``directory`` until its file system has no space left
    (a real ENOSPC); returns the ballast, whose deletion gives the space back."""
    ballast = directory / "ballast"
    chunk = b"\0" * 65536
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return ballast
                chunk = chunk[: len(chunk) // 2]  # fill the last partial block too
    finally:
        os.close(fd)


def integrity_check(path: Path) -> str:
    """``PRAGMA integrity_check`` of a SQLite file, read with Python's sqlite3 module
    (read-only, so the check itself cannot repair or change anything)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


# -- PostgreSQL's cluster (for the tests that stop or restart it) ------------------------------


def pg_cluster() -> tuple[str, str]:
    """The (version, cluster name) to stop or restart: the newest version under
    /etc/postgresql and ``$TASKFLOW_TEST_PG_CLUSTER`` (default ``main``)."""
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".")])
    return versions[-1], os.environ.get("TASKFLOW_TEST_PG_CLUSTER", "main")


def pg_ctl(action: str) -> None:
    """``pg_ctlcluster <version> <cluster> <action>`` (start, stop, restart)."""
    version, cluster = pg_cluster()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def pg_ready(url: str) -> bool:
    """True when PostgreSQL at ``url`` accepts connections (``pg_isready``)."""
    parsed = make_url(url)
    host, port = parsed.host or "127.0.0.1", str(parsed.port or 5432)
    command = ["pg_isready", "-q", "-h", host, "-p", port, "-t", "1"]
    return subprocess.run(command, capture_output=True, timeout=10).returncode == 0
