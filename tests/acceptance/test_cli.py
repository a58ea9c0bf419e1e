"""The koyojobs command, run as a user runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from koyojobs import Broker, Database, Status, System, Worker
from tests import jobs
from tests.conftest import wait_for_status

ROOT = Path(__file__).resolve().parents[2]


def koyojobs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "KOYOJOBS_DSN"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "koyojobs", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "command", [["status"], ["migrate"], ["worker", "tests.jobs"], ["retry", "1"], ["cancel", "1"]]
)
def test_without_a_dsn_says_so_in_one_line_and_exits_2(command: list[str]) -> None:
    result = koyojobs(*command)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["Error: no database given: pass --dsn or set KOYOJOBS_DSN"]


def test_a_module_that_cannot_be_imported_is_a_one_line_usage_error(dsn: str) -> None:
    result = koyojobs("worker", "no_such_module_here", "--dsn", dsn)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: cannot import job module 'no_such_module_here': "
        "No module named 'no_such_module_here'"
    ]


async def test_migrate_status_retry_and_cancel(dsn: str, broker: Broker) -> None:
    result = await asyncio.to_thread(koyojobs, "migrate", env={"KOYOJOBS_DSN": dsn})
    assert (result.returncode, result.stdout.strip()) == (0, "schema is up to date")
    ready = await jobs.echo(1)
    cancelled = await jobs.echo(2)
    result = await asyncio.to_thread(koyojobs, "cancel", str(cancelled), "--dsn", dsn)
    assert (result.returncode, result.stdout.strip()) == (0, f"job {cancelled} is cancelled")
    result = await asyncio.to_thread(koyojobs, "cancel", str(cancelled), "--dsn", dsn)
    assert result.returncode == 1
    assert "was not cancelled" in result.stderr
    result = await asyncio.to_thread(koyojobs, "status", "--dsn", dsn)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].split() == [
        "queue",
        "ready",
        "running",
        "done",
        "failed",
        "cancelled",
        "oldest",
        "ready",
    ]
    row = result.stdout.splitlines()[1].split()
    assert row[:6] == ["default", "1", "0", "0", "0", "1"]
    assert row[6].endswith("s")  # the ready job's wait, in seconds
    result = await asyncio.to_thread(koyojobs, "retry", str(cancelled), "--dsn", dsn)
    assert (result.returncode, result.stdout.strip()) == (
        0,
        f"job {cancelled} is ready to run again",
    )
    job = await broker.get_job(cancelled)
    assert job is not None
    assert job.status is Status.READY
    assert ready is not None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_worker_runs_jobs_and_exits_0_on_a_signal(
    dsn: str, broker: Broker, sig: signal.Signals
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "koyojobs",
        "worker",
        "tests.jobs",
        "--dsn",
        dsn,
        "--concurrency",
        "2",
        "--poll-interval",
        "30",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        job = await wait_for_status(broker, await jobs.echo("from cli"), Status.DONE, timeout=30)
        assert job.result == "from cli"
    finally:
        process.send_signal(sig)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    log = stderr.decode()
    assert "stopping gracefully" in log
    done = next(line for line in log.splitlines() if "job done" in line)
    assert "INFO koyojobs.worker: job done" in done
    assert f"job_id={job.id} job=tests.jobs.echo queue=default attempt=1 duration=" in done


async def test_worker_at_warning_logs_failures_only(dsn: str, broker: Broker) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "koyojobs",
        "--log-level",
        "WARNING",
        "worker",
        "tests.jobs",
        "--dsn",
        dsn,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_for_status(broker, await jobs.echo("quiet"), Status.DONE, timeout=30)
        await wait_for_status(broker, await jobs.always_fails(), Status.FAILED, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode()
    assert "job done" not in log
    assert "will retry" not in log
    assert "WARNING koyojobs.worker: job failed" in log
    assert "error=ValueError: always" in log


async def test_a_system_wires_database_broker_and_worker(dsn: str) -> None:
    from koyojobs import set_current_broker

    system = System()
    system.add("db", lambda: Database(dsn))
    system.add("broker", Broker, depends_on=["db"])
    system.add("worker", lambda b: Worker(b, poll_interval=0.5, lease=2), depends_on=["broker"])
    async with system:
        set_current_broker(system["broker"])
        try:
            job = await wait_for_status(system["broker"], await jobs.echo("wired"), Status.DONE)
        finally:
            set_current_broker(None)
    assert job.result == "wired"


async def test_prune_deletes_only_old_finished_jobs(dsn: str, broker: Broker) -> None:
    old_done = await jobs.echo("old")
    recent_done = await jobs.echo("recent")
    still_ready = await jobs.echo("ready")
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET status = 'done', finished_at = now() - interval '8 days' "
        "WHERE id = $1",
        old_done,
    )
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET status = 'done', finished_at = now() WHERE id = $1", recent_done
    )
    result = await asyncio.to_thread(koyojobs, "prune", "--older-than", "7d", "--dsn", dsn)
    assert (result.returncode, result.stdout.strip()) == (0, "deleted 1 finished jobs")
    assert await broker.get_job(old_done) is None
    assert await broker.get_job(recent_done) is not None
    assert await broker.get_job(still_ready) is not None
    result = await asyncio.to_thread(koyojobs, "prune", "--older-than", "soon", "--dsn", dsn)
    assert result.returncode == 2 and "'soon' is not a duration" in result.stderr


async def test_jobs_lists_the_newest_with_their_last_error(dsn: str, broker: Broker) -> None:
    ok = await jobs.echo("fine")
    bad = await jobs.always_fails()
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET status = 'failed', attempts = 2, finished_at = now(), "
        "last_error = 'ValueError: always' || chr(10) || 'more detail' WHERE id = $1",
        bad,
    )
    result = await asyncio.to_thread(koyojobs, "jobs", "--status", "failed", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["id", "name", "queue", "status", "attempts"]
    assert len(lines) == 2
    assert lines[1].split()[:5] == [str(bad), "tests.jobs.always_fails", "default", "failed", "2/2"]
    assert lines[1].endswith("ValueError: always")
    result = await asyncio.to_thread(koyojobs, "jobs", "--limit", "5", "--dsn", dsn)
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == [str(bad), str(ok)]
    result = await asyncio.to_thread(koyojobs, "jobs", "--status", "lost", "--dsn", dsn)
    assert result.returncode == 2 and "'lost' is not one of" in result.stderr
