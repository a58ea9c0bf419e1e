"""Keeping the jobs table quick to claim from: VACUUM when dead rows pile up.

Every claim and every outcome leaves a dead row version behind, and a dead
entry in the index of ready jobs, right where the next claim starts reading.
Until VACUUM removes them, each claim steps over all of them: with a million
jobs drained and no VACUUM, a claim read 6,000 index pages (10 ms) instead of
a few dozen. Autovacuum is meant to do this, but by default it waits for a
fifth of the table to be dead and naps a minute between looks, and it may be
off or busy elsewhere; users of Que and River learned to VACUUM their job
tables themselves. So workers do it, once the statistics count more dead rows
than a threshold: one look a second and one VACUUM at a time per process
(``SKIP_LOCKED`` keeps processes from queueing behind each other).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import asyncpg

from .errors import log_trouble
from .sql import QUERIES

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["Vacuum"]

log = logging.getLogger("koyojobs.maintenance")

Fetch = Callable[..., Awaitable[list[asyncpg.Record]]]

CHECK_EVERY = 1.0
"""Seconds between looks at the dead-row count: a fast drain adds tens of
thousands a second, and each one slows the claims that follow."""

AFTER_FAILURE = 60.0
"""Seconds before trying again after a VACUUM failed (a statement timeout, a
lost connection): not in a loop."""

_LOCK_NOT_AVAILABLE = "55P03"
_by_broker: weakref.WeakKeyDictionary[Broker, Vacuum] = weakref.WeakKeyDictionary()


class Vacuum:
    """When to VACUUM the jobs table, shared by the workers of one broker.

    Workers call :meth:`check` from their main loops; it looks at the
    statistics at most once every ``CHECK_EVERY`` seconds and, past the
    threshold, starts ``VACUUM (SKIP_LOCKED) koyojobs_jobs`` on a connection
    of its own in a task of its own, so claiming goes on meanwhile.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._next_check = 0.0
        self._left = 0
        """Dead rows the last VACUUM left (an old snapshot still sees them, or
        the statistics lag): the next one waits for a threshold more."""
        self.refused = False
        """This role may not VACUUM the table: leave it to autovacuum."""

    @classmethod
    def of(cls, broker: Broker) -> Vacuum:
        """The one instance for ``broker``'s workers."""
        vacuum = _by_broker.get(broker)
        if vacuum is None:
            vacuum = _by_broker[broker] = cls()
        return vacuum

    async def check(
        self, threshold: int | None, fetch: Fetch, broker: Broker
    ) -> asyncio.Task[None] | None:
        """Start a VACUUM if the table holds ``threshold`` dead rows more than the last one left.

        ``fetch`` runs the small query that counts them. Returns the task of
        the VACUUM it started, if any, for the caller to stop with itself.
        """
        now = time.monotonic()
        if threshold is None or self.refused or now < self._next_check:
            return None
        if self._task is not None and not self._task.done():
            return None
        self._next_check = now + CHECK_EVERY
        rows = await fetch(QUERIES["dead_rows"])
        dead: int = rows[0]["n_dead_tup"] if rows else 0
        # The count falls when anyone (autovacuum too) cleans the table.
        self._left = min(self._left, dead)
        if dead - self._left < threshold:
            return None
        if not rows[0]["may_vacuum"]:
            self.refused = True
            log.warning(
                "cannot vacuum the jobs table: this role may not; leaving it to autovacuum",
                extra={"dead_rows": dead},
            )
            return None
        self._task = asyncio.create_task(self._vacuum(broker, dead), name="koyojobs-vacuum")
        return self._task

    async def _vacuum(self, broker: Broker, dead: int) -> None:
        started = time.monotonic()
        warnings: list[asyncpg.PostgresLogMessage] = []
        try:
            # Not a pool connection: a VACUUM of a big table takes a while,
            # and lease renewals must not wait for a free connection. Past a
            # pooler when the broker knows a direct DSN; no time limit.
            conn = await broker.database.connect(
                dsn=broker.listen_dsn, settings={"statement_timeout": "0"}, role="koyojobs-vacuum"
            )
            try:
                conn.add_log_listener(lambda _, message: warnings.append(message))
                await conn.execute(QUERIES["vacuum_jobs"])
                left = await conn.fetch(QUERIES["dead_rows"])
            finally:
                await conn.close(timeout=5)
        except Exception as exc:
            self._next_check = time.monotonic() + AFTER_FAILURE
            log_trouble(log, "vacuum of the jobs table failed", exc)
            return
        self._left = left[0]["n_dead_tup"] if left else 0
        for warning in warnings:
            if warning.sqlstate != _LOCK_NOT_AVAILABLE:
                # Such as an old snapshot holding rows back: worth an operator's look.
                log.warning(
                    "vacuum of the jobs table: server says", extra={"server_said": warning.message}
                )
        if any(w.sqlstate == _LOCK_NOT_AVAILABLE for w in warnings):
            log.debug("vacuum skipped: another one is running", extra={"dead_rows": dead})
        else:
            log.info(
                "jobs table vacuumed",
                extra={"dead_rows": dead, "seconds": round(time.monotonic() - started, 3)},
            )
