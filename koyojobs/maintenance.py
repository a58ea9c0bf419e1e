"""Keeping the jobs table quick to claim from: VACUUM when dead rows pile up.

Every claim and every outcome leaves a dead row version behind, and a dead
entry in the index of ready jobs, right where the next claim starts reading.
Until VACUUM removes them, each claim steps over all of them: with a million
jobs drained and no VACUUM, a claim read 6,000 index pages (10 ms) instead of
a handful. Autovacuum is meant to do this, but by default it waits for a
fifth of the table to be dead and naps a minute between looks, and it may be
off or busy elsewhere; queue users of Que and River learned to VACUUM their
job tables themselves. So workers do it, when the statistics count more than
a threshold of dead rows, one VACUUM at a time across all of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

from .sql import QUERIES

__all__ = ["Vacuum"]

log = logging.getLogger("koyojobs.maintenance")

Fetch = Callable[..., Awaitable[list[asyncpg.Record]]]


class Vacuum:
    """Runs ``VACUUM koyojobs_jobs`` in the background once ``threshold`` dead rows pile up.

    ``check`` costs one small query; the VACUUM itself runs on a connection
    of the pool in a task of its own, so claiming goes on meanwhile.
    ``threshold=None`` leaves the table to autovacuum.
    """

    def __init__(self, threshold: int | None) -> None:
        self.threshold = threshold
        self._task: asyncio.Task[None] | None = None
        self._left = 0
        """Dead rows the last VACUUM could not remove (an old snapshot still
        sees them): only as many again as the threshold call for another."""

    async def check(self, fetch: Fetch, pool: asyncpg.Pool) -> None:
        """Start a VACUUM on ``pool`` if the table holds more dead rows than the threshold.

        ``fetch`` runs the small query that counts them.
        """
        if self.threshold is None or (self._task is not None and not self._task.done()):
            return
        rows = await fetch(QUERIES["dead_rows"])
        if not rows:
            return
        dead: int = rows[0]["n_dead_tup"]
        if dead - self._left < self.threshold:
            return
        if not rows[0]["may_vacuum"]:
            # Said once: this role does not own the table, so only autovacuum
            # (or the owner) can clean it.
            log.warning(
                "cannot vacuum the jobs table: this role does not own it",
                extra={"dead_rows": dead},
            )
            self.threshold = None
            return
        self._task = asyncio.create_task(self._vacuum(pool, dead), name="koyojobs-vacuum")

    async def _vacuum(self, pool: asyncpg.Pool, dead: int) -> None:
        started = time.monotonic()
        try:
            async with pool.acquire() as conn:
                await conn.execute(QUERIES["vacuum_jobs"])
                self._left = await conn.fetchval(QUERIES["dead_rows"]) or 0
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            log.warning("vacuum of the jobs table failed", exc_info=True)
            return
        log.info(
            "jobs table vacuumed",
            extra={"dead_rows": dead, "seconds": round(time.monotonic() - started, 3)},
        )

    async def stop(self) -> None:
        """Cut a VACUUM in progress short (what it cleaned stays clean)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
