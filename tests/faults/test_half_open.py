"""Half-open connections: the path to the database drops packets without closing.

Everything a worker waits on (its claim loop's connection, the pool that
renews leases, the LISTEN connection) goes through a proxy that, at one
moment, silently drops all traffic of the connections open then. New
connections get through, as when a NAT entry or a firewall's state is lost.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from koyojobs import Broker, Database, Status, Worker
from tests.conftest import wait_for_status
from tests.faults import jobs
from tests.faults.conftest import until
from tests.proxy import BlackholeProxy


@pytest.fixture
async def proxy(dsn: str) -> AsyncIterator[BlackholeProxy]:
    proxy = BlackholeProxy(dsn)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.fixture
def worker_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="koyojobs")
    return caplog


@pytest.mark.timeout(90)
async def test_a_blackholed_path_stalls_no_worker_it_reconnects_and_says_so(
    broker: Broker, proxy: BlackholeProxy, worker_log: pytest.LogCaptureFixture
) -> None:
    # broker (the fixture) writes and reads directly; the worker's broker
    # goes through the proxy for everything.
    async with (
        Database(proxy.dsn) as db,
        Broker(db, migrate=False) as through_proxy,
        # lease 6 s: round trips are bounded at 2 s, renewals come every 2 s.
        Worker(through_proxy, pool_size=2, lease=6.0, poll_interval=1.0) as worker,
    ):
        assert worker.deadline == 2.0
        first = await jobs.quick(1)
        await wait_for_status(broker, first, Status.DONE, timeout=10)
        assert proxy.blackhole() >= 3  # the pool, the claim loop, the LISTEN connection

        # Before the fix, the next claim sent on the dead path waited for TCP
        # to give up (minutes): nothing ran, and nothing was logged.
        second = await jobs.quick(2)
        job = await wait_for_status(broker, second, Status.DONE, timeout=30)
        assert job.result == 2

        # A job that runs while its renewals go through the dead pool
        # connection: a renewal gives up at the deadline, the next one goes
        # through a new connection, and the job finishes once.
        proxy.blackhole()
        third = await jobs.work(3.0)
        job = await wait_for_status(broker, third, Status.DONE, timeout=40)
        assert job.attempts == 1, job

        listener = through_proxy.listener
        assert listener is not None
        await until(lambda: listener.reconnects >= 1, timeout=30, what="LISTEN reconnected")

    warnings = [
        # The cause of connection trouble is on the line (cause=), not in a traceback.
        f"{r.getMessage()} {getattr(r, 'cause', '')} {getattr(r, 'exc_text', '')}"
        for r in worker_log.records
        if r.levelno == logging.WARNING
    ]
    claim_failures = [m for m in warnings if "claim failed" in m]
    assert claim_failures, warnings
    assert any("did not answer within 2s" in m for m in claim_failures), claim_failures
    assert any("claiming again" in m for m in warnings), warnings
