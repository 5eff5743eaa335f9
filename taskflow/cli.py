"""The ``taskflow`` command line.

    taskflow db upgrade   [--url URL] [--revision REV]
    taskflow db downgrade --revision REV [--url URL]
    taskflow db current   [--url URL]
    taskflow db check     [--url URL]
    taskflow worker MODULE:ATTRIBUTE [--queues a,b] [--concurrency N]

The URL defaults to ``TASKFLOW_DATABASE_URL``; with neither, the command fails saying how
to give one. Only ``upgrade`` creates a SQLite file that does not exist; the others say it
is missing. Every command says on stderr which database it looked at.
Exit codes: 0 success, 1 ``db check`` found the schema out of date (or no database file),
2 error (one line on stderr, password masked, no traceback).

:func:`version_location` tells your own Alembic setup where taskflow's revisions are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pathlib
import sqlite3
import sys
from collections.abc import Callable

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from taskflow._store import failures, migrate
from taskflow._store.engine import create_engine, normalize_url
from taskflow.errors import ConfigurationError, DatabaseError, SchemaOutOfDate

Handler = Callable[[argparse.Namespace, str], int]


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code.

    :param argv: arguments without the program name; ``None`` reads ``sys.argv``.
    :raises SystemExit: only from argparse, for ``--help`` or malformed arguments.
    """
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        return run_worker(args)
    url = args.url or os.environ.get(migrate.URL_ENV) or ""
    handler: Handler = args.handler
    try:
        if not url:
            raise ConfigurationError(f"no database given: {migrate.URL_HELP}")
        return handler(args, migrate.async_url(url))
    except Exception as exc:  # the CLI promises one line, never a traceback
        print(f"taskflow: error: {describe_error(exc, url)}", file=sys.stderr)
        return 2


def version_location() -> pathlib.Path:
    """The folder of taskflow's Alembic revisions: add it to ``version_locations`` to
    upgrade taskflow's tables from your own Alembic setup (``alembic upgrade
    taskflow@head``; the revisions carry the branch label ``taskflow``).

    :raises FileNotFoundError: the package was installed without its migrations.
    """
    return migrate.resource_path("migrations") / "versions"


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser; each top-level command is a subparser (room for more)."""
    parser = argparse.ArgumentParser(prog="taskflow", description="taskflow administration")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_db_commands(commands)
    add_worker_command(commands)
    return parser


def add_worker_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``taskflow worker``: run tasks of an app's TaskManager without a web server."""
    worker = commands.add_parser("worker", help="run tasks without a web server")
    worker.add_argument("target", help="the TaskManager to run, as module:attribute")
    worker.add_argument(
        "--queues", default=None, help="comma-separated queues to serve (default: the manager's)"
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="async tasks running at once (default: the manager's)",
    )


def run_worker(args: argparse.Namespace) -> int:
    """``worker``: serve until SIGTERM/SIGINT; errors are one line and exit code 2."""
    from taskflow import _worker as worker

    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    try:
        return worker.main(args.target, queues=queues, concurrency=args.concurrency)
    except Exception as exc:  # the CLI promises one line, never a traceback
        print(f"taskflow: error: {exc}", file=sys.stderr)
        return 2


