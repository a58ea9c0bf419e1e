"""Workers VACUUM the jobs table once dead rows pile up, and only when they may."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from koyojobs import Broker, Database, Status, Worker
from tests import jobs
from tests.conftest import wait_for_status
from tests.integration.conftest import StartWorker

_VACUUMS = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'koyojobs_jobs'"


async def _until_vacuumed(broker: Broker, timeout: float = 30.0) -> None:
    # The statistics reach pg_stat_user_tables a second or so after the
    # worker's statements, and the worker looks every poll_interval.
    deadline = time.monotonic() + timeout
    while not await broker.pool.fetchval(_VACUUMS):
        assert time.monotonic() < deadline, "the jobs table was not vacuumed in time"
        await asyncio.sleep(0.05)


async def test_a_worker_vacuums_the_table_past_the_threshold(
    broker: Broker, start_worker: StartWorker
) -> None:
    assert await broker.pool.fetchval(_VACUUMS) == 0
    ids = await broker.enqueue_many([jobs.echo(i) for i in range(300)])
    assert ids is not None
    await start_worker(pool_size=8, poll_interval=0.1, vacuum_threshold=200)
    for job_id in ids:
        await wait_for_status(broker, job_id, Status.DONE)
    await _until_vacuumed(broker)  # vacuum_count counts VACUUMs run by hand, not autovacuum's


@pytest.mark.parametrize("threshold", [0, -1, 1.5, True, "100"])
def test_vacuum_threshold_must_be_a_positive_int_or_none(broker: Broker, threshold: object) -> None:
    with pytest.raises(ValueError, match="vacuum_threshold"):
        Worker(broker, vacuum_threshold=threshold)  # type: ignore[arg-type]


@pytest.fixture
async def app_role(dsn: str) -> AsyncIterator[str]:
    """A role that may read and write the jobs table but not own (nor MAINTAIN) it."""
    role = f"koyojobs_app_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE ROLE "{role}"')  # generated name
        await admin.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'
        )
        await admin.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    finally:
        await admin.close()
    yield role
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
    finally:
        await admin.close()


async def test_a_role_that_may_not_vacuum_says_so_once_and_works_on(
    dsn: str, app_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="koyojobs")

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "koyojobs.maintenance"]

    # SET ROLE at connect: the same server and credentials, another role's rights.
    database = Database(dsn, server_settings={"role": app_role})
    async with database, Broker(database, migrate=False) as broker:
        first = await broker.enqueue_many([jobs.echo(i) for i in range(300)])
        assert first is not None
        async with Worker(broker, poll_interval=0.1, lease=2.0, vacuum_threshold=100):
            for job_id in first:
                await wait_for_status(broker, job_id, Status.DONE)
            deadline = time.monotonic() + 30
            while not said():
                assert time.monotonic() < deadline, "no warning about the missing right"
                await asyncio.sleep(0.05)
            more = await broker.enqueue_many([jobs.echo(i) for i in range(300)])
            assert more is not None
            for job_id in more:
                await wait_for_status(broker, job_id, Status.DONE)
        assert await broker.pool.fetchval(_VACUUMS) == 0
    assert said() == ["cannot vacuum the jobs table: this role may not; leaving it to autovacuum"]
