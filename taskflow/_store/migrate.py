"""Schema migrations: find the bundled Alembic files and run them.

taskflow keeps its Alembic revision in its own version table, ``taskflow_alembic_version``,
so it can share a database with an application that has its own ``alembic_version``.

* :func:`upgrade`, :func:`downgrade`, :func:`current` and :func:`head` are synchronous,
  for the CLI and scripts; each runs its own event loop, so do not call them from async
  code.
* :func:`prepare_schema` is the async check (and optional upgrade) done at startup.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from taskflow._store.engine import (
    create_engine,
    is_memory_sqlite,
    mask,
    normalize_url,
    write_options,
)
from taskflow.errors import SchemaOutOfDate

VERSION_TABLE = "taskflow_alembic_version"
# The SQLite file in the working folder that fastapi-task-manager's config= TaskManager
# falls back to (taskflow._compat.config). The CLI and env.py never default to it.
DEFAULT_URL = "sqlite+aiosqlite:///taskflow.db"
URL_ENV = "TASKFLOW_DATABASE_URL"
# For "no database given": how to give one (the CLI, and plain alembic via env.py).
URL_HELP = (
    f"pass --url URL or set {URL_ENV}, e.g. sqlite:///taskflow.db for a SQLite file in "
    "this folder or postgresql://user:password@host/dbname"
)
# Key for pg_advisory_lock: a fixed 64-bit number ("taskflow" as big-endian bytes) that
# every taskflow process agrees on, so concurrent starters serialize their upgrades.
ADVISORY_LOCK_KEY = 8386110886257651575

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent  # the taskflow package


def resource_path(name: str) -> pathlib.Path:
    """Locate a bundled resource: ``migrations``, ``alembic.ini``, ``templates`` or ``static``.

    :param name: the file or folder name at the top of the repository.
    :returns: ``taskflow/_resources/<name>`` in an installed wheel, else ``<name>`` in the
        repository checkout that holds the ``taskflow`` package.
    :raises FileNotFoundError: neither place has it; the message names both.
    """
    checkout = _PACKAGE_DIR.parent
    candidates = (_PACKAGE_DIR / "_resources" / name, checkout / name)
    if candidates[0].exists():
        return candidates[0]
    # Only a real checkout counts: in site-packages a top-level "migrations" folder
    # would belong to some other package.
    if (checkout / "pyproject.toml").exists() and candidates[1].exists():
        return candidates[1]
    raise FileNotFoundError(
        f"taskflow resource {name!r} not found; looked in {candidates[0]} and {candidates[1]}"
    )


def async_url(url: str) -> str:
    """Return ``url`` with taskflow's async driver, as text with the password kept.

    ``sqlite://`` becomes ``sqlite+aiosqlite://`` and ``postgresql://`` (or
    ``postgres://``) becomes ``postgresql+asyncpg://``; async URLs pass unchanged.

    :raises taskflow.errors.ConfigurationError: the URL is unparseable or names a
        database taskflow does not support (the message masks the password).
    """
    # One mapping for the whole package: the store's normalize_url owns it.
    return normalize_url(url).render_as_string(hide_password=False)


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (for messages and logs)."""
    return mask(url)


def missing_sqlite_file(url: str) -> pathlib.Path | None:
    """The absolute path of a SQLite URL's file when that file does not exist.

    Opening a missing SQLite file creates it, so commands that only report on a
    database (``current``, ``check``, ``downgrade``) ask first.

    :returns: None for PostgreSQL, an in-memory database, or a file that exists.
    :raises taskflow.errors.ConfigurationError: unsupported or unparseable URL.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite" or is_memory_sqlite(parsed):
        return None
    path = pathlib.Path(parsed.database or "")
    return None if path.exists() else path.absolute()


def describe_target(url: str) -> str:
    """Which database ``url`` names, for messages: a SQLite file's absolute path, else
    the URL with its password masked."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite" and not is_memory_sqlite(parsed):
        return f"SQLite file {pathlib.Path(parsed.database or '').absolute()}"
    return mask(url)


def alembic_config(url: str) -> Config:
    """Build the Alembic config for migrating the database at ``url``.

    script_location and version_locations are absolute paths to the bundled
    ``migrations`` folder, so the config works from any working directory.

    :param url: database URL, stored as the ``sqlalchemy.url`` option.
    :raises FileNotFoundError: the bundled alembic.ini or migrations folder is missing.
    """
    config = _base_config()
    _set_option(config, "sqlalchemy.url", url)
    return config


def head() -> str:
    """Return the head revision of taskflow's migrations (the revision this code needs).

    :raises alembic.util.exc.CommandError: the history has more than one head.
    :raises RuntimeError: the history has no revisions at all.
    """
    revision = _script().get_current_head()
    if revision is None:
        raise RuntimeError("taskflow's migrations folder has no revisions")
    return revision


def upgrade(url: str, revision: str = "heads") -> None:
    """Upgrade the database at ``url`` to ``revision`` (default: the newest).

    Runs its own event loop (``asyncio.run`` in env.py), so call it from sync code only;
    async code uses :func:`prepare_schema`.

    :raises taskflow.errors.ConfigurationError: unsupported or unparseable URL.
    :raises sqlalchemy.exc.SQLAlchemyError: the database failed or cannot be reached.
    :raises alembic.util.exc.CommandError: ``revision`` is unknown.
    """
    command.upgrade(alembic_config(async_url(url)), revision)


def downgrade(url: str, revision: str) -> None:
    """Downgrade the database at ``url`` to ``revision`` (``"base"`` drops every table).

    Same event loop rule and exceptions as :func:`upgrade`.
    """
    command.downgrade(alembic_config(async_url(url)), revision)


