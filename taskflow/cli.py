"""The ``taskflow`` command line.

    taskflow db upgrade   [--url URL] [--revision REV]
    taskflow db downgrade --revision REV [--url URL]
    taskflow db current   [--url URL]
    taskflow db check     [--url URL]

The URL defaults to ``TASKFLOW_DATABASE_URL``, else ``sqlite+aiosqlite:///taskflow.db``.
Exit codes: 0 success, 1 ``db check`` found the schema out of date, 2 error (one line on
stderr, password masked, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable

import sqlalchemy as sa

from taskflow import migrate
from taskflow.errors import SchemaOutOfDate
from taskflow.store.engine import create_engine, normalize_url

Handler = Callable[[argparse.Namespace, str], int]


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code.

    :param argv: arguments without the program name; ``None`` reads ``sys.argv``.
    :raises SystemExit: only from argparse, for ``--help`` or malformed arguments.
    """
    args = build_parser().parse_args(argv)
    url = args.url or os.environ.get("TASKFLOW_DATABASE_URL") or migrate.DEFAULT_URL
    handler: Handler = args.handler
    try:
        return handler(args, migrate.async_url(url))
    except Exception as exc:  # the CLI promises one line, never a traceback
        print(f"taskflow: error: {describe_error(exc, url)}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser; each top-level command is a subparser (room for more)."""
    parser = argparse.ArgumentParser(prog="taskflow", description="taskflow administration")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_db_commands(commands)
    return parser


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
        help=f"database URL (default: $TASKFLOW_DATABASE_URL or {migrate.DEFAULT_URL})",
    )
    parser.set_defaults(handler=handler)
    return parser


def run_upgrade(args: argparse.Namespace, url: str) -> int:
    """``db upgrade``: migrate forward, then print the revision reached."""
    migrate.upgrade(url, args.revision)
    print(f"database is at revision {migrate.current(url) or 'none'}")
    return 0


def run_downgrade(args: argparse.Namespace, url: str) -> int:
    """``db downgrade``: migrate back, then print the revision reached."""
    migrate.downgrade(url, args.revision)
    print(f"database is at revision {migrate.current(url) or 'none'}")
    return 0


def run_current(args: argparse.Namespace, url: str) -> int:
    """``db current``: print the revision, or ``none`` for a database without one."""
    print(migrate.current(url) or "none")
    return 0


def run_check(args: argparse.Namespace, url: str) -> int:
    """``db check``: print "up to date" (exit 0) or why not (exit 1)."""
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


def describe_error(exc: BaseException, url: str) -> str:
    """One line for ``exc``: driver errors without SQLAlchemy's footer, password masked."""
    # DBAPIError's text adds the SQL and a docs link on further lines; the driver's own
    # message is the useful part.
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    message = " ".join(str(cause).split()) or type(cause).__name__
    message = _hide_password(message, url)
    masked = migrate.mask_url(url)
    return message if masked in message else f"{message} (database: {masked})"


def _hide_password(message: str, url: str) -> str:
    """Replace the URL's password in ``message``, should a driver have echoed it."""
    try:
        password = sa.engine.make_url(url).password
    except sa.exc.ArgumentError:
        return message
    return message.replace(str(password), "***") if password else message


if __name__ == "__main__":
    sys.exit(main())
