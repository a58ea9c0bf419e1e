"""A claim loop that holds more runs than its slots and its pace allow asks for none."""

from __future__ import annotations

import asyncio
import time

from koyojobs import Broker, Worker
from koyojobs.leases import Run
from koyojobs.outcomes import as_columns
from koyojobs.sql import QUERIES


async def test_a_claim_loop_holding_more_runs_than_it_may_claims_none(broker: Broker) -> None:
    # Claimed ahead when the pace allowed more (or a stale run beside its new
    # one): three runs in a loop of two slots, nothing ahead now.
    worker = Worker(broker, pool_size=2)
    lane = worker._lanes[0]
    assert lane.pool_size == 2 and lane.pace.ahead == 0
    tasks = [asyncio.create_task(asyncio.sleep(30)) for _ in range(3)]
    try:
        for job_id, task in enumerate(tasks, 1):
            lane._runs[job_id] = Run(task, time.monotonic() + 30)
        assert lane.free == 0
        # What the loop sends when outcomes wait to be written: a negative
        # LIMIT was refused as bad data, and those outcomes stored as failed.
        rows = await broker.pool.fetch(
            QUERIES["finish_and_claim"], "default", lane.free, 30.0, "w", *as_columns([])
        )
        assert rows == []
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
