"""Bulk actions: retry, cancel or delete every job a filter matches, in batches.

Each batch is a transaction of its own over at most ``batch`` rows, newest
first, walking down by id: rows a worker holds at that instant (claiming,
renewing a lease) are skipped rather than waited for (``FOR UPDATE SKIP
LOCKED``), so a bulk action over a hundred thousand jobs never holds the
workers up, and what it retries is claimable batch by batch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from ._validate import is_count
from .models import Status
from .sql import QUERIES

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["BATCH", "Selection", "count_matching", "run_bulk"]

BATCH = 1000
"""Rows per batch of a bulk action."""
_NO_CURSOR = sys.maxsize

_ACTS_ON = {
    "retry": frozenset({Status.DONE, Status.FAILED, Status.CANCELLED}),
    "cancel": frozenset({Status.PENDING, Status.READY, Status.RUNNING}),
    "delete": frozenset(
        {Status.PENDING, Status.READY, Status.DONE, Status.FAILED, Status.CANCELLED}
    ),
}


@dataclass(frozen=True, slots=True)
class Selection:
    """Which jobs a bulk action acts on: every filter given must match.

    ``statuses`` defaults to every status the action applies to; ``name`` is
    exact, ``name_prefix`` a prefix, ``names`` a list of names and ``ids`` a
    list of job ids (the rows selected on a page).

    Example:
        >>> Selection(queue="emails").statuses_for("retry")
        ['cancelled', 'done', 'failed']
        >>> Selection(statuses=("running",)).statuses_for("retry")
        Traceback (most recent call last):
        ...
        ValueError: retry does not apply to running jobs (only to cancelled, done, failed)
    """

    statuses: Sequence[Status | str] | None = None
    queue: str | None = None
    name: str | None = None
    name_prefix: str | None = None
    names: Sequence[str] | None = None
    ids: Sequence[int] | None = None

    def statuses_for(self, action: str) -> list[str]:
        allowed = sorted(s.value for s in _ACTS_ON[action])
        if self.statuses is None:
            return allowed
        chosen = sorted({Status(s).value for s in self.statuses})
        wrong = [s for s in chosen if s not in allowed]
        if wrong:
            raise ValueError(
                f"{action} does not apply to {', '.join(wrong)} jobs (only to {', '.join(allowed)})"
            )
        return chosen

    def parameters(self, action: str) -> list[object]:
        return [
            self.statuses_for(action),
            self.queue,
            self.name,
            self.name_prefix,
            None if self.names is None else list(self.names),
            None if self.ids is None else list(self.ids),
        ]


async def run_bulk(broker: Broker, action: str, selection: Selection, batch: int = BATCH) -> int:
    """Apply ``action`` (retry, cancel or delete) to every job ``selection`` matches; how many.

    Example:
        >>> await run_bulk(broker, "retry", Selection(queue="emails"))  # doctest: +SKIP
        5000
    """
    if not is_count(batch, below=100_001):
        raise ValueError(f"batch must be an int from 1 to 100000, got {batch!r}")
    statement = QUERIES[f"bulk_{action}"]
    parameters = selection.parameters(action)
    cursor, total, with_unique = _NO_CURSOR, 0, True
    while True:
        try:
            row = await broker.pool.fetchrow(statement, *parameters, cursor, batch, with_unique)
        except asyncpg.UniqueViolationError:
            # An enqueue took a unique key this batch meant to retry, between
            # the look and the write: this batch leaves the unique jobs alone.
            with_unique = False
            continue
        with_unique = True
        assert row is not None
        total += int(row["changed"])
        for queue in row["queues"]:
            await broker.pool.execute(QUERIES["notify_queue"], queue)
        if row["changed"] and action in ("cancel", "delete"):
            await broker.pool.execute(QUERIES["notify_finished"])
        if row["picked"] < batch:
            return total
        cursor = row["floor"]


async def count_matching(
    broker: Broker, action: str, selection: Selection, most: int = 1_000_000
) -> int:
    """How many jobs ``selection`` matches for ``action`` now, counted up to ``most``."""
    count: int = await broker.pool.fetchval(
        QUERIES["bulk_count"], *selection.parameters(action), most
    )
    return count
