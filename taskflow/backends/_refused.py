"""Backends of fastapi-taskflow that taskflow cannot use (Redis, MySQL)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, NoReturn

from taskflow._store.engine import mask
from taskflow.backends.base import USE_A_DATABASE, SnapshotBackend
from taskflow.errors import ConfigurationError

if TYPE_CHECKING:
    from taskflow.records import TaskRecord


class RefusedBackend(SnapshotBackend):
    """A backend that constructs (so imports and module-level code keep working) and
    raises :class:`ConfigurationError` when used: by ``TaskManager`` or any method.

    Subclasses set :attr:`why` and keep their URL in ``url``.
    """

    why = ""
    url: str = ""

    def taskflow_database_url(self) -> str:
        """Never returns.

        Raises:
            ConfigurationError: always, saying why and what to use instead.
        """
        self._refuse()

    def _refuse(self) -> NoReturn:
        raise ConfigurationError(
            f"snapshot_backend={type(self).__name__}({mask(self.url)!r}) cannot be used: "
            f"{self.why}; {USE_A_DATABASE}",
            field="snapshot_backend",
        )

    async def save(self, records: list[TaskRecord]) -> int:
        """Raises ConfigurationError (see :meth:`taskflow_database_url`)."""
        self._refuse()

    async def load(self) -> list[TaskRecord]:
        """Raises ConfigurationError (see :meth:`taskflow_database_url`)."""
        self._refuse()

    async def save_pending(self, records: list[TaskRecord]) -> int:
        """Raises ConfigurationError (see :meth:`taskflow_database_url`)."""
        self._refuse()

    async def load_pending(self) -> list[TaskRecord]:
        """Raises ConfigurationError (see :meth:`taskflow_database_url`)."""
        self._refuse()

    async def clear_pending(self) -> None:
        """Raises ConfigurationError (see :meth:`taskflow_database_url`)."""
        self._refuse()

    async def close(self) -> None:
        """Nothing was opened."""

    async def delete_before(self, cutoff: datetime) -> int:
        """Raises ConfigurationError (see :meth:`taskflow_database_url`)."""
        self._refuse()
