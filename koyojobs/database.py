"""``Database``: the asyncpg pool koyojobs talks through."""

from __future__ import annotations

from typing import Any

import asyncpg

from .lifecycle import Lifecycle

__all__ = ["Database"]


class _Connection(asyncpg.Connection):
    """A pool connection whose release costs no round trip.

    asyncpg resets a released connection with a query (``RESET ALL``,
    ``UNLISTEN *``, unlock advisory locks): a second round trip for every
    pooled statement. koyojobs leaves no session state behind, and an open
    transaction is still rolled back on release; only session settings and
    advisory locks that a caller leaves on a pooled connection survive.
    """

    def get_reset_query(self) -> str:
        return ""


class Database(Lifecycle):
    """An asyncpg connection pool with a start/stop life.

    ``statement_cache_size=0`` turns off asyncpg's prepared-statement cache,
    which a transaction-mode pooler (PgBouncer) needs; other keyword
    arguments go to ``asyncpg.create_pool``. A released connection is not
    reset with a query (an open transaction is still rolled back): do not
    leave ``SET`` or advisory locks on a connection you return to this pool.

    Example:
        >>> from koyojobs import Database
        >>> db = Database("postgresql://localhost/app", max_size=20)
        >>> async with db:  # doctest: +SKIP
        ...     await db.pool.fetchval("SELECT 1")
        1
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        statement_cache_size: int = 100,
        **pool_options: Any,
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise ValueError(f"Database needs a DSN string, got {dsn!r}")
        self.dsn = dsn
        self.connect_options: dict[str, Any] = {"statement_cache_size": statement_cache_size}
        self._pool_options = {
            "min_size": min_size,
            "max_size": max_size,
            "connection_class": _Connection,
            **pool_options,
        }
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool; only while started."""
        if self._pool is None:
            raise RuntimeError("Database is not started: use 'async with db:' or await db.start()")
        return self._pool

    @property
    def started(self) -> bool:
        """Whether the pool is open."""
        return self._pool is not None

    async def start(self) -> None:
        """Open the pool (once; later calls do nothing)."""
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.dsn, **self.connect_options, **self._pool_options
            )

    async def connect(self, **server_settings: str) -> asyncpg.Connection:
        """A dedicated connection with the pool's options, plus ``server_settings``."""
        options = {**self.connect_options}
        settings = {**self._pool_options.get("server_settings", {}), **server_settings}
        if settings:
            options["server_settings"] = settings
        return await asyncpg.connect(self.dsn, connection_class=_Connection, **options)

    async def stop(self) -> None:
        """Close the pool, waiting for connections in use to come back."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def __repr__(self) -> str:
        return f"<Database {_redacted(self.dsn)} started={self.started}>"


def _redacted(dsn: str) -> str:
    # Keep passwords out of reprs and logs.
    scheme, sep, rest = dsn.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return dsn
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
