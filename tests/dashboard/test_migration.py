"""Migration 0006_dashboard: its indexes built on a small table, left out on a big one."""

from __future__ import annotations

from koyojobs import Broker
from koyojobs.schema import migrate
from koyojobs.sql import MIGRATIONS, QUERIES

INDEXES = ["koyojobs_jobs_failed_idx", "koyojobs_jobs_finished_queue_idx"]


async def indexes(broker: Broker) -> list[str]:
    rows = await broker.pool.fetch(
        "SELECT indexname FROM pg_indexes WHERE indexname = ANY($1::text[]) ORDER BY 1", INDEXES
    )
    return [row[0] for row in rows]


async def rerun_0006_over(broker: Broker, rows: int) -> None:
    """0006 applied again, as an upgrade would, on a table of ``rows`` jobs."""
    for name in INDEXES:
        await broker.pool.execute(f"DROP INDEX IF EXISTS {name}")
    await broker.pool.execute("DELETE FROM koyojobs_migrations WHERE version = 6")
    await broker.pool.execute("TRUNCATE koyojobs_jobs")
    await broker.pool.execute(
        "INSERT INTO koyojobs_jobs (name, queue, args) "
        "SELECT 'n', 'q', '\\x00' FROM generate_series(1, $1)",
        rows,
    )
    assert await migrate(broker.pool) == [6]


async def test_0006_indexes_a_small_table_and_leaves_a_big_one_alone(broker: Broker) -> None:
    assert await indexes(broker) == INDEXES  # the template was migrated empty
    assert await broker.pool.fetchval(QUERIES["dashboard_indexed"]) is True

    await rerun_0006_over(broker, 100_000)
    assert await indexes(broker) == INDEXES

    await rerun_0006_over(broker, 100_001)
    assert await indexes(broker) == []
    assert await broker.pool.fetchval(QUERIES["dashboard_indexed"]) is False
    latest = await broker.pool.fetchval("SELECT max(version) FROM koyojobs_migrations")
    assert latest == MIGRATIONS[-1].version  # the later ones stay applied


async def test_migrate_builds_the_indexes_a_big_table_left_out_concurrently(
    broker: Broker,
) -> None:
    import asyncio

    from koyojobs.schema import build_indexes
    from tests.acceptance.test_cli import koyojobs

    console = ["koyojobs_jobs_finished_filter_idx", "koyojobs_jobs_ready_filter_idx"]
    for name in [*INDEXES, *console]:
        await broker.pool.execute(f"DROP INDEX {name}")
    assert await broker.pool.fetchval(QUERIES["console_indexed"]) is False
    dsn = broker.database.dsn
    result = await asyncio.to_thread(koyojobs, "migrate", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "schema is up to date",
        "built index koyojobs_jobs_finished_queue_idx (concurrently)",
        "built index koyojobs_jobs_failed_idx (concurrently)",
        "built index koyojobs_jobs_finished_filter_idx (concurrently)",
        "built index koyojobs_jobs_ready_filter_idx (concurrently)",
    ]
    assert await broker.pool.fetchval(QUERIES["console_indexed"]) is True
    # An invalid index (a build that failed half way) is dropped and built again.
    await broker.pool.execute(
        "UPDATE pg_index SET indisvalid = false "
        "WHERE indexrelid = 'koyojobs_jobs_ready_filter_idx'::regclass"
    )
    assert await build_indexes(broker.pool) == ["koyojobs_jobs_ready_filter_idx"]
    assert await build_indexes(broker.pool) == []


async def test_0009_leaves_a_big_table_unindexed_and_adds_its_tables(broker: Broker) -> None:
    await broker.pool.execute(
        "DROP INDEX koyojobs_jobs_finished_filter_idx, koyojobs_jobs_ready_filter_idx; "
        "DROP TABLE koyojobs_workers, koyojobs_minutes, koyojobs_rollup; "
        "DELETE FROM koyojobs_migrations WHERE version = 9"
    )
    await broker.pool.execute(
        "INSERT INTO koyojobs_jobs (name, queue, args) "
        "SELECT 'n', 'q', '\\x00' FROM generate_series(1, 100001)"
    )
    assert await migrate(broker.pool) == [9]
    assert await broker.pool.fetchval(QUERIES["console_indexed"]) is False
    tables = await broker.pool.fetchval(
        "SELECT count(*) FROM pg_tables WHERE tablename = ANY($1::text[])",
        ["koyojobs_workers", "koyojobs_minutes", "koyojobs_rollup"],
    )
    assert tables == 3
