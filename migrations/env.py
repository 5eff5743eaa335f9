"""Alembic environment for taskflow's tables (SQLite and PostgreSQL, one history).

Three ways in:

* ``config.attributes["connection"]`` holds a sync :class:`sqlalchemy.engine.Connection`
  (taskflow's startup passes one from ``AsyncConnection.run_sync``): migrate on it and
  leave the commit to the caller when it is already inside a transaction.
* offline mode (``alembic upgrade --sql``): render SQL for the configured URL.
* otherwise: open taskflow's own async engine for the configured URL and run the
  migrations through ``run_sync`` inside ``asyncio.run``.

The URL comes from the ``sqlalchemy.url`` option (set by
:func:`taskflow._store.migrate.alembic_config`),
else ``TASKFLOW_DATABASE_URL``; with neither, the command stops with a message saying how
to give one. Plain ``alembic`` commands other than ``upgrade`` and ``stamp`` refuse a
SQLite file that does not exist rather than create an empty one to report on.
"""

from __future__ import annotations

import asyncio
import os
import sys
from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context
from alembic.util import CommandError

from taskflow._store.engine import create_engine, normalize_url
from taskflow._store.migrate import (
    URL_ENV,
    VERSION_TABLE,
    async_url,
    describe_target,
    missing_sqlite_file,
)
from taskflow._store.schema import is_text_search_object, metadata

config = context.config

# Library callers set configure_logging=False: rewiring the host application's logging
# from inside TaskManager startup would be rude. The plain alembic CLI keeps it.
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


# Plain alembic commands that may create the database they are given.
CREATING_COMMANDS = {"upgrade", "stamp"}


def database_url() -> str:
    """The URL to migrate: the config option, then ``TASKFLOW_DATABASE_URL``.

    :raises alembic.util.CommandError: neither is set (alembic prints the message).
    """
    url = config.get_main_option("sqlalchemy.url") or os.environ.get(URL_ENV)
    if not url:
        raise CommandError(
            f"no database given: set {URL_ENV}, e.g. "
            f"{URL_ENV}=sqlite:///taskflow.db alembic upgrade head "
            "(or postgresql://user:password@host/dbname)"
        )
    return url


def refuse_missing_file(url: str) -> None:
    """Stop a plain ``alembic`` command that only reads (``current``, ``check``,
    ``downgrade``...) before it creates an empty SQLite file; taskflow's own callers
    (``cmd_opts`` is None) check for themselves."""
    options = config.cmd_opts
    command = getattr(getattr(options, "cmd", (None,))[0], "__name__", None)
    if command is None or command in CREATING_COMMANDS:
        return
    missing = missing_sqlite_file(url)
    if missing is not None:
        raise CommandError(
            f"the SQLite database {missing} does not exist (nothing was created); check "
            f"{URL_ENV}, or create it with: alembic upgrade head"
        )


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate filter: only taskflow's own tables.

    The database may be shared with the application, whose tables must never show up
    as "removed" in a taskflow revision. The version table is not in ``metadata`` either,
    nor are the text search's FTS5 tables and trigram indexes (revision 0006).
    """
    if is_text_search_object(name):
        return False
    if type_ == "table":
        return name in metadata.tables
    return True


def configure(**kwargs: object) -> None:
    """Configure the migration context with taskflow's fixed options plus ``kwargs``."""
    context.configure(
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things; batch mode recreates the table instead, and is
        # a plain ALTER on PostgreSQL, so one revision script serves both dialects.
        render_as_batch=True,
        include_name=include_name,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit the migration SQL to stdout instead of running it."""
    configure(
        url=async_url(database_url()),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_on(connection: sa.Connection) -> None:
    """Run the migrations on a sync connection (own engine or one passed by the caller)."""
    configure(connection=connection)
    # No-op when the caller's connection is already in a transaction: the caller commits.
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_with_own_engine() -> None:
    """Open taskflow's async engine for the URL, migrate, and always dispose of it."""
    # taskflow's engine (not a bare one) so SQLite gets the same explicit BEGIN handling,
    # pragmas and busy timeout as the running store.
    url = database_url()
    refuse_missing_file(url)
    if config.cmd_opts is not None:  # plain alembic: say which database this is
        print(f"database: {describe_target(url)}", file=sys.stderr)
    engine = create_engine(normalize_url(url), migrating=True)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(run_migrations_on)
            await conn.commit()
    finally:
        await engine.dispose()


def main() -> None:
    """Pick the offline, passed-connection or own-engine path."""
    if context.is_offline_mode():
        run_migrations_offline()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations_on(connection)
    else:
        asyncio.run(run_migrations_with_own_engine())


main()
