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

import asyncpg

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
    # Past the deadline the connection is terminated from a timer, not cancelled
    # from inside: a cancelled statement in a transaction makes asyncpg wait for
    # the server's answer to the cancel and to the ROLLBACK, which a dropped
    # network path never sends (a worker's stop hung on it for good).
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        conn.terminate()

    timer = asyncio.get_running_loop().call_later(deadline, expire) if deadline else None
    try:
        async with conn.transaction():
            if not await conn.fetchval(QUERIES["dashboard_indexed"]):
                return False
            span = await conn.fetchrow(QUERIES["rollup_claim"])
            if span is None or span["hi"] <= span["lo"]:
                return False
            await conn.execute(QUERIES["rollup_minutes"], span["lo"], span["hi"])
            await conn.execute(QUERIES["rollup_done"], span["hi"])
        return True
    except (asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
        if expired:
            raise TimeoutError(f"the database did not answer within {deadline:g}s") from exc
        raise
    finally:
        if timer is not None:
            timer.cancel()
        await broker.pool.release(conn)
