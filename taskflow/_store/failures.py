"""Driver errors translated into taskflow's, with a message that says what is wrong and
what to do about it.

Only the driver's own message is kept: SQLAlchemy's text adds the SQL statement and its
parameters (task arguments, tags, keys), which must not reach logs or HTTP answers.

=====================================  ==================================================
what happened                          raised as
=====================================  ==================================================
SQLite file locked past the busy       :class:`~taskflow.errors.DatabaseUnavailable`
timeout; PostgreSQL down, restarting,
unreachable, out of connections; no
host of a multi-host URL accepts
writes (a failover under way)
disk (or PostgreSQL's disk) full       :class:`~taskflow.errors.DatabaseFull`
read-only file, directory, file        :class:`~taskflow.errors.DatabaseReadOnly`
system or transaction
anything else                          :class:`~taskflow.errors.DatabaseError`
=====================================  ==================================================
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from taskflow._store.engine import sqlite_busy_timeout
from taskflow.errors import DatabaseError, DatabaseFull, DatabaseReadOnly, DatabaseUnavailable

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}
# SQLSTATE classes and codes of PostgreSQL that mean "not now" rather than "not this".
_PG_UNAVAILABLE_CLASSES = ("08", "57")  # connection exception, operator intervention
_PG_UNAVAILABLE_CODES = {"53300", "53400"}  # too many connections, configuration limit
_PG_FULL_CODES = {"53100"}  # disk full
_PG_READ_ONLY_CODES = {"25006"}  # read-only transaction (a hot standby)


def translate(
    exc: BaseException, *, url: URL, display_url: str, connecting: bool = False
) -> DatabaseError:
    """The taskflow exception for a driver (or OS) error raised while using ``url``.

    Args:
        exc: a SQLAlchemy error, or an ``OSError`` raised while connecting.
        url: the database URL (its path locates a SQLite file for the diagnosis).
        display_url: the URL with its password masked, for the message.
        connecting: the error came from a first connection (startup, the CLI), where
            "retry the request" means nothing: an unreachable server's message then
            says what to check instead.
    """
    if isinstance(exc, DatabaseError):
        return exc
    if url.get_backend_name() == "sqlite":
        return _sqlite(exc, url, display_url)
    return _postgresql(exc, display_url, connecting=connecting)


def reason_of(exc: BaseException) -> str:
    """The driver's message for ``exc``, without SQL statement or parameters."""
    inner = getattr(exc, "orig", None) or exc
    if inner is not exc and isinstance(inner.__cause__, Exception):
        inner = inner.__cause__  # asyncpg's own exception behind SQLAlchemy's adapter
    text = str(inner).strip() or type(inner).__name__
    return text if isinstance(inner, OSError) else f"{type(inner).__name__}: {text}"


# -- SQLite -------------------------------------------------------------------------------


def _sqlite(exc: BaseException, url: URL, display_url: str) -> DatabaseError:
    orig = getattr(exc, "orig", None) or exc
    code = str(getattr(orig, "sqlite_errorname", "") or "")
    reason = reason_of(exc)
    path = Path(url.database or "")
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return DatabaseUnavailable(
            f"the task database {display_url} is locked by another connection: a write "
            f"waited {sqlite_busy_timeout(url):g} s (the SQLite busy timeout, set with "
            f"?timeout=<seconds> in the URL) and gave up ({reason}). Retry later; if this "
            "lasts, look for a process holding a long transaction on the file"
        )
    if code == "SQLITE_FULL" or _errno(orig) in _FULL_ERRNOS:
        return DatabaseFull(_full_message(display_url, path, reason))
    if code.startswith("SQLITE_READONLY") or _errno(orig) in _READ_ONLY_ERRNOS:
        return DatabaseReadOnly(_read_only_message(display_url, path, reason))
    if code.startswith("SQLITE_CANTOPEN"):
        return _cannot_open(display_url, path, reason)
    if code.startswith("SQLITE_IOERR"):
        if _no_space_left(path):  # a failed fsync or truncate on a full disk
            return DatabaseFull(_full_message(display_url, path, reason))
        return DatabaseError(
            f"disk I/O error on the task database {display_url} ({reason}): check the disk "
            "and the file system holding the file"
        )
    if code in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return DatabaseError(
            f"the task database {display_url} is not a valid SQLite database or is damaged "
            f"({reason}): restore it from a backup or point taskflow at another file"
        )
    return DatabaseError(f"database error on {display_url}: {reason}")


def _full_message(display_url: str, path: Path, reason: str) -> str:
    return (
        f"the task database {display_url} is full: the file system holding "
        f"{path.parent if path.name else 'it'} has no space left for it, or its size "
        f"limit was reached ({reason}). Free disk space; taskflow carries on by itself "
        "once writes succeed again, and nothing already stored is lost"
    )


def _read_only_message(display_url: str, path: Path, reason: str) -> str:
    name = path.name or "the database file"
    return (
        f"the task database {display_url} is read-only ({reason}{_access_problem(path)}): "
        f"taskflow must write {name} and create {name}-wal and {name}-shm next to it. "
        "Make the file system, the directory and the file writable by this process "
        "(mount options, owner and mode, chattr -i)"
    )


