"""``Worker``: runs the jobs of one queue, at most ``pool_size`` at once, in one or two claim loops.

The worker holds the settings, the thread pool of plain ``def`` jobs and the
services that run beside the claim loops (periodic ticks, retention); each
claim loop (:mod:`koyojobs.lane`) claims, runs and writes back, and keeps its
jobs' leases (:mod:`koyojobs.leases`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

from . import heartbeat
from ._validate import is_count, is_seconds
from .broker import Broker
from .execution import warn_if_unsigned
from .lane import Lane
from .lifecycle import Lifecycle
from .limits import limited_jobs, register_limits
from .periodic import Ticker
from .retention import Pruner

__all__ = ["Worker"]

log = logging.getLogger("koyojobs.worker")

_TWO_LANES_FROM = 16
_MIN_DEADLINE = 2.0
_MAX_DEADLINE = 10.0


class Worker(Lifecycle):
    """Runs the jobs of one queue, at most ``pool_size`` at once.

    ``lease`` is how long a claimed job stays this worker's without a renewal
    (renewed every third of it); ``poll_interval`` bounds the wait between
    looks at the table when no notification arrives, and paces the rescue of
    lapsed leases; ``shutdown_grace`` is how long :meth:`stop` lets running
    jobs finish before putting them back. Once the jobs table holds more than
    ``vacuum_threshold`` dead row versions, a worker VACUUMs it, so claims
    stay fast through a long drain (``None``: leave it to autovacuum; see
    the Operations page).

    A plain ``def`` job runs in a thread, which nothing can stop. So that it
    never runs twice at once: one still running when the grace ends stays
    ``running``, held by no worker, for ``lease`` more seconds, then the
    rescue puts it back (``koyojobs worker`` exits at once after its stop,
    taking the thread with it); and with
    ``exit_on_lost_lease=True`` (what ``koyojobs worker`` does) a worker that
    cannot renew the lease of such a job, because the database is out of
    reach, ends its process before the lease lapses (exit status 75). See the
    Reliability page.

    The worker also enqueues the ticks of the periodic jobs of its queue
    that this process has imported (see :mod:`koyojobs.periodic`).

    From ``pool_size`` 16 up, the slots are split between two claim loops,
    each with its own connection: while one waits for PostgreSQL, the other's
    jobs run, so the worker's Python and the database work at once.

    Example:
        >>> from koyojobs import Broker, Worker
        >>> async with Broker(dsn) as broker:  # doctest: +SKIP
        ...     async with Worker(broker, queue="emails", pool_size=4):
        ...         await asyncio.Event().wait()
    """

    def __init__(
        self,
        broker: Broker,
        queue: str = "default",
        pool_size: int = 8,
        lease: float = 30.0,
        poll_interval: float = 5.0,
        shutdown_grace: float = 10.0,
        vacuum_threshold: int | None = 50_000,
        exit_on_lost_lease: bool = False,
    ) -> None:
        if not isinstance(broker, Broker):
            raise TypeError(f"Worker needs a Broker, got {broker!r}")
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"Worker queue must be a non-empty string, got {queue!r}")
        if not is_count(pool_size):
            raise ValueError(f"Worker pool_size must be an int >= 1, got {pool_size!r}")
        for option, value in (("lease", lease), ("poll_interval", poll_interval)):
            if not is_seconds(value):
                raise ValueError(f"Worker {option} must be seconds > 0, got {value!r}")
        if not is_seconds(shutdown_grace, zero=True):
            raise ValueError(f"Worker shutdown_grace must be seconds >= 0, got {shutdown_grace!r}")
        if vacuum_threshold is not None and not is_count(vacuum_threshold):
            raise ValueError(
                f"Worker vacuum_threshold must be an int >= 1 or None, got {vacuum_threshold!r}"
            )
        self.broker = broker
        self.queue = queue
        self.pool_size = pool_size
        self.lease = float(lease)
        self.poll_interval = float(poll_interval)
        self.shutdown_grace = float(shutdown_grace)
        self.vacuum_threshold = vacuum_threshold
        self.exit_on_lost_lease = exit_on_lost_lease
        # A bound on every round trip to the database: well inside the lease,
        # so a hung renewal is noticed before the lease lapses, but not so
        # tight that a busy server trips it.
        self.deadline = min(_MAX_DEADLINE, max(_MIN_DEADLINE, self.lease / 3))
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        lanes = 2 if pool_size >= _TWO_LANES_FROM else 1
        self._lanes = [
            Lane(
                self,
                slots=pool_size // lanes + (1 if i < pool_size % lanes else 0),
                lane_id=self.id if lanes == 1 else f"{self.id}/{i}",
                rescues=i == 0,
            )
            for i in range(lanes)
        ]
        for lane in self._lanes:
            lane.siblings = [other for other in self._lanes if other is not lane]
        self.limited_jobs: list[str] = []
        """The names of the queue's jobs with a limit, as this process defines them (at start)."""
        self._executor: ThreadPoolExecutor | None = None
        self._ticker: Ticker | None = None
        self._pruner: Pruner | None = None

    async def start(self) -> None:
        """Subscribe to the queue's wake-ups and start claiming."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(
            self.pool_size, thread_name_prefix=f"koyojobs-{self.queue}"
        )
        try:
            # The limits this process knows, declared before its first claim.
            self.limited_jobs = limited_jobs(self.queue)
            await register_limits(self.broker.database, self.queue, self.deadline)
            # Subscribed before the claim loops: a LISTEN connection that cannot
            # open fails the start before any claim loop runs (one left running
            # could not be stopped by a caller whose start raised).
            await self.broker.subscribe(self.queue, self.wake)
        except BaseException:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False)
            raise
        for lane in self._lanes:
            lane.start(self._executor)
        self._ticker = Ticker(
            self.broker, self.queue, idle_check=self.poll_interval, deadline=self.deadline
        )
        self._ticker.start()
        self._pruner = Pruner(self.broker)
        self._pruner.start()
        warn_if_unsigned(self.broker.serializer)
        heartbeat.join(self)
        log.info("worker started", extra={"queue": self.queue, "worker_id": self.id})

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish within ``shutdown_grace``, put the rest back.

        A run cut short goes back to ``ready`` and does not count as an attempt.
        """
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await heartbeat.leave(self)
        if self._ticker is not None:
            await self._ticker.stop()
            self._ticker = None
        if self._pruner is not None:
            await self._pruner.stop()
            self._pruner = None
        self.broker.unsubscribe(self.queue, self.wake)
        released = await asyncio.gather(*(lane.stop() for lane in self._lanes))
        # Threads cannot be stopped; their results are dropped.
        executor.shutdown(wait=False, cancel_futures=True)
        log.info("worker stopped", extra={"queue": self.queue, "released": sum(released)})

    @property
    def limited(self) -> bool:
        """Whether a job of the queue has a limit: then claims go through the
        limited claim (see :mod:`koyojobs.limits`)."""
        return bool(self.limited_jobs)

    def recovered(self) -> None:
        """The database answers again after an outage (a claim loop says so):
        the periodic ticks of the outage are enqueued now, not after their own backoff."""
        if self._ticker is not None:
            self._ticker.wake()

    def wake(self) -> None:
        """Look at the table now (called by the broker on NOTIFY).

        One claim loop looks, the one with the most free slots; if it fills
        them all, it wakes the other, since more jobs may be waiting.
        """
        max(self._lanes, key=lambda lane: lane.free).wake()

    @property
    def running(self) -> int:
        """How many jobs run now."""
        return sum(lane.running for lane in self._lanes)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` has begun."""
        return any(lane.stopping for lane in self._lanes)
