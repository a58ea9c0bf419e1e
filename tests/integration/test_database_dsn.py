"""A DSN that carries statement_cache_size, as a pooled deployment writes it."""

from __future__ import annotations

from koyojobs import Broker, Database


async def test_statement_cache_size_in_the_dsn_is_applied(dsn: str) -> None:
    # asyncpg sent it to the server as a setting: 'unrecognized configuration parameter'.
    async with Database(f"{dsn}?statement_cache_size=0", max_size=1) as db, Broker(db) as broker:
        async with db.pool.acquire() as conn:
            assert await conn.fetchval("SELECT $1::int", 7) == 7
            assert await conn.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
        await broker.ping()
