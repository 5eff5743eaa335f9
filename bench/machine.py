"""What the figures were measured on: CPU, cores, memory, software and databases."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "taskflow-sql",
    "fastapi-taskflow",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    """Total memory in GiB from /proc/meminfo (0.0 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def versions() -> dict[str, str]:
    """Installed versions of the packages that matter here ("not installed" if absent)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def load_average() -> float:
    """The 1-minute load average (other work on the machine skews every figure)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def revision(root: Path) -> str:
    """The checkout's commit, with "+ uncommitted changes" when the tree is dirty
    (``TASKFLOW_BENCH_REVISION`` overrides it, e.g. for a run on an exported tree)."""
    if os.environ.get("TASKFLOW_BENCH_REVISION"):
        return os.environ["TASKFLOW_BENCH_REVISION"]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "taskflow"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = len(dirty.stdout.splitlines())
    suffix = f" + uncommitted changes in {changed} file(s) under taskflow/" if changed else ""
    return head.stdout.strip() + suffix


def describe(pg_version: str | None, root: Path) -> dict[str, Any]:
    """The setup every figure shares."""
    return {
        "revision": revision(root),
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "memory_gib": memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg_version or "not available",
        "packages": versions(),
        "server": "uvicorn, 1 process, HTTP/1.1 (h11), asyncio loop, access log off",
        "load_generator": "bench/loadgen.py: asyncio keep-alive HTTP/1.1 client, "
        "separate process, loopback",
    }
