"""Wake-ups of this process: the broker's one LISTEN connection, opened with the
first subscriber, and the fan-out of its notifications to the workers' wakes.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from .database import Database
from .listener import Listener

__all__ = ["Wake", "WakeUps"]

Wake = Callable[[], None]


class WakeUps:
    """Who to wake per queue, and the LISTEN connection that hears the NOTIFYs.

    ``on_reconnect`` is called (after every subscriber is woken) when the
    connection comes back: notifications sent while it was down are lost.

    Example:
        >>> wakeups = WakeUps(database, None, on_reconnect=lambda: None)  # doctest: +SKIP
        >>> await wakeups.subscribe("emails", worker.wake)  # doctest: +SKIP
    """

    def __init__(
        self, database: Database, listen_dsn: str | None, on_reconnect: Callable[[], None]
    ) -> None:
        self._database = database
        self._dsn = listen_dsn
        self._on_reconnect = on_reconnect
        self._listener: Listener | None = None
        self._lock = asyncio.Lock()
        self._subscribers: dict[str, set[Wake]] = defaultdict(set)

    @property
    def listener(self) -> Listener | None:
        """The LISTEN connection's keeper, once someone subscribed or listened."""
        return self._listener

    async def subscribe(self, queue: str, wake: Wake) -> None:
        """Call ``wake()`` whenever jobs are inserted into ``queue`` (or may have been)."""
        await self._listening()
        self._subscribers[queue].add(wake)

    def unsubscribe(self, queue: str, wake: Wake) -> None:
        """Stop waking ``wake`` for ``queue``."""
        self._subscribers[queue].discard(wake)

    async def listen(self, channel: str, on_notify: Callable[[str], None]) -> None:
        """Hear ``channel`` too, on the same connection."""
        await (await self._listening()).listen(channel, on_notify)

    def check(self) -> None:
        """Raise unless the LISTEN connection (if open) is up and hearing."""
        if self._listener is None:
            return
        if not self._listener.connected:
            raise ConnectionError("the LISTEN connection is down; it is reconnecting")
        if not self._listener.hearing:
            raise ConnectionError(
                "the LISTEN connection hears no notifications (behind a transaction pooler? "
                "pass listen_dsn=...); workers only poll"
            )

    async def stop(self) -> None:
        """Close the LISTEN connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()

    async def _listening(self) -> Listener:
        # One LISTEN connection however many callers ask at once: the first
        # opens it while the others wait for it.
        async with self._lock:
            if self._listener is None:
                listener = Listener(
                    self._database,
                    self._dsn or self._database.dsn,
                    on_notify=self._notified,
                    on_reconnect=self._wake_all,
                )
                await listener.start()
                self._listener = listener
            return self._listener

    def _notified(self, queue: str) -> None:
        for wake in tuple(self._subscribers.get(queue, ())):
            wake()

    def _wake_all(self) -> None:
        # Notifications sent while the connection was down are lost: look again.
        for wakes in tuple(self._subscribers.values()):
            for wake in tuple(wakes):
                wake()
        self._on_reconnect()
