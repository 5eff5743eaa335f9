"""Real uvicorn server processes and the load generator process.

Every wait here is bounded: readiness, quiescence and exits poll with a deadline, and
the load generator gets a hard timeout on top of its own count and time bounds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(extra: dict[str, str]) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class Server:
    """One uvicorn process serving ``bench.app:app`` (or ``app``) for one variant.

    Args:
        variant: ``plain``, ``fastapi_taskflow`` or ``taskflow``.
        database: SQLite path or PostgreSQL URL (ignored by ``plain``).
        log_path: where the server's output goes.
        env: further ``BENCH_*`` settings (see :mod:`bench.app`).
        app: the ASGI app to serve, as ``module:attribute`` (it must answer ``/health``).
    """

    def __init__(
        self,
        variant: str,
        database: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        app: str = "bench.app:app",
    ) -> None:
        self.variant = variant
        self.database = database
        self.log_path = log_path
        self.env = env or {}
        self.app = app
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int | None = None) -> Server:
        """Spawn uvicorn on ``port`` (default: a free loopback port) and wait until it
        answers."""
        self.port = port or free_port()
        env = _env({"BENCH_VARIANT": self.variant, "BENCH_DB": self.database, **self.env})
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    self.app,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.variant} server exited early:\n{self.log_tail()}")
            try:
                self.get("/health", timeout=1.0)
                return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.variant} server not ready in {READY_TIMEOUT}s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str, timeout: float = 10.0) -> dict[str, Any]:
        """GET ``path`` and decode its JSON body."""
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return json.loads(response.read())

    def stats(self, *, db: bool = False) -> dict[str, Any]:
        """The app's counters (``db``: with taskflow's successful row count)."""
        return self.get("/stats?db=1" if db else "/stats")

    def wait_idle(self, timeout: float = 120.0, *, rows: bool = False) -> bool:
        """Wait until every task enqueued so far has run; False on timeout.

        ``rows``: count successful task rows instead of this process's runs (the tasks
        run in another process, a standalone worker)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.stats(db=rows)
            if counts["success_rows" if rows else "done"] >= counts["enqueued"]:
                return True
            time.sleep(0.02)
        return False

    def memory_kb(self) -> dict[str, int]:
        """Resident set size now and at its peak, in KiB, from /proc."""
        fields: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
        return {"rss_kb": fields.get("VmRSS", 0), "peak_kb": fields.get("VmHWM", 0)}

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far, from /proc."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (graceful shutdown) and wait; SIGKILL if it does not exit in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would, and reap the process."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def worker_command(target: str, queues: list[str]) -> list[str]:
    """``taskflow worker`` from this environment (the console script, else the module)."""
    script = Path(sys.executable).parent / "taskflow"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "taskflow.cli"]
    return [*base, "worker", target, "--queues", ",".join(queues)]


class Worker:
    """A standalone ``taskflow worker`` process serving ``queues`` of ``target``'s manager
    (``module:attribute``), logging to ``log_path``; ``env`` holds its ``BENCH_*`` settings."""

    def __init__(self, target: str, queues: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.command = worker_command(target, queues)
        self.env = _env(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        """Spawn it and wait until it says it is ready."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"taskflow worker exited early:\n{self._tail()}")
            if "taskflow worker ready" in self._tail():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"taskflow worker not ready in {READY_TIMEOUT}s:\n{self._tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker has used so far, from /proc."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def _tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return ""


def load(server: Server, path: str, **spec: Any) -> dict[str, Any]:
    """Run the load generator in its own process against ``server``; its summary.

    ``spec`` holds :class:`bench.loadgen.Spec` fields (connections, requests, duration,
    pause, keep_indices, method).
    """
    body = json.dumps({"port": server.port, "path": path, **spec})
    limit = float(spec.get("duration", 10.0)) + 60.0
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", body],
        cwd=ROOT,
        env=_env({}),
        capture_output=True,
        timeout=limit,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.decode(errors='replace')}")
    return json.loads(done.stdout)