def current(url: str) -> str | None:
    """Return the database's taskflow revision, or ``None`` for a database without one.

    Several heads (not possible with taskflow's linear history) are joined by commas.

    :raises taskflow.errors.ConfigurationError: unsupported or unparseable URL.
    :raises sqlalchemy.exc.SQLAlchemyError: the database failed or cannot be reached.
    """
    heads = asyncio.run(_read_heads(async_url(url)))
    return ",".join(heads) if heads else None


async def prepare_schema(engine: AsyncEngine, *, auto_upgrade: bool, display_url: str) -> None:
    """Make sure the database schema is at :func:`head`, upgrading it if allowed.

    A database without ``taskflow_alembic_version`` counts as empty. With
    ``auto_upgrade`` the upgrade runs on one connection, under ``pg_advisory_lock`` on
    PostgreSQL (``BEGIN IMMEDIATE`` on SQLite), and the revision is checked again once the
    lock is held, so processes starting together upgrade exactly once.

    :param engine: taskflow's async engine.
    :param auto_upgrade: upgrade an older schema instead of raising.
    :param display_url: the URL with its password masked, for messages.
    :raises SchemaOutOfDate: the schema is older and ``auto_upgrade`` is false, or the
        database is at a revision this code does not know (a newer taskflow migrated it).
    :raises sqlalchemy.exc.SQLAlchemyError: connecting or migrating failed (not wrapped).
    """
    script = _script()
    expected = head()
    async with engine.connect() as conn:
        found = await conn.run_sync(_db_heads)
        # End the read transaction before possibly waiting for the lock.
        await conn.rollback()
        if not _needs_upgrade(script, found, expected, auto_upgrade, display_url):
            return
        async with _migration_lock(conn):
            # Another process may have upgraded while this one waited for the lock.
            found = await conn.run_sync(_db_heads)
            if not _needs_upgrade(script, found, expected, auto_upgrade, display_url):
                return
            await conn.run_sync(_upgrade_on_connection, expected)
            await conn.commit()


def _base_config() -> Config:
    """The bundled alembic.ini with absolute script and version locations."""
    migrations = resource_path("migrations")
    config = Config(str(resource_path("alembic.ini")))
    _set_option(config, "script_location", str(migrations))
    _set_option(config, "version_locations", str(migrations / "versions"))
    # Library calls must not reconfigure the host application's logging (env.py reads it).
    config.attributes["configure_logging"] = False
    return config


def _set_option(config: Config, key: str, value: str) -> None:
    """Set a main option; configparser would treat a ``%`` (in a password) as interpolation."""
    config.set_main_option(key, value.replace("%", "%%"))


def _script() -> ScriptDirectory:
    """The revision scripts bundled with this taskflow."""
    return ScriptDirectory.from_config(_base_config())


def _db_heads(connection: sa.Connection) -> tuple[str, ...]:
    """The revisions in ``taskflow_alembic_version``; empty when the table is missing."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_heads()


async def _read_heads(url: str) -> tuple[str, ...]:
    """Open a short-lived engine for ``url`` and read its taskflow revisions."""
    engine = create_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_db_heads)
    finally:
        await engine.dispose()


def _needs_upgrade(
    script: ScriptDirectory,
    found: tuple[str, ...],
    expected: str,
    auto_upgrade: bool,
    display_url: str,
) -> bool:
    """False when at head, True when an upgrade should run; raise when it must not."""
    if found == (expected,):
        return False
    known = {revision.revision for revision in script.walk_revisions()}
    unknown = [revision for revision in found if revision not in known]
    if unknown:
        raise SchemaOutOfDate(_newer_message(unknown, expected, display_url))
    if not auto_upgrade:
        raise SchemaOutOfDate(_older_message(found, expected, display_url))
    return True


def _older_message(found: tuple[str, ...], expected: str, display_url: str) -> str:
    """Explain an older (or empty) schema and the command that fixes it."""
    at = ", ".join(found) if found else "none (no taskflow tables yet)"
    return (
        f"taskflow database schema is out of date: database revision is {at}, "
        f"this version of taskflow needs {expected}. "
        f"Run: taskflow db upgrade --url {display_url} (or enable auto_upgrade)"
    )


def _newer_message(unknown: list[str], expected: str, display_url: str) -> str:
    """Explain a schema migrated by a newer taskflow; upgrading the db cannot help."""
    return (
        f"taskflow database schema is newer than this version of taskflow: database "
        f"revision is {', '.join(unknown)}, unknown here; this version needs {expected}. "
        f"Install the newer taskflow, or use it to run: "
        f"taskflow db downgrade --revision {expected} --url {display_url}"
    )


@asynccontextmanager
async def _migration_lock(conn: AsyncConnection) -> AsyncIterator[None]:
    """Hold the database-wide migration lock on ``conn`` for the body of the block."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_advisory_lock(ADVISORY_LOCK_KEY)))
        # A session lock outlives this commit; it is released explicitly below.
        await conn.commit()
        try:
            yield
        finally:
            # A failed upgrade leaves an aborted transaction that would refuse the unlock.
            await conn.rollback()
            await conn.execute(sa.select(sa.func.pg_advisory_unlock(ADVISORY_LOCK_KEY)))
            await conn.commit()
        return
    # SQLite: taskflow's engine starts this connection's next transaction with
    # BEGIN IMMEDIATE, taking the write lock before the re-check; other starters wait on
    # the busy timeout and then see the new revision.
    await write_options(conn)
    try:
        yield
    finally:
        await conn.rollback()


def _upgrade_on_connection(connection: sa.Connection, revision: str) -> None:
    """Run ``alembic upgrade`` on an open connection; env.py leaves the commit to us."""
    config = _base_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
