"""Database chores of the benchmark: fresh SQLite files, the PostgreSQL bench database,
bulk seeding, and reading task rows back without going through taskflow."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/taskflow_bench"
PROTECTED = ("taskflow_test", "taskflow_mine", "postgres", "template0", "template1")
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime on SQLite


def fresh_sqlite(path: Path) -> Path:
    """Remove a SQLite file and its WAL companions; returns ``path``."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def pg_params(url: str) -> dict[str, Any]:
    """asyncpg connection arguments for a PostgreSQL URL (any driver suffix)."""
    parsed = make_url(url)
    return {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "password": parsed.password,
        "database": parsed.database,
    }


async def _prepare_pg(url: str) -> str:
    import asyncpg

    params = pg_params(url)
    name = params["database"]
    if not name or name in PROTECTED:
        raise ValueError(f"refusing to use database {name!r} for benchmarks")
    admin = await asyncpg.connect(**{**params, "database": "postgres"}, timeout=5)
    try:
        version = await admin.fetchval("SHOW server_version")
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return str(version)


async def _reset_pg(url: str) -> None:
    import asyncpg

    params = pg_params(url)
    if params["database"] in PROTECTED:
        raise ValueError(f"refusing to reset database {params['database']!r}")
    conn = await asyncpg.connect(**params, timeout=5)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


def prepare_pg(url: str) -> str | None:
    """Create the bench database if missing; the server version, or None when no
    PostgreSQL answers (PostgreSQL scenarios are then reported as skipped)."""
    try:
        return asyncio.run(asyncio.wait_for(_prepare_pg(url), 15))
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means: no PostgreSQL here
        print(f"PostgreSQL not available at {url}: {type(exc).__name__}: {exc}")
        return None


def reset_pg(url: str) -> None:
    """Drop every table of the bench database (never a protected one)."""
    asyncio.run(asyncio.wait_for(_reset_pg(url), 30))


def migrate_sqlite(path: Path) -> None:
    """Create taskflow's schema in a SQLite file (its Alembic migrations)."""
    from taskflow._store import migrate

    migrate.upgrade(f"sqlite:///{path}")


def seed_tasks(path: Path, count: int) -> float:
    """Insert ``count`` finished tasks, each with its own idempotency key, in one SQL
    statement (no API round trips); returns the seconds it took."""
    from taskflow._payloads.payloads import Payloads

    payload = Payloads(None).encode_call((0,), {})
    stamp = datetime.now(UTC).replace(tzinfo=None).strftime(SQLITE_TIME)
    began = datetime.now(UTC)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(
            """
            WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n + 1 < ?)
            INSERT INTO taskflow_tasks (
                id, func_name, func_path, status, payload, encrypted, attempts, max_retries,
                priority, queue, tags, idempotency_key, source, requeue_on_interrupt,
                cancel_requested, created_at, started_at, finished_at, next_attempt_at)
            SELECT printf('seed%028d', n), 'noop', 'bench.app:noop', 'success', ?, 0, 1, 0,
                0, 'default', '{}', 'seed-' || n, 'manual', 0, 0, ?, ?, ?, ?
            FROM seq
            """,
            (count, payload, stamp, stamp, stamp, stamp),
        )
    return (datetime.now(UTC) - began).total_seconds()


def count_tasks(path: Path) -> int:
    """Rows in ``taskflow_tasks`` of a SQLite file."""
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM taskflow_tasks").fetchone()[0])


def scheduled_rows(path: Path) -> list[dict[str, datetime | None]]:
    """``schedule_slot``, ``created_at`` and ``started_at`` of every scheduled task."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT schedule_slot, created_at, started_at FROM taskflow_tasks "
            "WHERE source = 'scheduled' ORDER BY schedule_slot"
        ).fetchall()
    names = ("slot", "created", "started")
    return [{name: _parse(value) for name, value in zip(names, row, strict=True)} for row in rows]


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)
