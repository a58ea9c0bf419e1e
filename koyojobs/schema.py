"""Creating and upgrading the schema: numbered migrations, applied once."""

from __future__ import annotations

import logging

import asyncpg

from .errors import SchemaError
from .sql import MIGRATIONS, QUERIES

__all__ = ["migrate", "require_schema"]

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


async def require_schema(pool: asyncpg.Pool) -> None:
    """Raise :class:`SchemaError` unless every migration this koyojobs knows is applied.

    For uses that must not change the schema (the read-only commands, the
    dashboard): reads the migrations table, creates nothing.
    """
    async with pool.acquire() as conn:
        if not await conn.fetchval(QUERIES["migrations_table_exists"]):
            raise SchemaError("the koyojobs schema is not in this database: run koyojobs migrate")
        version: int | None = await conn.fetchval(QUERIES["schema_version"])
    latest = MIGRATIONS[-1].version
    if version is None or version < latest:
        raise SchemaError(
            f"the koyojobs schema is at migration {version or 0} and this koyojobs needs "
            f"{latest}: run koyojobs migrate"
        )
