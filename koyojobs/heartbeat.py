"""Worker heartbeats: every worker process says, every few seconds, that it lives.

A process's workers (one per queue) share one :class:`Heartbeat` per broker,
and one row of ``koyojobs_workers``: host, pid, queues, concurrency, jobs
running, started, last seen. A row not written for three heartbeats is a
process that is gone (killed, its machine lost): :meth:`Broker.workers`
leaves it out, and the next heartbeat of any process deletes it. A process
that stops cleanly deletes its row itself.

The same beat rolls the finished jobs of past minutes up for the
dashboard's charts (:mod:`koyojobs.rollup`), at most once a minute and in one
process at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from .errors import log_trouble
from .lifecycle import cancel_and_wait, raise_if_stopping
from .rollup import roll_up
from .sql import QUERIES

if TYPE_CHECKING:
    from .broker import Broker
    from .worker import Worker

__all__ = ["INTERVAL", "Heartbeat", "WorkerProcess", "join", "leave"]

log = logging.getLogger("koyojobs.heartbeat")

INTERVAL = 5.0
"""Seconds between heartbeats."""
_ROLLUP_EVERY = 60.0
_ROLLUP_DEADLINE = 30.0  # an hour of a busy table's finished jobs, read through an index

_beats: weakref.WeakKeyDictionary[Broker, Heartbeat] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class WorkerProcess:
    """A live worker process, as :meth:`Broker.workers` returns it.

    ``seen_ago`` is how many seconds ago its last heartbeat was written.
    """

    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    running: int
    started_at: datetime
    last_seen: datetime
    seen_ago: float


class Heartbeat:
    """The heartbeat of one process's workers on one broker."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.workers: list[Worker] = []
        self._task: asyncio.Task[None] | None = None
        self._started: datetime | None = None
        self._rolled = -_ROLLUP_EVERY
        self._woken = asyncio.Event()
        self._answering = False
        """Whether the last beat went through (else a stop does not wait on the database)."""

    @property
    def interval(self) -> float:
        # Read at each beat: a test may shorten it.
        return INTERVAL

    @property
    def deadline(self) -> float:
        """The workers' bound on a round trip: a beat on a dead path gives up as a claim does."""
        return min([INTERVAL, *(w.deadline for w in self.workers)])

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="koyojobs-heartbeat")

    def wake(self) -> None:
        # A worker joined or left: say so now rather than at the next beat.
        self._woken.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if not self._answering:
            return  # its row lapses on its own after three beats
        try:
            await self.broker.database.fetch_within(1.0, QUERIES["worker_gone"], self.id)
        except Exception as exc:  # its row lapses on its own after three beats
            log_trouble(log, "could not remove this worker's heartbeat row", exc)

    async def beat(self) -> None:
        """Write this process's row once (and remove the rows of the gone)."""
        database = self.broker.database
        if self._started is None:
            rows = await database.fetch_within(5.0, QUERIES["database_now"])
            self._started = rows[0][0]
        await database.fetch_within(
            self.deadline,
            QUERIES["worker_beat"],
            self.id,
            socket.gethostname(),
            os.getpid(),
            sorted({w.queue for w in self.workers}),
            sum(w.pool_size for w in self.workers),
            sum(w.running for w in self.workers),
            self._started,
            self.interval,
        )

    async def _loop(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            try:
                self._answering = False
                await self.beat()
                self._answering = True
                if loop.time() - self._rolled >= _ROLLUP_EVERY:
                    self._rolled = loop.time()
                    for _ in range(50):  # catching up two days, an hour a call
                        if not await roll_up(self.broker, _ROLLUP_DEADLINE):
                            break
                failures = 0
            except Exception as exc:
                raise_if_stopping(exc)  # a stop, not a failed beat
                failures += 1
                if failures == 1:
                    log_trouble(log, "heartbeat failed; retrying", exc)
            # The period between beats, cut short when a worker joins or leaves.
            # (asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel
            # that arrives as the event is set, and the stop would wait forever.)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._woken.wait()
            self._woken.clear()


def join(worker: Worker) -> None:
    """Count ``worker`` in its process's heartbeat (started with the first worker)."""
    beat = _beats.get(worker.broker)
    if beat is None:
        beat = _beats[worker.broker] = Heartbeat(worker.broker)
    beat.workers.append(worker)
    if beat._task is None:
        beat.start()
    else:
        beat.wake()


async def leave(worker: Worker) -> None:
    """Stop counting ``worker``; the last worker to leave stops the heartbeat and its row."""
    beat = _beats.get(worker.broker)
    if beat is None or worker not in beat.workers:
        return
    beat.workers.remove(worker)
    if beat.workers:
        beat.wake()
        return
    del _beats[worker.broker]
    await beat.stop()
