"""Creating and upgrading the schema: numbered migrations, applied once."""

from __future__ import annotations

import logging
from typing import Any

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
        applied = {row["version"] for row in await conn.fetch(QUERIES["applied_migrations"])}
    missing = [m.version for m in MIGRATIONS if m.version not in applied]
    if missing:
        raise SchemaError(
            f"the koyojobs schema lacks migration {missing[0]}"
            f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''} that this koyojobs "
            "needs: run koyojobs migrate"
        )


_INDEXES = (
    ("koyojobs_jobs_finished_queue_idx", "finished_queue_idx"),
    ("koyojobs_jobs_failed_idx", "failed_idx"),
    ("koyojobs_jobs_finished_filter_idx", "finished_filter_idx"),
    ("koyojobs_jobs_ready_filter_idx", "ready_filter_idx"),
)
"""The dashboard's and console's indexes that migrations 0006 and 0009 skip on a big table."""

UNIQUE_INDEX = "koyojobs_jobs_unique_held_idx"
"""Migration 0011's unique index (pending workflow steps hold their keys too)."""


async def build_indexes(pool: asyncpg.Pool) -> list[str]:
    """Build, without blocking writes, the indexes a migration left out; returns their names.

    ``CREATE INDEX CONCURRENTLY`` outside any transaction (each takes as long
    as reading the table, while enqueues, claims and outcomes go on). An
    index a failed build left invalid is dropped and built again.
    """
    built = []
    async with pool.acquire() as conn:
        for index, block in _INDEXES:
            valid = await conn.fetchval(QUERIES["index_state"], index)
            if valid:
                continue
            if valid is False:
                await conn.execute(QUERIES[f"drop_{block}"])
            log.info("building index concurrently", extra={"index": index})
            await conn.execute(QUERIES[f"build_{block}"])
            built.append(index)
        built += await _replace_unique_index(conn)
    return built


async def _replace_unique_index(conn: Any) -> list[str]:
    # Migration 0011 on a big table: its unique index (pending rows too) is
    # built first, and only once it is valid is 0005's dropped, so the table
    # always has a unique index over the keys.
    built = []
    valid = await conn.fetchval(QUERIES["index_state"], UNIQUE_INDEX)
    if not valid:
        if valid is False:
            await conn.execute(QUERIES["drop_unique_held_idx"])
        log.info("building index concurrently", extra={"index": UNIQUE_INDEX})
        await conn.execute(QUERIES["build_unique_held_idx"])
        built.append(UNIQUE_INDEX)
    if await conn.fetchval(QUERIES["index_state"], "koyojobs_jobs_unique_idx") is not None:
        await conn.execute(QUERIES["drop_unique_idx"])
    return built
