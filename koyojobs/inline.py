"""The synchronous mode on a caller's connection.

Under ``execute_jobs_synchronously()``, ``broker.enqueue(call, connection=conn)``
runs the job at once, and on ``conn``: inside the job, ``current_broker()`` is a
broker whose pool is that one connection. So the job sees what the caller wrote
in its transaction and not yet committed (a worker sees it after the commit),
and what the job writes commits or rolls back with the caller's transaction:
what a Celery task run eagerly inside ``transaction.atomic()``, or an Oban job
run ``:inline`` inside ``Repo.transaction``, does, since both run on the
caller's own connection.
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Any, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from .broker import Broker

__all__ = ["on_connection"]

Connection = asyncpg.Connection | PoolConnectionProxy


class _Acquired:
    """``pool.acquire()`` of :class:`_ConnectionAsPool`: the one connection, never released."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def __aenter__(self) -> Connection:
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __await__(self) -> Generator[Any, None, Connection]:
        return self.__aenter__().__await__()


class _ConnectionAsPool:
    """Stands in for a pool: every query and every ``acquire()`` get one connection."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def acquire(self, *, timeout: float | None = None) -> _Acquired:
        return _Acquired(self._connection)

    async def release(self, connection: Connection, *, timeout: float | None = None) -> None:
        return None  # it stays the caller's

    def __getattr__(self, name: str) -> Any:
        # execute, fetch, fetchval, fetchrow, executemany, copy_*: same calls as a pool's.
        return getattr(self._connection, name)


class _BrokerOnConnection(Broker):
    def __init__(self, broker: Broker, connection: Connection) -> None:
        # The broker as it is (serializer, middleware, retention, listener),
        # not a new one built from defaults: only its pool is the connection.
        self.__dict__.update(vars(broker))
        self._started = True
        self._as_pool = _ConnectionAsPool(connection)

    @property
    def pool(self) -> asyncpg.Pool:
        """The caller's connection, standing in for the pool."""
        return cast(asyncpg.Pool, self._as_pool)


def on_connection(broker: Broker, connection: Connection) -> Broker:
    """``broker``, with its queries going through ``connection`` (see the module's doc).

    Example:
        >>> async with broker.pool.acquire() as conn, conn.transaction():  # doctest: +SKIP
        ...     bound = on_connection(broker, conn)
        ...     await bound.pool.fetchval("SELECT 1")  # on conn, in its transaction
        1
    """
    return _BrokerOnConnection(broker, connection)
