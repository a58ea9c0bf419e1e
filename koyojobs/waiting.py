"""``Broker.wait``: wait for a job to finish, woken by a notification.

A waiter marks its job (``waited``); the statement that ends marked jobs (a
worker's batch of outcomes) notifies ``koyojobs_finished`` once, however many
it ended, and a cancel or a rescue that gives up always does. A drain that
nobody waits on sends no NOTIFY at all. A broker with waiters LISTENs on the
channel; each notification starts one query for all the ids waited for
(never one per waiter, and never two at once: notifications that arrive
meanwhile fold into one more look), and the waiters whose jobs finished
fetch them. Every waiter also looks on its own
every ``recheck`` seconds, so a notification lost (a LISTEN connection that
reconnected, or one behind a transaction pooler that hears nothing) delays
the answer but never hangs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from ._validate import is_count, is_seconds
from .lifecycle import cancel_and_wait
from .models import Job, Status
from .sql import QUERIES

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["DEFAULT_RECHECK", "Waiters"]

log = logging.getLogger("koyojobs.broker")

DEFAULT_RECHECK = 5.0
"""Seconds between a waiter's own looks at its job, should notifications not arrive."""

_FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)


class Waiters:
    """The jobs a broker's callers wait for, and the one look that serves them all."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._events: dict[int, set[asyncio.Event]] = {}
        self._look: asyncio.Task[None] | None = None
        self._again = False

    def notified(self, _payload: str = "") -> None:
        """Some jobs finished (or notifications may have been lost): look for ours."""
        if not self._events:
            return
        if self._look is not None and not self._look.done():
            self._again = True
            return
        self._look = asyncio.get_running_loop().create_task(
            self._look_up(), name="koyojobs-wait-look"
        )

    async def _look_up(self) -> None:
        while True:
            self._again = False
            ids = list(self._events)
            if not ids:
                return
            try:
                rows = await self._broker.pool.fetch(QUERIES["finished_among"], ids)
            except Exception:
                # Each waiter looks again by itself within its recheck.
                log.debug("looking up finished jobs failed", exc_info=True)
                return
            for row in rows:
                for event in self._events.get(row["id"], ()):
                    event.set()
            if not self._again:
                return

    async def stop(self) -> None:
        """Stop a look in flight (the broker is stopping)."""
        look, self._look = self._look, None
        await cancel_and_wait(look)

    async def wait(self, job_id: int, timeout: float | None, recheck: float) -> Job:
        """See :meth:`Broker.wait`."""
        if not is_count(job_id, least=-(2**63)):
            raise TypeError(f"wait() needs a job id (int), got {job_id!r}")
        if timeout is not None and not is_seconds(timeout, zero=True):
            raise ValueError(f"wait() timeout must be seconds >= 0 or None, got {timeout!r}")
        if not is_seconds(recheck):
            raise ValueError(f"wait() recheck must be seconds > 0, got {recheck!r}")
        job = await self._broker.get_job(job_id)
        if job is None:
            raise LookupError(f"wait(): no job with id {job_id}")
        if job.status in _FINISHED:
            return job
        await self._broker._listen_finished(self.notified)
        event = asyncio.Event()
        self._events.setdefault(job_id, set()).add(event)
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await self._until_finished(job_id, event, recheck)
        except TimeoutError:
            if deadline.expired():
                raise TimeoutError(
                    f"wait(): job {job_id} did not finish within {timeout:g}s"
                ) from None
            raise
        finally:
            events = self._events.get(job_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[job_id]

    async def _until_finished(self, job_id: int, event: asyncio.Event, recheck: float) -> Job:
        # Listening already: the statement that ends the job from now on notifies.
        await self._broker.pool.execute(QUERIES["mark_waited"], job_id)
        while True:
            # Listening before this look: a job that ends after it notifies us.
            event.clear()
            job = await self._broker.get_job(job_id)
            if job is None:
                raise LookupError(f"wait(): job {job_id} was deleted while waited for")
            if job.status in _FINISHED:
                return job
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(recheck):
                    await event.wait()
