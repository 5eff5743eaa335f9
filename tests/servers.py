"""Real uvicorn processes serving ``tests/apps/web.py`` for the process tests, and a
small synchronous reader of the task tables.

Nothing here sleeps blindly: readiness is an HTTP answer, exits are ``Popen.wait`` with
a timeout, and everything else polls with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from taskflow.store import engine as engines

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
            if fields[0] != "Z" and int(fields[1]) == self.proc.pid:
                found.append(int(entry.name))
        return found

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

    def close(self) -> None:
        self._runner.run(self._engine.dispose())
        self._runner.close()


def post(url: str, path: str, **params: Any) -> Any:
    """POST and return the JSON body, failing on a non-200 answer."""
    response = httpx.post(f"{url}{path}", params=params, timeout=30.0)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()
