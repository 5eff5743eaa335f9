"""What every scenario gets: settings, a scratch folder, the variants that can run and
the PostgreSQL URL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import Settings
from bench.databases import fresh_sqlite
from bench.server import Server

SERVER_VARIANTS = ("plain", "fastapi_taskflow", "taskflow")
# taskflow whose tasks a standalone `taskflow worker` runs (enqueue overhead only), and
# the database driver alone making taskflow's row writes (bench/raw_limit.py): no server.
VARIANTS = (*SERVER_VARIANTS, "taskflow_worker", "raw_driver")
LABELS = {
    "plain": "FastAPI BackgroundTasks (floor)",
    "fastapi_taskflow": "fastapi-taskflow (PyPI)",
    "taskflow": "taskflow",
    "taskflow_worker": "taskflow, standalone worker",
    "raw_driver": "raw driver (limit)",
}


@dataclass
class Context:
    """Shared state of one benchmark run.

    Attributes:
        settings: counts and durations of this mode.
        work: scratch folder for databases, markers and server logs.
        unavailable: variants that cannot run here, with the reason.
        pg_url: the PostgreSQL bench database, or None when there is none.
    """

    settings: Settings
    work: Path
    unavailable: dict[str, str] = field(default_factory=dict)
    pg_url: str | None = None
    started: float = field(default_factory=time.monotonic)

    def variants(self, *wanted: str) -> list[str]:
        """The variants among ``wanted`` (default: every server variant) that can run here."""
        return [v for v in (wanted or SERVER_VARIANTS) if v not in self.unavailable]

    def sqlite(self, name: str) -> Path:
        """A fresh SQLite file path in the scratch folder."""
        return fresh_sqlite(self.work / f"{name}.db")

    def server(self, variant: str, database: str | Path, name: str, **env: str) -> Server:
        """An (unstarted) server for ``variant``, logging to ``<name>.log``."""
        return Server(variant, str(database), self.work / f"{name}.log", env=env)

    def log(self, message: str) -> None:
        """Progress on stdout, with the time since the run began."""
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)


@contextmanager
def running(*servers: Server) -> Iterator[list[Server]]:
    """Start ``servers`` and always stop them (gracefully, then by force)."""
    started: list[Server] = []
    try:
        for server in servers:
            started.append(server.start())
        yield started
    finally:
        for server in started:
            server.stop()


def rotated(items: list[str], shift: int) -> list[str]:
    """``items`` rotated by ``shift``, so that no variant always runs first."""
    if not items:
        return items
    shift %= len(items)
    return items[shift:] + items[:shift]
