"""Coalesced enqueue: single job calls awaited at the same moment share one INSERT.

Many web requests that each enqueue one job would each take a pool
connection, a round trip and a commit for one row, and queue for the pool's
few connections. Here a call that finds nothing in flight inserts at once, on
its own (a lone call waits for nothing: there is no timer). A call that comes
while others are in flight joins a waiting list, and whichever flusher next
gets a connection takes everything waiting then: one statement, one commit,
one NOTIFY per queue, however many callers. At most ``flushers`` connections
enqueue at once, so the rest of the pool stays free for others.

Each caller still gets its own id, or its own error:

- The batch's statement is the one :func:`koyojobs.inserts.insert_for` picks
  for the batch (``insert_jobs_unique`` when a call is unique, so two callers
  with one key get one job, as two calls one after the other would).
- When the database (or the driver, before sending) refuses the batch, the
  statement ran in a transaction of its own and nothing of it was committed:
  each call is then inserted again alone, so only the call at fault gets the
  error and its neighbours their ids.
- When the connection is lost mid-statement, whether the batch committed is
  unknown: every caller of the batch gets that error, as a lone caller would
  (an enqueue that raises because the connection broke may have committed);
  nothing is sent twice.
- A caller cancelled while its call waits is taken off the list; once its
  batch is sent, the job is inserted anyway (as with a cancelled lone call
  whose statement reached the server).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg

from .inserts import ids_from, insert_for
from .jobs import JobCall
from .serializer import Serializer
from .sql import QUERIES

__all__ = ["Coalescer", "may_have_committed"]

Pending = tuple[JobCall[Any], "asyncio.Future[int]"]

MOST_PER_BATCH = 1000
"""Calls one statement takes at most; the rest wait for the next."""


def may_have_committed(exc: BaseException) -> bool:
    """Whether a statement that raised ``exc`` may still have committed (the link broke).

    Example:
        >>> may_have_committed(ConnectionResetError())
        True
        >>> may_have_committed(asyncpg.CheckViolationError())
        False
    """
    if isinstance(exc, asyncpg.DataError):  # the driver refused a parameter: nothing sent
        return False
    if isinstance(exc, asyncpg.PostgresError):
        # The server answered: the statement failed and rolled back, unless it is
        # the server going away (class 08, 57P).
        state = getattr(exc, "sqlstate", "") or ""
        return state.startswith(("08", "57P"))
    return isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError))


class Coalescer:
    """Single enqueues of one broker, merged into batches while others are in flight.

    ``pool`` gives the broker's pool when asked (it may be replaced);
    ``flushers`` caps the connections enqueueing at once (``None``: half the
    pool's most, at least one).

    Example:
        >>> coalescer = Coalescer(lambda: None, Serializer(), flushers=4)  # doctest: +SKIP
        >>> job_id = await coalescer.enqueue(say_hello("Ada"))  # doctest: +SKIP
    """

    def __init__(
        self, pool: Callable[[], asyncpg.Pool], serializer: Serializer, flushers: int | None = None
    ) -> None:
        self._pool = pool
        self._serializer = serializer
        self.flushers = flushers
        self._active = 0
        self._waiting: list[Pending] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def enqueue(self, call: JobCall[Any]) -> int:
        """Insert ``call`` (already consumed); its id, or the error of its own row."""
        if self._active == 0:
            # Nothing in flight: this call goes now, alone, with no future or task.
            self._active += 1
            try:
                return (await self._insert(self._pool(), [call]))[0]
            finally:
                self._active -= 1
                self._kick()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        pending: Pending = (call, future)
        self._waiting.append(pending)
        self._kick()
        try:
            return await future
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._waiting.remove(pending)
            raise

    def _kick(self) -> None:
        if self._waiting and self._active < self._most_flushers():
            self._active += 1
            task = asyncio.get_running_loop().create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _most_flushers(self) -> int:
        if self.flushers is not None:
            return self.flushers
        return max(1, self._pool().get_max_size() // 2)

    async def _flush(self) -> None:
        try:
            while self._waiting:
                async with self._pool().acquire() as connection:
                    # Whatever waits now that a connection is free: one statement.
                    batch = self._waiting[:MOST_PER_BATCH]
                    del self._waiting[:MOST_PER_BATCH]
                    batch = [(c, f) for c, f in batch if not f.done()]
                    if batch:
                        await self._send(connection, batch)
        except BaseException as exc:
            # Acquiring failed (the pool is closing, the database is down): those
            # still waiting hear it rather than wait for nothing.
            self._fail(self._waiting, exc)
            self._waiting = []
            if not isinstance(exc, Exception):
                raise
        finally:
            self._active -= 1
            self._kick()

    async def _send(self, connection: Any, batch: list[Pending]) -> None:
        calls = [call for call, _ in batch]
        try:
            ids = await self._insert(connection, calls)
        except Exception as exc:
            if len(batch) == 1 or may_have_committed(exc):
                self._fail(batch, exc)
                return
            # Nothing of the batch was committed: each call alone, its own outcome.
            for call, future in batch:
                try:
                    (job_id,) = await self._insert(connection, [call])
                except Exception as alone:
                    self._fail([(call, future)], alone)
                else:
                    if not future.done():
                        future.set_result(job_id)
            return
        for (_, future), job_id in zip(batch, ids, strict=True):
            if not future.done():
                future.set_result(job_id)

    async def _insert(self, target: Any, calls: list[JobCall[Any]]) -> list[int]:
        insert = insert_for(calls, self._serializer)
        rows = await target.fetch(QUERIES[insert.query], *insert.parameters)
        return ids_from(insert, calls, rows)

    @staticmethod
    def _fail(batch: list[Pending], exc: BaseException) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)