def _cannot_open(display_url: str, path: Path, reason: str) -> DatabaseError:
    """SQLite says "unable to open database file": find out why from the file system."""
    directory = path.parent
    if path.name and not directory.is_dir():
        return DatabaseError(
            f"cannot open the task database {display_url}: the directory {directory} does "
            f"not exist ({reason}). Create it, or fix the path in the URL"
        )
    if path.name and _access_problem(path):
        return DatabaseReadOnly(_read_only_message(display_url, path, reason))
    return DatabaseError(f"cannot open the task database {display_url} ({reason})")


def _access_problem(path: Path) -> str:
    """Why this process cannot write ``path`` or create files next to it ("" if it can)."""
    if not path.name:
        return ""
    directory = path.parent
    if _read_only_mount(directory):
        return f"; {directory} is on a read-only file system"
    if not os.access(directory, os.W_OK):
        return f"; the directory {directory} is not writable"
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if candidate.exists() and not os.access(candidate, os.W_OK):
            return f"; {candidate} is not writable"
    return ""


def _read_only_mount(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _no_space_left(path: Path) -> bool:
    """True when the file system holding ``path`` has no free block left for us."""
    if not path.name:
        return False
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


def _errno(error: BaseException) -> int | None:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            return cause.errno
        cause = cause.__cause__
    return None


# -- PostgreSQL ---------------------------------------------------------------------------


def _postgresql(exc: BaseException, display_url: str, *, connecting: bool) -> DatabaseError:
    orig = getattr(exc, "orig", None)
    coded = orig if orig is not None else exc  # asyncpg's own error on the raw path
    state = str(getattr(coded, "sqlstate", None) or getattr(coded, "pgcode", None) or "")
    reason = reason_of(exc)
    if state in _PG_FULL_CODES:
        return DatabaseFull(
            f"the task database {display_url} is full: the PostgreSQL server has no disk "
            f"space left ({reason}). Free space on the server; taskflow carries on by itself"
        )
    if state in _PG_READ_ONLY_CODES:
        return DatabaseReadOnly(
            f"the task database {display_url} is read-only ({reason}): point taskflow at "
            "the primary server, not a standby or a read-only user"
        )
    if _no_writable_host(orig):
        return DatabaseUnavailable(
            f"the task database {display_url} is unavailable: none of its hosts accepts "
            f"writes now ({reason}); a standby is being promoted, or every host is a "
            "standby. taskflow keeps retrying its own writes; retry the request later"
        )
    if _timed_out(exc, orig):
        return DatabaseUnavailable(
            f"the task database {display_url} is unavailable: it did not answer in time "
            f"({reason}); the network to it may be cut, or the server overloaded (the "
            "limits are the URL's connect_timeout and command_timeout). taskflow keeps "
            "retrying its own writes; retry the request later"
        )
    if _pg_unavailable(exc, orig, state) and connecting:
        return DatabaseUnavailable(
            f"cannot connect to the task database {display_url} ({reason}): check that "
            "the PostgreSQL server is running and accepts connections, and that host, "
            "port and database name in the URL are right"
        )
    if _pg_unavailable(exc, orig, state):
        return DatabaseUnavailable(
            f"the task database {display_url} is unavailable ({reason}): the server is "
            "down, restarting or unreachable. taskflow keeps retrying its own writes; "
            "retry the request later"
        )
    return DatabaseError(f"database error on {display_url}: {reason}")


def _asyncpg_connection_error(exc: BaseException) -> bool:
    """asyncpg's own ``InterfaceError`` or ``InternalClientError`` (the connection, not
    the statement, failed: closed, or still busy with a message of the server ending
    it), raised on the group-commit path that bypasses SQLAlchemy."""
    return any(
        kind.__name__ in ("InterfaceError", "InternalClientError")
        and kind.__module__.startswith("asyncpg")
        for kind in type(exc).__mro__
    )


def _no_writable_host(orig: BaseException | None) -> bool:
    """asyncpg found no host matching ``target_session_attrs`` (read-write): during a
    failover every reachable server is still a standby."""
    cause = orig.__cause__ if orig is not None else None
    return type(cause).__name__ == "TargetServerAttributeNotMatched"


def _timed_out(exc: BaseException, orig: BaseException | None) -> bool:
    """A connection or statement gave up waiting (asyncpg's timeouts), which is all a
    silently cut network ever says."""
    causes = (exc, orig, orig.__cause__ if orig is not None else None, exc.__cause__)
    return any(isinstance(cause, TimeoutError) for cause in causes)


def _pg_unavailable(exc: BaseException, orig: BaseException | None, state: str) -> bool:
    if isinstance(exc, OSError | sa_exc.TimeoutError):
        return True  # connection refused or timed out; pool exhausted
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if state.startswith(_PG_UNAVAILABLE_CLASSES) or state in _PG_UNAVAILABLE_CODES:
        return True
    if isinstance(exc, sa_exc.InterfaceError) or _asyncpg_connection_error(exc):
        return True  # asyncpg: "connection is closed", "cannot perform operation"
    cause = orig.__cause__ if orig is not None else None
    return isinstance(orig, OSError) or isinstance(cause, OSError)
