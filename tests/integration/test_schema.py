"""Migrations: created on start, idempotent, once under concurrent starts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from koyojobs import Broker, Database
from koyojobs.sql import MIGRATIONS
from tests.conftest import Server

EmptyDatabase = Callable[[str], Awaitable[str]]


async def test_concurrent_starts_migrate_once(empty_database: EmptyDatabase) -> None:
    dsn = await empty_database("migrate_race")
    brokers = [Broker(dsn) for _ in range(4)]
    await asyncio.gather(*(b.start() for b in brokers))
    try:
        rows = await brokers[0].pool.fetch("SELECT version FROM koyojobs_migrations")
        assert sorted(r["version"] for r in rows) == [m.version for m in MIGRATIONS]
    finally:
        await asyncio.gather(*(b.stop() for b in brokers))
    async with Broker(dsn) as again:  # and once more, idempotently
        assert await again.pool.fetchval("SELECT count(*) FROM koyojobs_migrations") == len(
            MIGRATIONS
        )


async def test_migrate_false_leaves_the_database_alone(empty_database: EmptyDatabase) -> None:
    dsn = await empty_database("no_migrate")
    async with Database(dsn) as db, Broker(db, migrate=False) as broker:
        assert await broker.pool.fetchval("SELECT to_regclass('koyojobs_jobs')") is None


async def test_a_broker_needs_its_database_started(dsn: str) -> None:
    import pytest

    with pytest.raises(RuntimeError, match="start the Database before the Broker"):
        await Broker(Database(dsn)).start()
    with pytest.raises(TypeError, match="Database or a DSN"):
        Broker(42)  # type: ignore[arg-type]


async def test_listen_dsn_opens_the_listen_connection_there(dsn: str) -> None:
    listen_dsn = dsn + "?application_name=koyojobs_direct"
    async with Broker(dsn, listen_dsn=listen_dsn) as broker:
        await broker.subscribe("default", lambda: None)
        assert broker.listener is not None
        name = await broker.pool.fetchval(
            "SELECT application_name FROM pg_stat_activity WHERE pid = $1",
            broker.listener.backend_pid,
        )
    assert name == "koyojobs_direct"


async def test_statement_cache_can_be_turned_off_for_poolers(dsn: str) -> None:
    from tests import jobs

    async def named_statements(statement_cache_size: int) -> int:
        async with Database(dsn, statement_cache_size=statement_cache_size, max_size=1) as db:
            broker = Broker(db)
            await broker.start()
            async with db.pool.acquire() as conn:
                await broker.enqueue(jobs.echo(1), connection=conn)
                count: int = await conn.fetchval("SELECT count(*) FROM pg_prepared_statements")
            await broker.stop()
            return count

    # PgBouncer in transaction mode cannot keep named prepared statements.
    assert await named_statements(100) > 0
    assert await named_statements(0) == 0


async def test_a_released_connection_does_not_keep_an_open_transaction(dsn: str) -> None:
    async with Database(dsn, min_size=1, max_size=1) as db:
        async with db.pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TABLE left_open (x int)")
        async with db.pool.acquire() as conn:  # the same, single connection
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('left_open')") is None


async def test_ping_checks_the_pool_and_the_listen_connection(
    dsn: str, pg_server: Server, empty_database: EmptyDatabase
) -> None:
    import pytest

    listen_dsn = await empty_database("listen_only")
    async with Broker(dsn, listen_dsn=listen_dsn) as broker:
        await broker.ping()
        await broker.subscribe("default", lambda: None)
        await broker.ping()
        # The LISTEN connection's database goes away: it cannot come back.
        admin = await asyncpg.connect(pg_server.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE "{listen_dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
        finally:
            await admin.close()
        assert broker.listener is not None
        deadline = asyncio.get_running_loop().time() + 10
        while broker.listener.connected:
            assert asyncio.get_running_loop().time() < deadline, "loss never noticed"
            await asyncio.sleep(0.01)
        with pytest.raises(ConnectionError, match="LISTEN connection is down"):
            await broker.ping()
