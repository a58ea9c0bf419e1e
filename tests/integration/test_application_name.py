"""Every connection koyojobs opens names its role in ``application_name``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from koyojobs import Broker, Database, Status
from tests import jobs
from tests.conftest import wait_for_status
from tests.integration.conftest import StartWorker

_NAMES = """
SELECT application_name, count(*)::int AS n
  FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid()
 GROUP BY application_name
"""


@pytest.fixture
async def watcher(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "test-watcher"})
    try:
        yield conn
    finally:
        await conn.close()


async def _names(conn: asyncpg.Connection) -> dict[str, int]:
    return {row["application_name"]: row["n"] for row in await conn.fetch(_NAMES)}


async def test_pool_worker_and_listen_connections_are_named(
    broker: Broker, start_worker: StartWorker, watcher: asyncpg.Connection
) -> None:
    worker = await start_worker(pool_size=2)
    job_id = await jobs.echo(1)
    assert job_id is not None
    await wait_for_status(broker, job_id, Status.DONE)
    names = await _names(watcher)
    assert names.get("koyojobs-pool", 0) >= 1, names
    assert names.get("koyojobs-worker") == 1, names  # one claim loop below 16 slots
    assert names.get("koyojobs-listen") == 1, names
    assert set(names) <= {"koyojobs-pool", "koyojobs-worker", "koyojobs-listen"}, names
    assert worker.running == 0


async def test_the_vacuum_connection_is_named(
    dsn: str, start_worker: StartWorker, broker: Broker, watcher: asyncpg.Connection
) -> None:
    # A throttled VACUUM lasts long enough to be seen in pg_stat_activity.
    await watcher.execute(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET vacuum_cost_delay = 100', "
        "current_database()); EXECUTE format('ALTER DATABASE %I SET vacuum_cost_limit = 1', "
        "current_database()); END $$"
    )
    ids = await broker.enqueue_many([jobs.echo(i) for i in range(300)])
    assert ids is not None
    await start_worker(pool_size=8, poll_interval=0.1, vacuum_threshold=200)
    deadline = time.monotonic() + 30
    while "koyojobs-vacuum" not in await _names(watcher):
        assert time.monotonic() < deadline, "no connection named koyojobs-vacuum appeared"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("where", ["dsn", "server_settings"])
async def test_an_application_name_of_your_own_wins(
    dsn: str, where: str, watcher: asyncpg.Connection
) -> None:
    if where == "dsn":
        db = Database(f"{dsn}?application_name=mine")
    else:
        db = Database(dsn, server_settings={"application_name": "mine"})
    async with db:
        await db.pool.fetchval("SELECT 1")
        conn = await db.connect(role="koyojobs-worker")
        try:
            assert await conn.fetchval("SHOW application_name") == "mine"
        finally:
            await conn.close()
        assert await db.pool.fetchval("SHOW application_name") == "mine"
        assert "koyojobs-pool" not in await _names(watcher)


async def test_other_server_settings_keep_the_role_name(dsn: str) -> None:
    async with Database(dsn, server_settings={"search_path": "public"}) as db:
        assert await db.pool.fetchval("SHOW application_name") == "koyojobs-pool"
        assert await db.pool.fetchval("SHOW search_path") == "public"
