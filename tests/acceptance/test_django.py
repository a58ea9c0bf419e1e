"""The Django integration, in a real Django project (tests/django_project) on a database
of the throwaway cluster. Django runs in subprocesses of its own, so that its
settings never leak into the other tests."""

from __future__ import annotations

import asyncio
import pickle
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from koyojobs import Broker, Status
from koyojobs.sql import MIGRATIONS
from tests.acceptance.django_harness import (
    Process,
    configured,
    migrated,
    run,
    scenario,
)
from tests.conftest import wait_for_status


@pytest.fixture
async def django_db(dsn: str) -> str:
    """The test's database, with koyojobs' schema and then Django's."""
    return await migrated(dsn)


@pytest.fixture(params=[None, "django-key"], ids=["unsigned", "signed"])
def secret(request: pytest.FixtureRequest) -> str | None:
    """settings.KOYOJOBS["secret"] of the test project (None: unsigned)."""
    value: str | None = request.param
    return value


@pytest.fixture
def worker_process(django_db: str, secret: str | None) -> Iterator[Process]:
    # A 30 s poll: past its first claim round, the worker gets jobs in time only by NOTIFY.
    worker = Process(
        django_db,
        "manage.py",
        "koyojobs",
        "worker",
        "--poll-interval",
        "30",
        "--shutdown-grace",
        "2",
        secret=secret,
    )
    try:
        worker.wait_for("working")
        yield worker
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


async def test_a_view_enqueues_in_its_transaction_and_the_command_worker_runs_it(
    django_db: str, worker_process: Process, secret: str | None
) -> None:
    found = await asyncio.to_thread(scenario, django_db, "scenarios.py", "checkout", secret)
    async with Broker(django_db, secret=secret) as broker:
        await _check_checkout(found, broker, secret)
    worker_process.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker_process.process.wait, 30) == 0
    worker_process.wait_for("stopping gracefully")
    worker_process.wait_for("queues=default:4,emails:2")


async def test_the_command_runs_worker_processes_under_a_supervisor(django_db: str) -> None:
    # The checkout test above proves the jobs run; here, that `manage.py` starts the children.
    worker = Process(django_db, "manage.py", "koyojobs", "worker", "--processes", "2")
    try:
        # Each child is `manage.py koyojobs worker` again, on the project's settings.
        worker.wait_for("working", count=2)
        assert sum("worker process started" in line for line in worker.seen) == 2
        worker.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.process.wait, 30) == 0
        worker.wait_for("all worker processes stopped")
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


async def _check_checkout(found: dict[str, Any], broker: Broker, secret: str | None) -> None:
    assert found["committed"] == 201
    assert found["rolled_back"] == 500  # the view raised: order and job rolled back
    assert found["orders"] == ["ada@example.com"]
    job_id = found["body"]["receipt_job"]
    job = await wait_for_status(broker, job_id, Status.DONE, Status.FAILED, timeout=10)
    assert job.status is Status.DONE, job.last_error
    # The job read the row the view wrote in the same transaction.
    assert job.result == f"receipt for order {found['body']['order']} sent to ada@example.com"
    assert job.name == "docs.examples.django_shop.jobs.send_receipt"
    assert job.queue == "emails"
    assert await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs") == 1
    assert await broker.pool.fetchval("SELECT receipt_sent FROM django_shop_order") is True
    args = await broker.pool.fetchval("SELECT args FROM koyojobs_jobs")
    assert args.startswith(b"KJS2") is (secret is not None)  # signed with the settings' key


async def test_enqueue_many_joins_an_atomic_block_on_djangos_connection(
    django_db: str, broker: Broker
) -> None:
    found = await asyncio.to_thread(scenario, django_db, "scenarios.py", "many_in_atomic")
    stored = await broker.pool.fetch("SELECT id FROM koyojobs_jobs ORDER BY id")
    assert [r["id"] for r in stored] == found["ids"]
    assert len(found["ids"]) == 2  # the third, rolled back, never existed


async def test_the_synchronous_mode_runs_the_job_in_the_view(
    django_db: str, broker: Broker
) -> None:
    found = await asyncio.to_thread(scenario, django_db, "scenarios.py", "synchronous")
    assert found["status"] == 201
    assert found["body"]["receipt_job"] < 0  # the inline run's id: no row has it
    assert found["sent"] == [True]
    assert await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs") == 0


