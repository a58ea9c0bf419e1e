"""Per-minute counts for the dashboard's charts, rolled up by the workers.

Jobs finished and failed per queue and minute, and the time they waited
(due to start), go to ``koyojobs_minutes`` a minute after the minute ends:
a chart of a day then reads 1,440 rows per queue, however many jobs the
table holds. The workers' heartbeats (:mod:`koyojobs.heartbeat`) call
:func:`roll_up` about once a minute; one process at a time rolls (the
others find the row locked and leave it), at most an hour per call.

A job whose outcome commits more than a minute after its ``finished_at`` is
missed by the rollup (its minute was rolled already); the minutes that are
not rolled yet are read from the jobs table itself (:mod:`koyojobs.charts`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .sql import QUERIES

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["roll_up"]


async def roll_up(broker: Broker, deadline: float | None = None) -> bool:
    """Roll the minutes that ended since the last rollup (an hour at most); whether it did.

    Nothing without 0006's index of finished rows (it would read the table).
    Past ``deadline`` seconds the connection is closed, not given back (a
    dropped network path would hang its next user too), and ``TimeoutError``
    is raised.

    Example:
        >>> while await roll_up(broker):  # doctest: +SKIP
        ...     pass
    """
    conn = await broker.pool.acquire()
    try:
        async with asyncio.timeout(deadline), conn.transaction():
            if not await conn.fetchval(QUERIES["dashboard_indexed"]):
                return False
            span = await conn.fetchrow(QUERIES["rollup_claim"])
            if span is None or span["hi"] <= span["lo"]:
                return False
            await conn.execute(QUERIES["rollup_minutes"], span["lo"], span["hi"])
            await conn.execute(QUERIES["rollup_done"], span["hi"])
        return True
    except TimeoutError:
        conn.terminate()
        raise
    finally:
        await broker.pool.release(conn)
