"""``Database``: the asyncpg pool koyojobs talks through."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote_plus

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ._validate import is_count
from .errors import quiet_pool_reconnects
from .lifecycle import Lifecycle
from .sql import QUERIES

__all__ = ["Database"]

_DEFAULT_STATEMENT_CACHE_SIZE = 100
_CACHE_PARAMETER = "statement_cache_size"
_APPLICATION_NAME = "application_name"
POOL_ROLE = "koyojobs-pool"
"""``application_name`` of the pool's connections (see :meth:`Database.connect` for the others)."""


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
    which a transaction-mode pooler (PgBouncer before 1.21) needs; it may
    also be given in the DSN as ``?statement_cache_size=0`` (taken out of the
    DSN before asyncpg sees it, which would send it to the server as a
    setting). Given both ways, the two must agree, or ``ValueError``: a
    pooler's DSN that says 0 is never silently overridden. Unset either way,
    it is 100. Other keyword arguments go to ``asyncpg.create_pool``. A
    released connection is not reset with a query (an open transaction is
    still rolled back): do not leave ``SET`` or advisory locks on a
    connection you return to this pool.

    Every connection names itself in ``application_name`` by its role, as
    ``pg_stat_activity`` shows: ``koyojobs-pool`` for the pool,
    ``koyojobs-worker``, ``koyojobs-listen`` and ``koyojobs-vacuum`` for the
    dedicated ones. It is a startup parameter that PgBouncer accepts (it
    tracks it). An ``application_name`` of your own, in the DSN or in
    ``server_settings``, wins.

    ``pooler=True`` says that ``dsn`` leads to a transaction-mode pooler:
    koyojobs then leaves no session state on any connection of this
    database (no ``SET``: the pooler would hand it to other clients), and
    asks for no startup parameter a pooler may reject. By default it is
    inferred from ``statement_cache_size=0``; say ``pooler=True`` with a
    pooler that keeps prepared statements (PgBouncer 1.21+
    ``max_prepared_statements``).

    Example:
        >>> from koyojobs import Database
        >>> db = Database("postgresql://localhost/app", max_size=20)
        >>> async with db:  # doctest: +SKIP
        ...     await db.pool.fetchval("SELECT 1")
        1
        >>> Database("postgresql://pgbouncer:6432/app?statement_cache_size=0").connect_options
        {'statement_cache_size': 0}
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        statement_cache_size: int | None = None,
        pooler: bool | None = None,
        **pool_options: Any,
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise ValueError(f"Database needs a DSN string, got {dsn!r}")
        if statement_cache_size is not None and (not is_count(statement_cache_size, least=0)):
            raise ValueError(
                f"Database statement_cache_size must be an int >= 0, got {statement_cache_size!r}"
            )
        dsn, in_dsn = _take_statement_cache_size(dsn)
        if in_dsn is not None and statement_cache_size not in (None, in_dsn):
            raise ValueError(
                f"statement_cache_size={statement_cache_size} conflicts with "
                f"statement_cache_size={in_dsn} in the DSN {_redacted(dsn)}: give one"
            )
        if statement_cache_size is None:
            statement_cache_size = _DEFAULT_STATEMENT_CACHE_SIZE if in_dsn is None else in_dsn
        self.dsn = dsn
        """The DSN the connections use (without ``statement_cache_size``)."""
        self.connect_options: dict[str, Any] = {"statement_cache_size": statement_cache_size}
        self.pooler = statement_cache_size == 0 if pooler is None else bool(pooler)
        """Whether connections go through a transaction-mode pooler (no session state)."""
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
            quiet_pool_reconnects()
            self._pool = await asyncpg.create_pool(
                self.dsn,
                **self.connect_options,
                **{
                    **self._pool_options,
                    "server_settings": self._server_settings(self.dsn, POOL_ROLE),
                },
            )

    def _server_settings(self, dsn: str, role: str) -> dict[str, str]:
        """The pool's ``server_settings``, naming the connection ``role`` unless the user did."""
        given: dict[str, str] = dict(self._pool_options.get("server_settings") or {})
        if _APPLICATION_NAME in given or _names_application(dsn):
            return given
        return {**given, _APPLICATION_NAME: role}

    async def connect(
        self,
        *,
        dsn: str | None = None,
        timeout: float = 10.0,
        settings: dict[str, str] | None = None,
        role: str = "koyojobs",
    ) -> asyncpg.Connection:
        """A dedicated connection (to ``dsn``, by default the pool's) with the pool's options.

        ``role`` becomes its ``application_name`` (unless the DSN or the
        pool's ``server_settings`` name one).

        ``settings`` are set for the session after connecting, with a plain
        statement rather than as startup parameters, which poolers reject;
        on a pooled connection (``dsn`` is the pool's and :attr:`pooler`)
        they are left out, since the pooler would hand them to other
        clients. ``timeout`` bounds connecting and setting up.
        """
        target = dsn or self.dsn
        options = {**self.connect_options, "server_settings": self._server_settings(target, role)}
        conn: asyncpg.Connection = await asyncpg.connect(
            target, connection_class=_Connection, timeout=timeout, **options
        )
        if settings and not (self.pooler and target == self.dsn):
            try:
                async with asyncio.timeout(timeout):
                    await conn.execute(
                        QUERIES["set_session"], list(settings), list(settings.values())
                    )
            except BaseException:
                conn.terminate()
                raise
        return conn

    async def fetch_within(self, timeout: float, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run ``query`` on a pool connection, taking it and the answer within ``timeout`` s.

        Past the deadline the connection is closed rather than given back
        (a connection that stopped answering, say, behind a dropped network
        path, would hang its next user too) and ``TimeoutError`` is raised.
        """
        conn: PoolConnectionProxy[Any] | None = None
        try:
            async with asyncio.timeout(timeout):
                conn = await self.pool.acquire()
                return await conn.fetch(query, *args)
        except TimeoutError:
            if conn is not None:
                conn.terminate()
            raise TimeoutError(f"the database did not answer within {timeout:g}s") from None
        finally:
            if conn is not None:
                await self.pool.release(conn)

    async def stop(self) -> None:
        """Close the pool, waiting for connections in use to come back."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def __repr__(self) -> str:
        return f"<Database {_redacted(self.dsn)} started={self.started}>"


def _take_statement_cache_size(dsn: str) -> tuple[str, int | None]:
    """Split ``statement_cache_size`` out of a URL's query: (the DSN without it, its value).

    asyncpg passes unknown query parameters to the server as settings, and
    the server rejects this one; it is a client option. Other parameters are
    kept as written.
    """
    base, mark, query = dsn.partition("?")
    if not mark:
        return dsn, None
    query, hash_, fragment = query.partition("#")
    kept, value = [], None
    for part in query.split("&"):
        key, _, raw = part.partition("=")
        if unquote_plus(key) != _CACHE_PARAMETER:
            kept.append(part)
            continue
        text = unquote_plus(raw)
        if not text.isdigit():  # digits only: no sign, no spaces
            raise ValueError(
                f"{_CACHE_PARAMETER} in the DSN {_redacted(dsn)} must be an integer >= 0, "
                f"got {text!r}"
            )
        if value is not None and int(text) != value:
            raise ValueError(f"the DSN {_redacted(dsn)} gives {_CACHE_PARAMETER} twice")
        value = int(text)
    rest = "&".join(kept)
    return base + (mark + rest if rest else "") + hash_ + fragment, value


def _names_application(dsn: str) -> bool:
    """Whether the URL's query sets ``application_name`` (asyncpg sends it as a setting)."""
    _, mark, query = dsn.partition("?")
    query = query.partition("#")[0]
    return bool(mark) and any(
        unquote_plus(part.partition("=")[0]) == _APPLICATION_NAME for part in query.split("&")
    )


def _redacted(dsn: str) -> str:
    # Keep passwords out of reprs, logs and error messages: in the user part
    # of the URL and in a password= query parameter.
    scheme, sep, rest = dsn.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        rest = f"{creds.split(':', 1)[0]}:***@{host}"
    base, mark, query = rest.partition("?")
    if mark:
        parts = query.split("&")
        for i, part in enumerate(parts):
            if unquote_plus(part.partition("=")[0]) == "password":
                parts[i] = "password=***"
        rest = base + mark + "&".join(parts)
    return f"{scheme}{sep}{rest}"
