"""Leases without a database: a renewal that fails once the lease may have lapsed."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest

from koyojobs.leases import Leases, Run
from koyojobs.testing import _free_port


class _StallOnRenewalFailure(logging.Handler):
    """Holds the event loop where a failed renewal is logged, until ``until``
    (monotonic): as a busy loop (threads holding the GIL, a slow log) would."""

    def __init__(self) -> None:
        super().__init__()
        self.until = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("lease renewal failed"):
            time.sleep(max(0.0, self.until - time.monotonic()))  # the stall under test


@pytest.mark.timeout(30)
async def test_a_renewal_failing_past_the_deadline_of_a_def_jobs_thread_ends_the_process() -> None:
    # The renewal, not the lapse timer, is the first to see that the lease may
    # have lapsed: it must do what the timer does for a thread it cannot stop.
    refused = f"postgresql://postgres@127.0.0.1:{_free_port()}/none"

    async def fetch(*args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(refused, timeout=2)  # nothing listens there
        await conn.close()
        return []

    release = threading.Event()
    lease = 0.6
    runs: dict[int, Run] = {}
    lost: list[int] = []
    stall = _StallOnRenewalFailure()
    logger = logging.getLogger("koyojobs.worker")
    logger.addHandler(stall)
    with ThreadPoolExecutor(1) as pool:
        thread = pool.submit(release.wait, 20)
        try:

            async def running() -> None:
                await asyncio.wrap_future(thread)

            task = asyncio.create_task(running())
            deadline = time.monotonic() + lease
            run = Run(task, deadline, begun=True, threads=[thread])
            runs[7] = run
            leases = Leases(lease, runs, fetch, "owner", on_lost_thread=lost.append)
            stall.until = deadline + 0.05
            leases.hold(7, 1, deadline)
            leases.start("default")
            await asyncio.wait([task], timeout=5)  # stopped, at the deadline or after it
            await leases.stop()
        finally:
            release.set()
            logger.removeHandler(stall)
    assert run.cancelled
    assert lost == [7], "the thread runs on while the lease lapses: the process must end"
