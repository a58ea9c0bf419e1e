"""Automatic retention: workers delete old finished jobs, in small batches, one at a time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from koyojobs import Broker, Status, Worker
from koyojobs.retention import DEFAULT_RETENTION, resolve_retention
from tests.faults.conftest import until

_ROWS = """
INSERT INTO koyojobs_jobs (name, queue, args, status, finished_at)
SELECT 'tests.retention.old', 'retention-test', '\\x00'::bytea, $1, now() - $2::text::interval
  FROM generate_series(1, $3)
"""

_COUNTS = """
SELECT status, finished_at > now() - interval '1 hour 30 minutes' AS young, count(*)::int AS n
  FROM koyojobs_jobs GROUP BY 1, 2
"""


async def _add(broker: Broker, status: str, age: str, n: int) -> None:
    await broker.pool.execute(_ROWS, status, age, n)


async def _counts(broker: Broker) -> dict[tuple[str, bool], int]:
    return {(r["status"], r["young"]): r["n"] for r in await broker.pool.fetch(_COUNTS)}


@pytest.fixture
async def custom(dsn: str) -> AsyncIterator[Broker]:
    async with Broker(dsn, retention={"done": timedelta(hours=1), "failed": None}) as b:
        yield b


async def _fill(broker: Broker) -> None:
    await _add(broker, "done", "2 hours", 2500)  # expired
    await _add(broker, "done", "30 minutes", 5)
    await _add(broker, "failed", "30 days", 3)  # kept for good
    await _add(broker, "cancelled", "8 days", 4)  # expired (the default: 7 days)
    await _add(broker, "cancelled", "6 days", 2)
    # Never finished, whatever finished_at says (a retried job keeps none, but
    # a row may say anything).
    await _add(broker, "ready", "30 days", 2)
    await _add(broker, "running", "30 days", 2)


_LEFT = {
    ("done", True): 5,
    ("failed", False): 3,
    ("cancelled", False): 2,
    ("ready", False): 2,
    ("running", False): 2,
}


async def test_prune_expired_deletes_by_status_in_bounded_batches(custom: Broker) -> None:
    await _fill(custom)
    assert [await custom.prune_expired(1000) for _ in range(4)] == [1000, 1000, 504, 0]
    assert await _counts(custom) == _LEFT


async def test_one_pruner_at_a_time_across_processes(custom: Broker, dsn: str) -> None:
    await _add(custom, "done", "2 hours", 10)
    other = await asyncpg.connect(dsn)
    try:
        async with other.transaction():
            # Another process's pruning statement, caught mid-way.
            await other.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('koyojobs.retention', 0))"
            )
            assert await custom.prune_expired(1000) == 0
        assert await custom.prune_expired(1000) == 10
    finally:
        await other.close()


async def test_rows_another_transaction_holds_are_skipped(custom: Broker, dsn: str) -> None:
    await _add(custom, "done", "2 hours", 10)
    other = await asyncpg.connect(dsn)
    try:
        async with other.transaction():
            held = await other.fetchval(
                "SELECT id FROM koyojobs_jobs ORDER BY id LIMIT 1 FOR UPDATE"
            )
            assert await custom.prune_expired(1000) == 9  # not waiting for the held row
        assert await custom.prune_expired(1000) == 1
        assert await custom.get_job(held) is None
    finally:
        await other.close()


async def test_a_running_worker_prunes_by_itself(custom: Broker) -> None:
    await _fill(custom)
    async with Worker(custom, poll_interval=0.5, lease=2.0, shutdown_grace=1.0):
        await until(
            lambda: _pruned_to(custom, _LEFT), what="the worker pruning expired jobs", timeout=20
        )


async def _pruned_to(broker: Broker, expected: dict[tuple[str, bool], int]) -> bool:
    return await _counts(broker) == expected


async def test_the_defaults_keep_failed_jobs_a_week(broker: Broker) -> None:
    assert broker.retention == DEFAULT_RETENTION
    await _add(broker, "done", "2 days", 3)
    await _add(broker, "failed", "2 days", 3)
    await _add(broker, "failed", "8 days", 3)
    assert await broker.prune_expired() == 6
    assert await _counts(broker) == {("failed", False): 3}


async def test_keeping_everything_starts_no_pruner(dsn: str) -> None:
    keep: dict[str, Any] = {"done": None, "failed": None, "cancelled": None}
    async with Broker(dsn, retention=keep) as b:
        await _add(b, "done", "30 days", 3)
        assert await b.prune_expired() == 0
        async with Worker(b, poll_interval=0.5) as worker:
            assert worker._pruner is not None and worker._pruner._task is None


async def test_pruning_and_the_workers_vacuum_go_together(
    custom: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    await _add(custom, "done", "2 hours", 3000)
    vacuums = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'koyojobs_jobs'"
    with caplog.at_level(logging.INFO, logger="koyojobs"):
        async with Worker(custom, poll_interval=0.1, vacuum_threshold=500):
            await until(
                lambda: _pruned_to(custom, {}), what="pruning 3000 expired jobs", timeout=30
            )
            await until(lambda: custom.pool.fetchval(vacuums), what="a VACUUM", timeout=30)
    troubles = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name in ("koyojobs.retention", "koyojobs.maintenance")
    ]
    assert not troubles, caplog.text
    assert any(r.getMessage() == "pruned finished jobs" for r in caplog.records)


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ({"ready": None}, r"Broker retention: 'ready' is not a finished status"),
        ({"finished": timedelta(1)}, r"Broker retention: 'finished' is not a finished status"),
        ({"done": 3600}, r"Broker retention\['done'\] must be a timedelta >= 0 or None"),
        ({"failed": timedelta(-1)}, r"Broker retention\['failed'\] must be a timedelta"),
        ({"done": "1h"}, r"Broker retention\['done'\] must be a timedelta"),
        ([("done", None)], r"Broker retention must be a dict"),
    ],
)
def test_bad_retention_is_a_one_line_error(retention: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        Broker("postgresql://localhost/x", retention=retention)
    assert "\n" not in str(caught.value)


def test_statuses_may_be_given_as_status_members() -> None:
    resolved = resolve_retention({Status.DONE: timedelta(minutes=5)})
    assert resolved[Status.DONE] == timedelta(minutes=5)
    assert resolved[Status.FAILED] == timedelta(days=7)
