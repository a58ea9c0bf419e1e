"""Leases: how a worker keeps the jobs it runs, and lets go of those it no longer holds.

A claimed job is the claiming loop's for ``lease`` seconds. :class:`Leases`
renews the leases of every job a claim loop holds (running, or finished with
its outcome not yet written) every third of the lease, on that loop's own
connection, and stops a run the moment its lease may have lapsed, or when the
renewal says the job is no longer held (cancelled, or rescued by another
worker): so that a job never runs twice at once. The rescue of jobs whose
worker died is :mod:`koyojobs.rescue`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import asyncpg

from .errors import log_trouble
from .lifecycle import cancel_and_wait, raise_if_stopping
from .progress import Progress
from .sql import QUERIES

__all__ = [
    "EXIT_LOST_LEASE",
    "TIMER_SLACK",
    "Leases",
    "Run",
    "TrackedExecutor",
    "exit_for_lost_lease",
    "stop_run",
]

log = logging.getLogger("koyojobs.worker")

TIMER_SLACK = 0.01
"""asyncio may fire a timer a hair early: lease checks allow for it."""

Fetch = Callable[..., Awaitable[list[asyncpg.Record]]]

EXIT_LOST_LEASE = 75
"""The exit status of a worker process that ended itself to keep a lapsing lease
from letting a job run twice at once (``EX_TEMPFAIL``: a supervisor restarts it)."""


def exit_for_lost_lease(job_id: int) -> NoReturn:
    """End the process now: a ``def`` job's thread cannot be stopped otherwise.

    Its lease could not be renewed (the database is unreachable) and is about
    to lapse, after which another worker may run the job again. Exiting kills
    the thread first; the job runs again, once, elsewhere, as after a crash.
    """
    log.critical(
        "cannot renew the lease of a running def job, whose thread cannot be stopped: "
        "exiting before the lease lapses, so that the job never runs twice at once",
        extra={"job_id": job_id},
    )
    logging.shutdown()
    sys.stderr.flush()
    os._exit(EXIT_LOST_LEASE)


@dataclass(eq=False)
class Run:
    """One run of a claimed job in a claim loop."""

    task: asyncio.Task[None]
    lease_deadline: float
    """Monotonic time after which another worker may have rescued the job."""
    cancelled: bool = field(default=False)
    """Set when the worker stops the run itself: its outcome is not recorded."""
    begun: bool = field(default=False)
    """Set when the job itself starts; until then, stop the run with :func:`stop_run`."""
    threads: list[concurrent.futures.Future[Any]] = field(default_factory=list)
    """What the run handed to the worker's thread pool (a ``def`` job, ``def`` hooks)."""
    progress: Progress = field(default_factory=Progress)
    """What the job reported with ``report_progress()``, for the renewals to write."""

    def thread_alive(self) -> bool:
        """Whether a thread of this run may still be running: it cannot be stopped."""
        return any(not future.done() for future in self.threads)


class TrackedExecutor(concurrent.futures.Executor):
    """The worker's thread pool, noting in ``run`` each piece of work handed to it."""

    def __init__(self, executor: concurrent.futures.Executor, run: Run) -> None:
        self._executor = executor
        self._run = run

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        future = self._executor.submit(fn, *args, **kwargs)
        self._run.threads.append(future)
        return future


def stop_run(run: Run) -> None:
    """Stop ``run``; its outcome will not be recorded."""
    run.cancelled = True
    # A run that has not begun the job sees ``cancelled`` before it would, and
    # puts the job back. Cancelling its task instead could lose that: a task
    # cancelled before its first step never runs its body, clean-up included
    # (its slot and its hold on the job, which the heartbeat would keep renewing).
    if run.begun:
        run.task.cancel()


