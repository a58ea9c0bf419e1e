"""Creating and upgrading the schema: numbered migrations, applied once."""

from __future__ import annotations

import logging

import asyncpg

from .sql import MIGRATIONS, QUERIES

__all__ = ["migrate"]

log = logging.getLogger("koyojobs.schema")


async def migrate(pool: asyncpg.Pool) -> list[int]:
    """Apply the migrations the database lacks; returns the versions applied.

    Runs in one transaction under an advisory lock, so processes starting
    together migrate once and a failed step leaves the schema as it was.
    """
    applied: list[int] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(QUERIES["migration_lock"])
        await conn.execute(QUERIES["create_migrations_table"])
        done = {row["version"] for row in await conn.fetch(QUERIES["applied_migrations"])}
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(QUERIES["record_migration"], migration.version, migration.name)
            applied.append(migration.version)
            log.info(
                "applied migration",
                extra={"version": migration.version, "migration": migration.name},
            )
    return applied
