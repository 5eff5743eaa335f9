"""The dashboard's own records: the audit log, login sessions, and values of the meta
table (written once, read by every process).

:class:`AdminSQL` is a part of :class:`~taskflow._store.dashboard.DashboardStore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.admin_schema import audit, sessions
from taskflow._store.rows import AuditRow, NewAuditEntry, SessionRow
from taskflow._store.schema import meta
from taskflow._store.sql import SQLStore


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

    async def recent_actions(
        self, action: str, *, since: datetime, target: str | None = None, ip: str | None = None
    ) -> int:
        """How many ``action`` entries since ``since`` (for ``target`` or from ``ip``)."""
        query = sa.select(sa.func.count()).where(audit.c.action == action, audit.c.at >= since)
        if target is not None:
            query = query.where(audit.c.target == target)
        if ip is not None:
            query = query.where(audit.c.ip == ip)
        async with self._store.read() as conn:
            return int(await conn.scalar(query) or 0)

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
