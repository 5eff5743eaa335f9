"""The TaskAdmin dashboard's tables, for the store modules that read and write them.

They are defined in :mod:`taskflow._store.schema` with every other table, on the one
shared ``metadata``; this module only names them.
"""

from __future__ import annotations

from taskflow._store.schema import audit, login_failures, sessions

__all__ = ["audit", "login_failures", "sessions"]
