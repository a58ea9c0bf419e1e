"""The broker's one LISTEN connection: wake-ups in, reconnects by itself."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg

from .lifecycle import cancel_and_wait, raise_if_stopping
from .sql import QUERIES

if TYPE_CHECKING:
    from .database import Database

__all__ = ["CHANNEL", "FINISHED_CHANNEL", "Listener"]

CHANNEL = "koyojobs"
"""Every insert notifies this one channel with the queue name as payload."""

FINISHED_CHANNEL = "koyojobs_finished"
"""Each statement that ends jobs notifies this channel once, with no payload."""

log = logging.getLogger("koyojobs.listener")

_MAX_RECONNECT_DELAY = 5.0


class Listener:
    """Holds a dedicated connection that LISTENs, and keeps it alive and hearing.

    ``on_notify(queue)`` is called for each notification. Every
    ``ping_interval`` seconds the listener notifies itself through the pool
    and waits for its own notification: a connection that is gone, stopped
    answering, or answers but hears nothing (a LISTEN sent through a
    transaction pooler lands on a server connection that is soon handed to
    someone else) is found out within about two intervals. A lost or silent
    connection is replaced, and ``on_reconnect()`` runs, since notifications
    sent while it was down are gone. A deaf one (it answers, but hears
    nothing) is reported at ERROR, and :attr:`hearing` stays False until a
    probe comes back.
    """

    def __init__(
        self,
        database: Database,
        dsn: str,
        *,
        on_notify: Callable[[str], None],
        on_reconnect: Callable[[], None],
        ping_interval: float = 5.0,
    ) -> None:
        self._database = database
        self._dsn = dsn
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._ping_interval = ping_interval
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # A channel of this listener's own: probes wake nobody else.
        self._probe_channel = f"koyojobs_probe_{uuid.uuid4().hex}"
        self._probes = itertools.count()
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._channels: dict[str, Callable[[str], None]] = {}
        self.hearing = True
        """False while the connection answers but its own notifications do not arrive."""
        self.reconnects = 0
        """How many times the connection was replaced (for tests and metrics)."""

    async def start(self) -> None:
        """Connect and LISTEN; raises if the first connection fails."""
        await self._connect()
        self._task = asyncio.create_task(self._supervise(), name="koyojobs-listener")

    async def stop(self) -> None:
        """Stop supervising and close the connection."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._close()

    async def listen(self, channel: str, on_notify: Callable[[str], None]) -> None:
        """Also LISTEN on ``channel`` from now on, calling ``on_notify(payload)``.

        Kept across reconnects. Should the LISTEN fail now, the connection is
        replaced (and the channel listened to again) by the supervisor.
        """
        if channel in self._channels:
            return
        self._channels[channel] = on_notify
        conn = self._conn
        if conn is None or not self.connected:
            return
        try:
            async with asyncio.timeout(self._ping_interval):
                await conn.add_listener(channel, self._extra)
        except Exception:
            log.debug("LISTEN on %s failed; it follows the reconnect", channel, exc_info=True)
            self._lost.set()

    @property
    def connected(self) -> bool:
        """Whether the LISTEN connection is up now."""
        return self._conn is not None and not self._conn.is_closed() and not self._lost.is_set()

    @property
    def backend_pid(self) -> int | None:
        """The server process of the LISTEN connection (for tests and debugging)."""
        return None if self._conn is None else self._conn.get_server_pid()

    async def _connect(self) -> None:
        conn = await self._database.connect(
            dsn=self._dsn, timeout=self._ping_interval, role="koyojobs-listen"
        )
        try:
            async with asyncio.timeout(self._ping_interval):
                await conn.add_listener(CHANNEL, self._notified)
                await conn.add_listener(self._probe_channel, self._probed)
                for channel in self._channels:
                    await conn.add_listener(channel, self._extra)
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

    def _notified(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        self._on_notify(str(payload))

    def _extra(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        on_notify = self._channels.get(channel)
        if on_notify is not None:
            on_notify(str(payload))

    def _probed(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        waiter = self._waiting.get(str(payload))
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _terminated(self, conn: Any) -> None:
        self._lost.set()

    async def _supervise(self) -> None:
        # The first probe goes out at once: a deaf LISTEN is reported at start.
        wait = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), wait)
            wait = self._ping_interval
            if not self._lost.is_set():
                heard = await self._probe()
                if heard is not False:
                    self._heard(heard)
                    continue
                if await self._alive():
                    self._deaf()
                    continue
            log.warning("LISTEN connection lost; reconnecting")
            await self._close()
            await self._reconnect()
            self.reconnects += 1
            log.warning("LISTEN connection restored", extra={"reconnects": self.reconnects})
            self._on_reconnect()

    async def _probe(self) -> bool | None:
        """Notify this listener through the pool; ``None`` if the pool could not send it."""
        token = str(next(self._probes))
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[token] = waiter
        try:
            try:
                await self._database.fetch_within(
                    self._ping_interval, QUERIES["probe_listener"], self._probe_channel, token
                )
            except Exception:
                # The pool's trouble is not this connection's: nothing learnt.
                log.debug("LISTEN probe not sent", exc_info=True)
                return None
            try:
                async with asyncio.timeout(self._ping_interval):
                    await asyncio.shield(waiter)
            except TimeoutError:
                return False
            return True
        finally:
            del self._waiting[token]

    def _heard(self, heard: bool | None) -> None:
        if heard and not self.hearing:
            self.hearing = True
            log.warning("LISTEN connection hears notifications again; wake-ups are back")
            self._on_reconnect()

    def _deaf(self) -> None:
        if self.hearing:
            self.hearing = False
            log.error(
                "LISTEN connection hears no notifications although it answers: workers "
                "only poll now, so jobs start up to poll_interval late. Is it behind a "
                "transaction pooler? Give the broker a direct connection for LISTEN "
                "(Broker(listen_dsn=...), koyojobs worker --listen-dsn)"
            )

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
                raise_if_stopping(exc)
                log.warning("LISTEN reconnect failed", extra={"error": str(exc), "retry_in": delay})
            # Back off between attempts so a database that is down is not hammered.
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RECONNECT_DELAY)