def add_db_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``taskflow db ...``: upgrade, downgrade, current and check."""
    db = commands.add_parser("db", help="manage taskflow's database schema")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")

    upgrade = _add_action(actions, "upgrade", "upgrade the schema", run_upgrade)
    upgrade.add_argument("--revision", default="heads", help="target revision (default: heads)")

    downgrade = _add_action(actions, "downgrade", "downgrade the schema", run_downgrade)
    downgrade.add_argument(
        "--revision", required=True, help='target revision ("base" drops every table)'
    )

    _add_action(actions, "current", "print the database's revision", run_current)
    _add_action(actions, "check", "exit 1 unless the schema is up to date", run_check)


def _add_action(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    handler: Handler,
) -> argparse.ArgumentParser:
    """Add one ``db`` action with the shared ``--url`` option."""
    parser = actions.add_parser(name, help=help_text)
    parser.add_argument(
        "--url",
        default=None,  # resolved in main() so the environment is read at run time
        help=f"database URL (default: ${migrate.URL_ENV})",
    )
    parser.set_defaults(handler=handler)
    return parser


def run_upgrade(args: argparse.Namespace, url: str) -> int:
    """``db upgrade``: migrate forward (creating a SQLite file), print the revision reached."""
    migrate.upgrade(url, args.revision)
    _print_revision(url)
    return 0


def run_downgrade(args: argparse.Namespace, url: str) -> int:
    """``db downgrade``: migrate back, then print the revision reached."""
    _require_existing(url)
    migrate.downgrade(url, args.revision)
    _print_revision(url)
    return 0


def run_current(args: argparse.Namespace, url: str) -> int:
    """``db current``: print the revision, or ``none`` for a database without one, on
    stdout (for scripts) and the database looked at on stderr."""
    _require_existing(url)
    revision = migrate.current(url)
    _say_database(url)
    print(revision or "none")
    return 0


def run_check(args: argparse.Namespace, url: str) -> int:
    """``db check``: print "up to date" (exit 0) or why not (exit 1)."""
    missing = migrate.missing_sqlite_file(url)
    if missing is not None:
        print(
            f"taskflow database schema is out of date: the SQLite database {missing} does "
            f"not exist (nothing was created). Run: taskflow db upgrade --url "
            f"{migrate.mask_url(url)}"
        )
        return 1
    _say_database(url)
    try:
        asyncio.run(_check(url))
    except SchemaOutOfDate as exc:
        print(exc)
        return 1
    print("up to date")
    return 0


async def _check(url: str) -> None:
    """Run the startup check without upgrading; always dispose of the engine."""
    engine = create_engine(normalize_url(url))
    try:
        await migrate.prepare_schema(engine, auto_upgrade=False, display_url=migrate.mask_url(url))
    finally:
        await engine.dispose()


def _print_revision(url: str) -> None:
    """Print the revision ``url`` is at now, and which database that is."""
    revision = migrate.current(url) or "none"
    print(f"database is at revision {revision} ({migrate.describe_target(url)})")


def _require_existing(url: str) -> None:
    """Refuse to report on a SQLite file that does not exist: opening it would create it."""
    missing = migrate.missing_sqlite_file(url)
    if missing is not None:
        raise DatabaseError(
            f"the SQLite database {missing} does not exist (nothing was created): check "
            f"the URL, or create it with: taskflow db upgrade --url {migrate.mask_url(url)}"
        )


def _say_database(url: str) -> None:
    """Name the database a command looked at, on stderr (stdout stays for the answer)."""
    print(f"database: {migrate.describe_target(url)}", file=sys.stderr)


def describe_error(exc: BaseException, url: str) -> str:
    """One line for ``exc``: what failed and what to do (as the library says it for
    driver errors), without SQLAlchemy's footer, password masked."""
    if not url:
        return str(exc)
    if isinstance(exc, sa_exc.SQLAlchemyError | OSError | sqlite3.Error):
        with contextlib.suppress(ConfigurationError):
            exc = failures.translate(
                exc, url=normalize_url(url), display_url=migrate.mask_url(url), connecting=True
            )
    # DBAPIError's text adds the SQL and a docs link on further lines; the driver's own
    # message is the useful part.
    cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    message = " ".join(str(cause).split()) or type(cause).__name__
    message = _hide_password(message, url)
    masked = migrate.mask_url(url)
    return message if masked in message else f"{message} (database: {masked})"


def _hide_password(message: str, url: str) -> str:
    """Replace the URL's password in ``message``, should a driver have echoed it."""
    try:
        password = make_url(url).password
    except sa_exc.ArgumentError:
        return message
    return message.replace(str(password), "***") if password else message


if __name__ == "__main__":
    sys.exit(main())
