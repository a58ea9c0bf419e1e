"""The rescue: putting back the jobs whose worker stopped renewing their lease.

A job whose worker died (SIGKILL, a lost machine) stays ``running`` until its
lease lapses; then any worker may put it back, ``ready`` again, or ``failed``
("lease lapsed") when that lost run was its last attempt. One claim loop per
worker runs :class:`Rescue` between its rounds, on that loop's connection, at
most once per ``poll_interval``; ``FOR UPDATE SKIP LOCKED`` keeps workers that
look at once from doing the work twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

from .database import Database
from .models import Status
from .sql import QUERIES

__all__ = ["Rescue"]

log = logging.getLogger("koyojobs.worker")

Fetch = Callable[..., Awaitable[list[asyncpg.Record]]]


class Rescue:
    """Puts back lapsed jobs, at most once every ``every`` seconds."""

    def __init__(self, database: Database, every: float, deadline: float) -> None:
        self._database = database
        self._every = every
        self._deadline = deadline
        self._next = 0.0

    async def run_if_due(self, fetch: Fetch) -> None:
        """Rescue now if ``every`` seconds have passed since the last time.

        ``fetch`` runs the statement (the claim loop's connection); the
        NOTIFY that wakes the queues of jobs put back goes through the pool.
        """
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self._every
        rows = await fetch(QUERIES["rescue_lapsed"])
        for row in rows:
            log.warning(
                "lease lapsed; job put back",
                extra={"job_id": row["id"], "queue": row["queue"], "status": row["status"]},
            )
        for queue in {row["queue"] for row in rows if row["status"] == Status.READY}:
            await self._database.fetch_within(self._deadline, QUERIES["notify_queue"], queue)
