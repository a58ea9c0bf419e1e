"""A TCP proxy in the test's event loop that can turn a path into a black hole.

``blackhole()`` makes every connection open at that moment drop what it is
sent, both ways, while staying open: no FIN, no RST, as when a NAT entry or a
firewall state is lost. Connections opened afterwards are forwarded as usual.
``delay`` holds every chunk that long in each direction (a database farther
away: the round trip grows by twice that), chunks pipelined and in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit


@dataclass(eq=False)
class _Path:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    dropping: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class BlackholeProxy:
    """Forwards 127.0.0.1:<port> to the server of ``dsn``; see :meth:`blackhole`."""

    def __init__(self, dsn: str, delay: float = 0.0) -> None:
        self.delay = delay
        parts = urlsplit(dsn)
        self._dsn_parts = parts
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._server: asyncio.Server | None = None
        self._paths: set[_Path] = set()
        self.port = 0

    @property
    def dsn(self) -> str:
        """The DSN given, through the proxy."""
        netloc = self._dsn_parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(
            self._dsn_parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host)
        )

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def blackhole(self) -> int:
        """Drop all traffic of the connections open now, keeping them open; returns how many."""
        for path in self._paths:
            path.dropping = True
        return len(self._paths)

    @property
    def open_paths(self) -> int:
        """Connections open through the proxy now."""
        return len(self._paths)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        path = _Path(writer, up_writer)
        self._paths.add(path)
        path.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, path)),
            asyncio.create_task(self._pump(up_reader, writer, path)),
        ]

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: _Path
    ) -> None:
        loop = asyncio.get_running_loop()
        held: collections.deque[tuple[float, bytes | None]] = collections.deque()
        arrived = asyncio.Event()
        late = asyncio.create_task(self._deliver(held, arrived, writer)) if self.delay else None
        try:
            while data := await reader.read(65536):
                if path.dropping:
                    continue  # lost on the way: the other side never hears of it
                if late is not None:
                    held.append((loop.time() + self.delay, data))
                    arrived.set()
                    continue
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if late is not None:
                # What is on its way still arrives, then the path closes.
                held.append((loop.time() + self.delay, None))
                arrived.set()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await late
            if not path.dropping:
                self._close(path)

    async def _deliver(
        self,
        held: collections.deque[tuple[float, bytes | None]],
        arrived: asyncio.Event,
        writer: asyncio.StreamWriter,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await arrived.wait()
            arrived.clear()
            while held:
                due, data = held[0]
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                held.popleft()
                if data is None:
                    return
                writer.write(data)
                await writer.drain()

    def _close(self, path: _Path) -> None:
        self._paths.discard(path)
        for writer in (path.client, path.server):
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for path in list(self._paths):
            self._close(path)
            for task in path.tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
