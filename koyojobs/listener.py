"""The broker's one LISTEN connection: wake-ups in, reconnects by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from .sql import QUERIES

__all__ = ["CHANNEL", "Listener"]

CHANNEL = "koyojobs"
"""Every insert notifies this one channel with the queue name as payload."""

log = logging.getLogger("koyojobs.listener")

_MAX_RECONNECT_DELAY = 5.0


class Listener:
    """Holds a dedicated connection that LISTENs, and keeps it alive.

    ``on_notify(queue)`` is called for each notification. The connection is
    checked every ``ping_interval`` seconds and replaced as soon as it is
    lost; ``on_reconnect()`` then runs, since notifications sent while it was
    down are gone.
    """

    def __init__(
        self,
        dsn: str,
        connect_options: dict[str, Any],
        *,
        on_notify: Callable[[str], None],
        on_reconnect: Callable[[], None],
        ping_interval: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._connect_options = connect_options
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._ping_interval = ping_interval
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0
        """How many times the connection was replaced (for tests and metrics)."""

    async def start(self) -> None:
        """Connect and LISTEN; raises if the first connection fails."""
        await self._connect()
        self._task = asyncio.create_task(self._supervise(), name="koyojobs-listener")

    async def stop(self) -> None:
        """Stop supervising and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()

    @property
    def connected(self) -> bool:
        """Whether the LISTEN connection is up now."""
        return self._conn is not None and not self._conn.is_closed() and not self._lost.is_set()

    @property
    def backend_pid(self) -> int | None:
        """The server process of the LISTEN connection (for tests and debugging)."""
        return None if self._conn is None else self._conn.get_server_pid()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._dsn, **self._connect_options)
        try:
            await conn.add_listener(CHANNEL, self._notified)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._terminated)
        self._lost.clear()
        self._conn = conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), timeout=1.0)
        except Exception:
            conn.terminate()

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._on_notify(payload)

    def _terminated(self, conn: Any) -> None:
        self._lost.set()

    async def _supervise(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self._ping_interval)
            if not self._lost.is_set() and await self._alive():
                continue
            log.warning("LISTEN connection lost; reconnecting")
            await self._close()
            await self._reconnect()
            self.reconnects += 1
            log.warning("LISTEN connection restored", extra={"reconnects": self.reconnects})
            self._on_reconnect()

    async def _alive(self) -> bool:
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            await asyncio.wait_for(conn.execute(QUERIES["ping"]), self._ping_interval)
        except Exception:
            return False
        return True

    async def _reconnect(self) -> None:
        delay = 0.05
        while True:
            try:
                await self._connect()
                return
            except Exception as exc:  # refused, starting up, auth...: keep trying
                log.warning("LISTEN reconnect failed", extra={"error": str(exc), "retry_in": delay})
            # Back off between attempts so a database that is down is not hammered.
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RECONNECT_DELAY)
