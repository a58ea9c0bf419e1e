"""The command line against bad input and for read-only users: each case an attack or a slip."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

import pytest

from koyojobs import Broker, Status
from koyojobs.cli.base import _ExtrasFormatter
from koyojobs.serializer import Serializer
from tests import jobs
from tests.acceptance.test_cli import koyojobs
from tests.conftest import wait_for_status
from tests.worker_process import start_worker, stop_worker


async def test_read_only_commands_work_for_a_select_only_role(
    dsn: str, broker: Broker, reader_dsn: str
) -> None:
    await jobs.echo(1)
    for command in (["status"], ["jobs"], ["schedules", "tests.periodic_jobs"]):
        result = await asyncio.to_thread(koyojobs, *command, "--dsn", reader_dsn)
        assert result.returncode == 0, (command, result.stderr)
        assert result.stderr == "", command
    result = await asyncio.to_thread(koyojobs, "status", "--dsn", reader_dsn)
    assert result.stdout.splitlines()[1].split()[:3] == ["default", "0", "1"]


async def test_read_only_commands_on_a_database_without_the_schema_change_nothing(
    empty_database: Callable[[str], Awaitable[str]],
) -> None:
    dsn = await empty_database("bare")
    for command in (["status"], ["jobs"], ["schedules", "tests.periodic_jobs"]):
        result = await asyncio.to_thread(koyojobs, *command, "--dsn", dsn)
        assert result.returncode == 1, command
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("Error: the koyojobs schema is not in this database: "), line
        assert "run koyojobs migrate" in line
    async with Broker(dsn, migrate=False) as broker:
        tables = await broker.pool.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
    assert tables == 0


@pytest.mark.parametrize(
    "command",
    [
        ["retry", "99999999999999999999"],
        ["cancel", "9223372036854775808"],
        ["retry", "-1"],
        ["prune", "--older-than", "99999999999999999999d"],
        ["prune", "--older-than", "1e400s"],
    ],
)
def test_absurd_numbers_are_usage_errors(command: list[str]) -> None:
    result = koyojobs(*command, "--dsn", "postgresql://127.0.0.1:1/unused")
    assert result.returncode == 2, result.stderr
    assert "database error" not in result.stderr and "cannot connect" not in result.stderr


async def test_pausing_a_queue_nobody_named_asks_for_force(dsn: str, broker: Broker) -> None:
    result = await asyncio.to_thread(koyojobs, "pause", "emials", "--dsn", dsn)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "no job or worker has named queue 'emials'" in line and "--force" in line
    assert await broker.paused_queues() == {}
    result = await asyncio.to_thread(koyojobs, "pause", "emials", "--force", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    assert list(await broker.paused_queues()) == ["emials"]
    # A queue a job named is paused without --force, and resume needs none.
    await jobs.echo(1)
    result = await asyncio.to_thread(koyojobs, "pause", "default", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    result = await asyncio.to_thread(koyojobs, "resume", "never-seen", "--dsn", dsn)
    assert result.returncode == 0, result.stderr


async def test_jobs_and_status_escape_what_a_job_wrote(dsn: str, broker: Broker) -> None:
    job_id = await broker.pool.fetchval(
        "INSERT INTO koyojobs_jobs (name, queue, status, args, last_error, finished_at) "
        "VALUES ($1, $2, 'failed', '\\x00', $3, now()) RETURNING id",
        "evil\x1b]0;pwned\x07name",
        "q\x1b[2J",
        "boom\x1b[31m red\rover",
    )
    for command in (["jobs"], ["status"]):
        result = await asyncio.to_thread(koyojobs, *command, "--dsn", dsn)
        assert result.returncode == 0, result.stderr
        assert not {"\x1b", "\r", "\x07"} & set(result.stdout)
        assert result.stdout.splitlines()[2:] in ([], ["", "no live workers"]), result.stdout
    result = await asyncio.to_thread(koyojobs, "jobs", "--dsn", dsn)
    assert "evil\\x1b]0;pwned\\x07name" in result.stdout
    assert "boom\\x1b[31m red" in result.stdout  # the error's first line: up to the \r
    assert await broker.job_status(job_id) is Status.FAILED


def test_a_newline_in_a_logged_name_does_not_forge_a_line() -> None:
    formatter = _ExtrasFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.makeLogRecord(
        {
            "name": "koyojobs.worker",
            "levelname": "WARNING",
            "msg": "job failed",
            "job": "shop.send\n2026-01-01 INFO koyojobs.worker: all good",
            "error": "Boom\x1b[2J",
        }
    )
    line = formatter.format(record)
    assert "\n" not in line and "\x1b" not in line
    assert line == (
        "WARNING koyojobs.worker: job failed "
        "job=shop.send\\x0a2026-01-01 INFO koyojobs.worker: all good error=Boom\\x1b[2J"
    )


def test_koyojobs_secret_holds_several_keys_the_first_signing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = Serializer(["old"]).dump_result("r", "app.job")
    monkeypatch.setenv("KOYOJOBS_SECRET", "new,old")
    rotated = Serializer.from_options(None)
    assert rotated.load_result(old, "app.job") == "r"
    assert Serializer(["new"]).load_result(rotated.dump_result("s", "app.job"), "app.job") == "s"
    monkeypatch.setenv("KOYOJOBS_SECRET", "new,,old")
    with pytest.raises(ValueError, match="empty key"):
        Serializer.from_options(None)


async def test_secret_option_rotates_keys_from_the_command_line(dsn: str, broker: Broker) -> None:
    result = await asyncio.to_thread(koyojobs, "jobs", "--secret", "new,", "--dsn", dsn)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: --secret has an empty key: give keys separated by single commas"
    )
    # A worker given "new,old" runs a job signed with the old key.
    async with Broker(dsn, secret="old") as old_signer:
        job_id = await old_signer.enqueue(jobs.echo("signed by old"))
    worker = await start_worker(dsn, "--secret", "new,old", module="tests.jobs", log_level=None)
    try:
        await wait_for_status(broker, job_id, Status.DONE, Status.FAILED, timeout=30)
    finally:
        log = await stop_worker(worker)
    assert worker.returncode == 0, log
    job = await broker.get_job(job_id)
    assert job is not None and job.status is Status.DONE, job
    # Signed with "new": a broker knowing only "old" refuses the result.
    assert (
        Serializer(["new"]).load_result(
            await broker.pool.fetchval("SELECT result FROM koyojobs_jobs WHERE id = $1", job_id),
            "tests.jobs.echo",
        )
        == "signed by old"
    )


async def test_retry_and_cancel_every_job_of_a_queue(dsn: str, broker: Broker) -> None:
    await broker.pool.execute(
        "INSERT INTO koyojobs_jobs (name, queue, status, args, finished_at) "
        "SELECT 'bulk.job', 'mail', s, '\\x00', CASE WHEN s = 'failed' THEN now() END "
        "FROM unnest(ARRAY['failed', 'failed', 'failed', 'ready', 'ready']) AS s"
    )
    result = await asyncio.to_thread(
        koyojobs, "retry", "--queue", "mail", "--status", "failed", "--dsn", dsn
    )
    assert (result.returncode, result.stdout) == (0, "retried 3 jobs\n"), result.stderr
    result = await asyncio.to_thread(koyojobs, "cancel", "--queue", "mail", "--dsn", dsn)
    assert (result.returncode, result.stdout) == (0, "cancelled 5 jobs\n"), result.stderr
    for wrong in (["retry"], ["retry", "1", "--queue", "mail"], ["cancel", "--status", "ready"]):
        result = await asyncio.to_thread(koyojobs, *wrong, "--dsn", dsn)
        assert result.returncode == 2, wrong


async def test_status_lists_the_live_workers(dsn: str, broker: Broker) -> None:
    from koyojobs import Worker

    async with Worker(broker, queue="emails", pool_size=3, poll_interval=0.2):
        deadline = asyncio.get_running_loop().time() + 10
        while not await broker.workers():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        result = await asyncio.to_thread(koyojobs, "status", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["no jobs", ""]
    assert lines[2].split() == ["worker", "pid", "queues", "running", "started", "last", "seen"]
    assert lines[3].split()[1:4] == [str(os.getpid()), "emails", "0/3"]
    result = await asyncio.to_thread(koyojobs, "status", "--dsn", dsn)
    assert result.stdout.splitlines()[-1] == "no live workers"