class _Trap:
    """Unpickled, it writes a file: proof that something loaded a payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.path, "unpickled"))


async def test_the_admin_lists_jobs_read_only_and_never_unpickles(
    django_db: str, tmp_path: Path
) -> None:
    trap = tmp_path / "trap"
    payload = pickle.dumps(_Trap(trap))
    conn = await asyncpg.connect(django_db)
    try:
        await conn.execute(
            "INSERT INTO koyojobs_jobs (name, queue, status, args, result, attempts, "
            "last_error, last_traceback, finished_at) VALUES "
            "('shop.failing', 'emails', 'failed', $1, NULL, 3, "
            "'ValueError: card declined', 'Traceback (most recent call last):\n  boom', now()), "
            "('shop.fine', 'default', 'done', $1, $1, 1, NULL, NULL, now())",
            payload,
        )
    finally:
        await conn.close()
    found = await asyncio.to_thread(scenario, django_db, "scenarios.py", "admin")
    assert found["list_status"] == 200
    assert "shop.failing" in found["list"] and "shop.fine" in found["list"]
    assert "ValueError: card declined" in found["list"]
    assert "shop.failing" in found["failed"] and "shop.fine" not in found["failed"]
    assert "shop.failing" in found["emails"] and "shop.fine" not in found["emails"]
    assert found["detail_status"] == 200
    assert "ValueError: card declined" in found["detail"]
    assert "Traceback (most recent call last):" in found["detail"]
    assert f'<div class="readonly">{len(payload)}</div>' in found["detail"]
    assert 'name="_save"' not in found["detail"]
    assert found["add_status"] == 403
    assert found["delete_status"] == 403
    assert found["post_status"] == 403
    assert not trap.exists()
    # The payloads never left the database: only their lengths were asked for.
    assert found["job_queries"]
    for sql in found["job_queries"]:
        for column in ('"koyojobs_jobs"."args"', '"koyojobs_jobs"."result"'):
            assert sql.count(column) == sql.count(f"LENGTH({column})"), sql
    # And the trap works: loading the payload would have sprung it.
    pickle.loads(payload)
    assert trap.exists()


async def test_the_command_migrates_shows_status_and_prunes_with_the_retention(
    empty_database: Any,
) -> None:
    dsn = await empty_database("django")
    applied = await asyncio.to_thread(run, dsn, "manage.py", "koyojobs", "migrate")
    assert applied.returncode == 0, applied.stderr
    every = [migration.version for migration in MIGRATIONS]
    assert applied.stdout.strip() == f"applied migrations: {every}"
    status = await asyncio.to_thread(run, dsn, "manage.py", "koyojobs", "status")
    assert (status.returncode, status.stdout.strip()) == (0, "no jobs\n\nno live workers"), (
        status.stderr
    )
    prune = await asyncio.to_thread(run, dsn, "manage.py", "koyojobs", "prune", "--dry-run")
    assert prune.returncode == 0, prune.stderr
    assert prune.stdout.startswith("would delete 0 finished jobs"), prune.stdout
    helped = await asyncio.to_thread(run, dsn, "manage.py", "koyojobs", "worker", "--help")
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: manage.py koyojobs worker [OPTIONS] [MODULES]...")
    # The shipped Django migrations match the models (no makemigrations to run).
    check = await asyncio.to_thread(run, dsn, "manage.py", "makemigrations", "--check", "--dry-run")
    assert check.returncode == 0, check.stdout + check.stderr
    wrong = await asyncio.to_thread(run, dsn, "manage.py", "koyojobs", "jobs", "--status", "x")
    assert wrong.returncode == 2
    assert "Invalid value for '--status'" in wrong.stderr


def test_a_malformed_setting_stops_the_project_at_start_in_one_line() -> None:
    result = configured({"queue": ["default"]}, "")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "django.core.exceptions.ImproperlyConfigured: settings.KOYOJOBS: unknown key 'queue' "
        "(known: database, modules, queues, secret, retention, processes)"
    )


def test_a_project_on_another_database_starts_and_its_connection_is_refused() -> None:
    result = configured(
        None,
        "from django.db import connection\n"
        "from koyojobs.sync import enqueue\n"
        "from tests.jobs import echo\n"
        "try:\n"
        "    enqueue(echo(1), connection=connection)\n"
        "except TypeError as exc:\n"
        "    print(exc)\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "koyojobs needs a Django connection to PostgreSQL, got one to sqlite (alias 'default')"
    )


def test_the_workers_of_the_command_keep_finished_jobs_as_the_retention_says() -> None:
    # A PostgreSQL entry, never connected to: the command only builds its DSN.
    result = configured(
        {"retention": 3600},
        "from koyojobs.contrib.django.management.commands.koyojobs import _prepare\n"
        "print(sorted(_prepare(['worker'])[1].retention.items()))\n",
        database={"ENGINE": "django.db.backends.postgresql", "NAME": "app", "HOST": "127.0.0.1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "[('cancelled', '3600s'), ('done', '3600s'), ('failed', '3600s')]"
    )
