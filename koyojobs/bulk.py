"""Bulk enqueue by COPY: large batches of plain job calls, the fastest way in.

Above :data:`COPY_FROM` calls, ``enqueue_many`` sends the rows with ``COPY
... FROM STDIN`` in binary, in a transaction: no statement to plan, no arrays
to unnest and sort. COPY fires the table's statement trigger like an INSERT,
so the workers get the same NOTIFY per queue. COPY returns no ids: the
transaction draws one value of the id sequence before and reads the last
after; the rows drew theirs in between, in the calls' order, so when the two
are exactly the batch's size apart the ids are that range. When another
session drew ids in between, the transaction's own rows in that range are
read back (by primary key and ``xmin``).

Batches with a unique call keep the INSERT (its ``ON CONFLICT`` logic has no
COPY form); small batches keep it too, where its one round trip wins, and so
do batches into the caller's transaction (``connection=``): the rows are
found by the ``xmin`` of a transaction of the broker's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from .inserts import Insert
from .sql import QUERIES

__all__ = ["COPY_FROM", "copies", "copy_jobs"]

COPY_FROM = 2000
"""Calls from which a plain batch goes by COPY (measured: see docs/benchmarks.md)."""

_COLUMNS = (
    "name",
    "queue",
    "priority",
    "max_attempts",
    "args",
    "scheduled_at",
    "limit_key",
    "trace_context",
)


def copies(insert: Insert) -> bool:
    """Whether ``insert`` (from :func:`koyojobs.inserts.insert_for`) goes by COPY.

    Example:
        >>> copies(Insert("insert_jobs", ([None] * 3000,)))
        True
        >>> copies(Insert("insert_jobs", ([None] * 10,)))
        False
    """
    return insert.query == "insert_jobs" and len(insert.parameters[0]) >= COPY_FROM


async def copy_jobs(
    connection: asyncpg.Connection | PoolConnectionProxy, insert: Insert
) -> list[int]:
    """Insert the rows of ``insert`` (an ``insert_jobs`` one) by COPY; their ids in order.

    ``connection`` is in no transaction: this one is the rows' own.
    """
    names, queues, priorities, attempts, args, scheduled, limits, trace = insert.parameters
    count = len(names)
    async with connection.transaction():
        begun = await connection.fetchrow(QUERIES["copy_jobs_begin"])
        assert begun is not None  # a SELECT without FROM has its row
        now, before = begun["now"], begun["before"]
        records: Sequence[tuple[Any, ...]] = list(
            zip(
                names,
                queues,
                priorities,
                attempts,
                args,
                [now if at is None else at for at in scheduled],
                limits,
                [trace] * count,
                strict=True,
            )
        )
        await connection.copy_records_to_table("koyojobs_jobs", records=records, columns=_COLUMNS)
        last: int = await connection.fetchval(QUERIES["copy_jobs_end"])
        if last - before == count:
            return list(range(before + 1, last + 1))
        rows = await connection.fetch(QUERIES["copy_jobs_ids"], before, last)
    ids = [row["id"] for row in rows]
    if len(ids) != count:  # never: every row of the COPY is in the range
        raise RuntimeError(f"bulk enqueue: {count} rows sent, {len(ids)} ids read back")
    return ids
