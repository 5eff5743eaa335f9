"""Two PostgreSQL clusters of the test's own, a primary and its streaming replica, on
loopback ports of their own, for the failover tests.

The server binaries are PostgreSQL's own (``initdb``, ``pg_ctl``, ``pg_basebackup``)
from ``pg_config --bindir`` or the newest ``/usr/lib/postgresql/<version>/bin``.
PostgreSQL refuses to run as root, so as root every command runs as the ``postgres`` OS
user (``runuser``) in a temporary folder that user owns. :meth:`PgPair.close` stops both
servers and removes the folder; it runs also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.servers import child_pids, free_port

PG_USER = "postgres"


def pg_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None when none is installed."""
    found = shutil.which("pg_config")
    if found:
        result = subprocess.run([found, "--bindir"], capture_output=True, text=True, timeout=30)
        candidate = Path(result.stdout.strip())
        if result.returncode == 0 and (candidate / "initdb").exists():
            return candidate
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: [int(part) for part in p.parent.name.split(".") if part.isdigit()],
    )
    return versions[-1] if versions else None


def unavailable_reason() -> str | None:
    """Why the clusters cannot be made on this machine (None when they can)."""
    if pg_bindir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"running as root, and there is no {PG_USER!r} OS user to run PostgreSQL"
        if shutil.which("runuser") is None:
            return "running as root without runuser to drop to the postgres user"
    return None


class Cluster:
    """One PostgreSQL server: its data folder, port and postmaster."""

    def __init__(self, pair: PgPair, name: str) -> None:
        self.pair = pair
        self.name = name
        self.data = pair.root / name
        self.port = free_port()
        self.killed = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def processes(self) -> list[int]:
        """The postmaster and every process it started (backends, WAL sender...)."""
        postmaster = self.postmaster_pid()
        return [postmaster, *child_pids(postmaster)]

    def start(self) -> None:
        self.pair.run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.pair.root / f"{self.name}.log"),
            "start",
        )

    def psql(self, sql: str) -> str:
        """Run ``sql`` with psql on this server; returns its unaligned output."""
        return self.pair.run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            PG_USER,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qtAc",
            sql,
        ).strip()

    def log(self) -> str:
        path = self.pair.root / f"{self.name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else "<no log>"


class PgPair:
    """A primary and a streaming replica of it (``pg_basebackup -R``).

    With ``synchronous=True`` the primary names the replica in
    ``synchronous_standby_names``: a commit returns only once the replica has flushed
    it. The replica gets no such setting, so once promoted it commits alone.
    """

    def __init__(self, *, synchronous: bool) -> None:
        bindir = pg_bindir()
        assert bindir is not None, unavailable_reason()
        self.bindir = bindir
        self.synchronous = synchronous
        self.root = Path(tempfile.mkdtemp(prefix="taskflow-failover-"))
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            entry = pwd.getpwnam(PG_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.primary = Cluster(self, "primary")
        self.replica = Cluster(self, "replica")

    def run(self, program: str, *args: str) -> str:
        command = [str(self.bindir / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", PG_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.root)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        return result.stdout

    def url(self, database: str = "postgres") -> str:
        """The multi-host URL taskflow connects with: both servers, read-write only."""
        return (
            f"postgresql+asyncpg://{PG_USER}@/{database}?host={self.primary.address}"
            f"&host={self.replica.address}&target_session_attrs=read-write"
        )

    def start(self) -> PgPair:
        primary, replica = self.primary, self.replica
        self.run("initdb", "-D", str(primary.data), "-U", PG_USER, "-A", "trust", "--no-sync")
        settings = {
            "port": str(primary.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "60",
            "shared_buffers": "'32MB'",
            "fsync": "off",  # kill -9 of a process loses nothing fsync would keep
            "wal_level": "replica",
            "max_wal_senders": "4",
            "hot_standby": "on",
            "wal_receiver_status_interval": "1",
        }
        with (primary.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        primary.start()
        self.run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            PG_USER,
            "-D",
            str(replica.data),
            "-R",
            "-X",
            "stream",
            "--no-sync",
        )
        with (replica.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {replica.port}\n")
        replica.start()
        self.wait_streaming()
        if self.synchronous:
            primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
            primary.psql("SELECT pg_reload_conf()")
            self._wait(
                lambda: primary.psql("SELECT sync_state FROM pg_stat_replication") == "sync",
                "the replica to be synchronous",
            )
        return self

    def wait_streaming(self) -> None:
        self._wait(
            lambda: self.primary.psql("SELECT state FROM pg_stat_replication") == "streaming",
            "the replica to stream",
        )

    def kill_primary(self) -> None:
        """``kill -9`` of the primary's postmaster and of every process it started, as
        when its machine fails (a stopped WAL sender would never notice the postmaster's
        death); returns once nothing listens on its port."""
        for pid in self.primary.processes():
            os.kill(pid, signal.SIGKILL)
        self.primary.killed = True
        self._wait(lambda: not self.accepts(self.primary.port), "the primary to be gone")

    def promote(self) -> None:
        """``pg_ctl promote`` the replica and wait until it accepts writes."""
        self.run("pg_ctl", "-D", str(self.replica.data), "-w", "-t", "60", "promote")
        self._wait(lambda: self.replica.psql("SELECT pg_is_in_recovery()") == "f", "the promotion")

    @staticmethod
    def accepts(port: int) -> bool:
        import socket

        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    @staticmethod
    def _wait(condition: object, what: str, timeout: float = 60.0) -> None:
        assert callable(condition)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(AssertionError):
                if condition():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.1)

    def close(self) -> None:
        """Stop both servers (immediate mode), release the shared memory of a killed
        one, and remove every file they had."""
        for cluster in (self.replica, self.primary):
            pid_file = cluster.data / "postmaster.pid"
            if not pid_file.exists():
                continue
            if not cluster.killed:
                with contextlib.suppress(OSError, ValueError):
                    for pid in cluster.processes():  # a test may have stopped one
                        os.kill(pid, signal.SIGCONT)
                with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                    self.run("pg_ctl", "-D", str(cluster.data), "-m", "immediate", "stop")
            with contextlib.suppress(OSError, IndexError, ValueError):
                lines = pid_file.read_text().splitlines()
                shmid = lines[6].split()[1]  # "<key> <id>" of the SysV segment
                subprocess.run(["ipcrm", "-m", shmid], capture_output=True, timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