class Leases:
    """The leases of one claim loop: renewed, checked, and let go.

    ``runs`` is the loop's own map of running jobs (read, never changed here
    but for stopping runs); ``fetch`` runs a statement on the loop's
    connection; ``owner`` is the ``worker_id`` the loop claims as.
    ``on_lost_thread(job_id)`` is called when the lease of a run whose thread
    still runs is about to lapse: stopping the run cannot stop the thread, so
    only ending the process keeps the job from running twice at once.
    """

    def __init__(
        self,
        lease: float,
        runs: dict[int, Run],
        fetch: Fetch,
        owner: str,
        on_lost_thread: Callable[[int], None] | None = None,
    ) -> None:
        self.lease = lease
        self._on_lost_thread = on_lost_thread
        self.held: dict[int, int] = {}
        """Job id -> attempt, claimed and not yet written back: their leases are renewed."""
        self._runs = runs
        self._fetch = fetch
        self._owner = owner
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, queue: str) -> None:
        """Start renewing, every third of the lease."""
        self._task = asyncio.create_task(self._loop(queue), name=f"koyojobs-heartbeat-{queue}")

    async def stop(self) -> None:
        """Stop renewing (the jobs still held lapse unless written back or released)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def hold(self, job_id: int, attempt: int, deadline: float) -> None:
        """``attempt`` of ``job_id`` was claimed: its lease runs until ``deadline``."""
        self.held[job_id] = attempt
        self.check_at(deadline)

    def let_go(self, job_id: int, attempt: int) -> None:
        """Stop renewing ``attempt`` of ``job_id`` (only that attempt's hold: the job
        may have been claimed again since)."""
        if self.held.get(job_id) == attempt:
            del self.held[job_id]

    def check_at(self, deadline: float) -> None:
        """Look for runs whose lease may lapse at ``deadline``, and stop them."""
        # A run stops the moment its lease may lapse, not at the next heartbeat
        # after it (nor after a renewal that hangs): another worker may rescue
        # the job from then on. Deadlines only move later (new claims, renewals),
        # so one timer at the earliest is enough; it re-arms for the next.
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._stop_lapsed_runs)

    def _stop_lapsed_runs(self) -> None:
        self._timer = None
        now = time.monotonic() + TIMER_SLACK
        for job_id, run in list(self._runs.items()):
            if run.lease_deadline <= now and not run.task.done() and not run.cancelled:
                self._lapsing(job_id, run)
        pending = [r.lease_deadline for r in self._runs.values() if not r.cancelled]
        if pending:
            self.check_at(min(pending))

    def _lapsing(self, job_id: int, run: Run) -> None:
        """Stop ``run``, whose lease may lapse now; end the process if a thread runs on."""
        log.warning("lease not renewed in time; stopping the job", extra={"job_id": job_id})
        stop_run(run)
        if run.thread_alive() and self._on_lost_thread is not None:
            self._on_lost_thread(job_id)

    async def _loop(self, queue: str) -> None:
        interval = self.lease / 3
        while True:
            await asyncio.sleep(interval)  # the heartbeat's period, not a wait for a state
            if self.held:
                await self._renew(queue)

    async def _renew(self, queue: str) -> None:
        runs = dict(self._runs)
        # Finished runs whose outcome is not yet written stay leased too, or a
        # slow write would let another worker run them again.
        ids = list(self.held)
        # Progress reported since the last renewal rides along with this one.
        reported = {job_id: run.progress.take() for job_id, run in runs.items()}
        fractions = [reported.get(job_id, (None, None))[0] for job_id in ids]
        sent = time.monotonic()
        held: set[Any] | None
        try:
            if any(fraction is not None for fraction in fractions):
                messages = [reported.get(job_id, (None, None))[1] for job_id in ids]
                rows = await self._fetch(
                    QUERIES["renew_leases_progress"],
                    ids,
                    self._owner,
                    self.lease,
                    fractions,
                    messages,
                )
            else:
                rows = await self._fetch(QUERIES["renew_leases"], ids, self._owner, self.lease)
        except Exception as exc:
            raise_if_stopping(exc)
            log_trouble(log, "lease renewal failed", exc, queue=queue)
            for run in runs.values():
                run.progress.unwritten()
            held = None
        else:
            held = {row["id"] for row in rows}
        now = time.monotonic()
        if held:
            self.check_at(sent + self.lease)
        for job_id, run in runs.items():
            if self._runs.get(job_id) is not run:
                continue  # finished (its outcome is being recorded) or claimed again meanwhile
            if held is not None and job_id in held:
                run.lease_deadline = sent + self.lease
            elif held is not None:
                # Cancelled, or rescued by another worker: stop, so it never runs
                # twice at once.
                log.warning("job no longer held; stopping it", extra={"job_id": job_id})
                stop_run(run)
            elif now >= run.lease_deadline and not run.cancelled:
                # Unreachable, and the lease may lapse now: this failed renewal
                # can end after the deadline yet before the lapse timer fires
                # (a busy event loop), and must then do what the timer does.
                self._lapsing(job_id, run)
