"""The Django integration, in a real Django project (tests/django_project) on a database
of the throwaway cluster. Django runs in subprocesses of its own, so that its
settings never leak into the other tests."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from koyojobs import Broker, Status
from koyojobs.sql import MIGRATIONS
from tests.conftest import wait_for_status

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "tests" / "django_project"


def _environment(dsn: str, secret: str | None = None) -> dict[str, str]:
    parts = urlsplit(dsn)
    return {
        **({"DJANGO_TEST_SECRET": secret} if secret else {}),
        **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "KOYOJOBS_"))},
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(PROJECT)]),
        "DJANGO_SETTINGS_MODULE": "djproject.settings",
        "PGHOST": parts.hostname or "",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": parts.username or "",
        "PGDATABASE": parts.path.lstrip("/"),
    }


def _run(dsn: str, *arguments: str, secret: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=PROJECT,
        env=_environment(dsn, secret),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _scenario(dsn: str, name: str, secret: str | None = None) -> dict[str, Any]:
    result = _run(dsn, "scenarios.py", name, secret=secret)
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


@pytest.fixture
async def django_db(dsn: str) -> str:
    """The test's database, with koyojobs' schema and then Django's."""
    result = await asyncio.to_thread(_run, dsn, "manage.py", "migrate", "--no-input")
    assert result.returncode == 0, result.stderr
    return dsn


class _Process:
    """A subprocess whose stderr lines are read as they come."""

    def __init__(self, dsn: str, *arguments: str, secret: str | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *arguments],
            cwd=PROJECT,
            env=_environment(dsn, secret),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} from the process:\n{''.join(self.seen)}"
            try:
                self.seen.append(self.lines.get(timeout=min(left, 0.5)))
            except queue.Empty:
                exited = self.process.poll() is not None and self.lines.empty()
                assert not exited, f"exited before {text!r}:\n{''.join(self.seen)}"


@pytest.fixture(params=[None, "django-key"], ids=["unsigned", "signed"])
def secret(request: pytest.FixtureRequest) -> str | None:
    """settings.KOYOJOBS["secret"] of the test project (None: unsigned)."""
    value: str | None = request.param
    return value


@pytest.fixture
def worker_process(django_db: str, secret: str | None) -> Iterator[_Process]:
    # A 30 s poll: past its first claim round, the worker gets jobs in time only by NOTIFY.
    worker = _Process(
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
    django_db: str, worker_process: _Process, secret: str | None
) -> None:
    found = await asyncio.to_thread(_scenario, django_db, "checkout", secret)
    async with Broker(django_db, secret=secret) as broker:
        await _check_checkout(found, broker, secret)
    worker_process.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker_process.process.wait, 30) == 0
    worker_process.wait_for("stopping gracefully")
    worker_process.wait_for("queues=default:4,emails:2")


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
    found = await asyncio.to_thread(_scenario, django_db, "many_in_atomic")
    stored = await broker.pool.fetch("SELECT id FROM koyojobs_jobs ORDER BY id")
    assert [r["id"] for r in stored] == found["ids"]
    assert len(found["ids"]) == 2  # the third, rolled back, never existed


async def test_the_synchronous_mode_runs_the_job_in_the_view(
    django_db: str, broker: Broker
) -> None:
    found = await asyncio.to_thread(_scenario, django_db, "synchronous")
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
    found = await asyncio.to_thread(_scenario, django_db, "admin")
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
    migrated = await asyncio.to_thread(_run, dsn, "manage.py", "koyojobs", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    every = [migration.version for migration in MIGRATIONS]
    assert migrated.stdout.strip() == f"applied migrations: {every}"
    status = await asyncio.to_thread(_run, dsn, "manage.py", "koyojobs", "status")
    assert (status.returncode, status.stdout.strip()) == (0, "no jobs\n\nno live workers"), (
        status.stderr
    )
    prune = await asyncio.to_thread(_run, dsn, "manage.py", "koyojobs", "prune", "--dry-run")
    assert prune.returncode == 0, prune.stderr
    assert prune.stdout.startswith("would delete 0 finished jobs"), prune.stdout
    helped = await asyncio.to_thread(_run, dsn, "manage.py", "koyojobs", "worker", "--help")
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: manage.py koyojobs worker [OPTIONS] [MODULES]...")
    # The shipped Django migrations match the models (no makemigrations to run).
    check = await asyncio.to_thread(
        _run, dsn, "manage.py", "makemigrations", "--check", "--dry-run"
    )
    assert check.returncode == 0, check.stdout + check.stderr
    wrong = await asyncio.to_thread(_run, dsn, "manage.py", "koyojobs", "jobs", "--status", "x")
    assert wrong.returncode == 2
    assert "Invalid value for '--status'" in wrong.stderr


_SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}


def _configured(
    koyojobs: object, then: str, database: dict[str, str] = _SQLITE
) -> subprocess.CompletedProcess[str]:
    """Django set up on ``database`` (SQLite) with ``settings.KOYOJOBS = koyojobs``, then
    ``then`` run."""
    code = (
        "import django, sys\n"
        "from django.conf import settings\n"
        "settings.configure(INSTALLED_APPS=['koyojobs.contrib.django'], "
        f"DATABASES={{'default': {database!r}}}"
        f"{'' if koyojobs is None else f', KOYOJOBS={koyojobs!r}'})\n"
        "django.setup()\n" + then
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**_environment("postgresql:///unused"), "DJANGO_SETTINGS_MODULE": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_malformed_setting_stops_the_project_at_start_in_one_line() -> None:
    result = _configured({"queue": ["default"]}, "")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "django.core.exceptions.ImproperlyConfigured: settings.KOYOJOBS: unknown key 'queue' "
        "(known: database, modules, queues, secret, retention)"
    )


def test_a_project_on_another_database_starts_and_its_connection_is_refused() -> None:
    result = _configured(
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
    result = _configured(
        {"retention": 3600},
        "from koyojobs.contrib.django.management.commands.koyojobs import _prepare\n"
        "print(sorted(_prepare(['worker'])[1].retention.items()))\n",
        database={"ENGINE": "django.db.backends.postgresql", "NAME": "app", "HOST": "127.0.0.1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "[('cancelled', '3600s'), ('done', '3600s'), ('failed', '3600s')]"
    )
