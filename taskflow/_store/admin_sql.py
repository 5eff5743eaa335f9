"""The dashboard's own records: the audit log, login sessions, the failed-login
counters of the lockout, and values of the meta table (written once, read by every
process).

:class:`AdminSQL` is a part of :class:`~taskflow._store.dashboard.DashboardStore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.admin_schema import audit, login_failures, sessions
from taskflow._store.rows import AuditRow, NewAuditEntry, SessionRow
from taskflow._store.schema import meta
from taskflow._store.sql import SQLStore

KEY_CHARS = 255  # the key column's width: longer user names count by their first 255


class AdminSQL:
    """The audit log, login sessions and the meta table, through ``_store``'s
    transactions."""

    _store: SQLStore

    # -- audit -----------------------------------------------------------------------

    async def add_audit(self, entry: NewAuditEntry) -> None:
        """Record one action."""
        async with self._store.write() as conn:
            await conn.execute(audit.insert(), [entry.columns()])

    async def page_audit(
        self,
        *,
        before_id: int | None = None,
        limit: int = 50,
        target: str | None = None,
        actions: Sequence[str] = (),
    ) -> tuple[list[AuditRow], int | None]:
        """Audit entries, newest first; returns them and the next page's cursor."""
        query = sa.select(audit)
        if target is not None:
            query = query.where(audit.c.target == target)
        if actions:
            query = query.where(audit.c.action.in_(list(actions)))
        if before_id is not None:
            query = query.where(audit.c.id < before_id)
        query = query.order_by(audit.c.id.desc()).limit(limit + 1)
        async with self._store.read() as conn:
            entries = [AuditRow.of(row) for row in (await conn.execute(query)).mappings()]
        more = len(entries) > limit
        entries = entries[:limit]
        return entries, (entries[-1].id if more and entries else None)

    # -- failed logins ---------------------------------------------------------------

    async def login_failures(
        self, keys: Sequence[tuple[str, str]], *, since: datetime
    ) -> dict[tuple[str, str], int]:
        """Failures counted since ``since`` for each ``(scope, key)`` (absent: none)."""
        wanted = [(scope, key[:KEY_CHARS]) for scope, key in keys]
        query = sa.select(
            login_failures.c.scope, login_failures.c.key, login_failures.c.failures
        ).where(
            sa.tuple_(login_failures.c.scope, login_failures.c.key).in_(wanted),
            login_failures.c.first_at >= since,
        )
        async with self._store.read() as conn:
            rows = (await conn.execute(query)).all()
        return {(scope, key): int(failures) for scope, key, failures in rows}

    async def add_login_failure(
        self, keys: Sequence[tuple[str, str]], *, now: datetime, since: datetime, cap: int
    ) -> None:
        """Count one failure for each ``(scope, key)``: a row whose window began before
        ``since`` starts a new one. Then keep the table bounded: rows whose window
        ended go, and past ``cap`` rows those with the fewest failures, least recent
        first, make room (so a spray of new names cannot push out a name that is
        close to its limit)."""
        table = login_failures
        dialect = postgresql if self._store.dialect == "postgresql" else sqlite
        current = table.c.first_at >= since
        async with self._store.write() as conn:
            for scope, key in keys:
                insert = dialect.insert(table).values(
                    scope=scope, key=key[:KEY_CHARS], failures=1, first_at=now, last_at=now
                )
                await conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=[table.c.scope, table.c.key],
                        set_={
                            "failures": sa.case((current, table.c.failures + 1), else_=1),
                            "first_at": sa.case((current, table.c.first_at), else_=now),
                            "last_at": now,
                        },
                    )
                )
            await conn.execute(table.delete().where(table.c.first_at < since))
            excess = int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
            excess -= cap
            if excess > 0:
                victims = (
                    sa.select(table.c.scope, table.c.key)
                    .order_by(table.c.failures, table.c.last_at)
                    .limit(excess)
                )
                await conn.execute(
                    table.delete().where(sa.tuple_(table.c.scope, table.c.key).in_(victims))
                )

    # -- sessions --------------------------------------------------------------------

    async def create_session(self, session: SessionRow, *, now: datetime) -> None:
        """Store a login session, dropping expired ones on the way."""
        async with self._store.write() as conn:
            await conn.execute(sessions.delete().where(sessions.c.expires_at < now))
            await conn.execute(sessions.insert(), [session.columns()])

    async def get_session(self, session_id: str, *, now: datetime) -> SessionRow | None:
        """The unexpired session with this id (hash), or None."""
        query = sa.select(sessions).where(sessions.c.id == session_id, sessions.c.expires_at > now)
        async with self._store.read() as conn:
            found = (await conn.execute(query)).mappings().first()
        return None if found is None else SessionRow.of(found)

    async def delete_session(self, session_id: str) -> bool:
        """End a session everywhere; False if it did not exist."""
        async with self._store.write() as conn:
            result = await conn.execute(sessions.delete().where(sessions.c.id == session_id))
            return result.rowcount == 1

    # -- meta ------------------------------------------------------------------------

    async def meta_insert_if_absent(self, key: str, value: str, *, now: datetime) -> str:
        """Store ``value`` under ``key`` unless a value is there already; return the
        stored value. Two processes racing both get the first writer's value."""
        dialect = postgresql if self._store.dialect == "postgresql" else sqlite
        statement = (
            dialect.insert(meta)
            .values(key=key, value=value, updated_at=now)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        async with self._store.write() as conn:
            await conn.execute(statement)
            return str(await meta_value(conn, key))


async def meta_value(conn: AsyncConnection, key: str) -> str | None:
    """The value stored under ``key`` in the meta table (None: none)."""
    value: str | None = await conn.scalar(sa.select(meta.c.value).where(meta.c.key == key))
    return value
