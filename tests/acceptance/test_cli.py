"""The koyojobs command, run as a user runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from koyojobs import Broker, Database, Status, System, Worker
from koyojobs.testing import _free_port
from tests import jobs
from tests.acceptance import cli_jobs
from tests.conftest import Server, wait_for_status
from tests.worker_process import WorkerProcess, start_worker, stop_worker

ROOT = Path(__file__).resolve().parents[2]


_OURS = ("KOYOJOBS_DSN", "KOYOJOBS_LISTEN_DSN", "KOYOJOBS_STATEMENT_CACHE_SIZE")


def koyojobs(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in _OURS}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "koyojobs", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
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
    assert "already finished (cancelled)" in result.stderr
    result = await asyncio.to_thread(koyojobs, "status", "--dsn", dsn)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].split() == [
        "queue",
        "pending",
        "ready",
        "running",
        "done",
        "failed",
        "cancelled",
        "oldest",
        "ready",
    ]
    row = result.stdout.splitlines()[1].split()
    assert row[:7] == ["default", "0", "1", "0", "0", "0", "1"]
    assert row[7].endswith("s")  # the ready job's wait, in seconds
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
    worker = await start_worker(
        dsn, "--concurrency", "2", "--poll-interval", "30", module="tests.jobs", log_level=None
    )
    try:
        job = await wait_for_status(broker, await jobs.echo("from cli"), Status.DONE, timeout=30)
        assert job.result == "from cli"
    finally:
        worker.signal(sig)
        code = await worker.wait(30)
    log = worker.log()
    assert code == 0, log
    assert "stopping gracefully" in log
    done = next(line for line in log.splitlines() if "job done" in line)
    assert "INFO koyojobs.worker: job done" in done
    assert f"job_id={job.id} job=tests.jobs.echo queue=default attempt=1 duration=" in done


async def test_worker_at_warning_logs_failures_only(dsn: str, broker: Broker) -> None:
    # At WARNING, no "working" line to wait for: the jobs say it works.
    worker = await start_worker(dsn, module="tests.jobs", log_level="WARNING", wait_ready=False)
    try:
        await wait_for_status(broker, await jobs.echo("quiet"), Status.DONE, timeout=30)
        await wait_for_status(broker, await jobs.always_fails(), Status.FAILED, timeout=30)
    finally:
        log = await stop_worker(worker)
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


# -- worker processes -----------------------------------------------------------


async def test_jobs_that_each_hold_a_pool_connection_all_run_at_once(
    dsn: str, broker: Broker
) -> None:
    # The pool was max(4, 2 + 2 x queues): 4 such jobs at once, whatever --concurrency said.
    process = await start_worker(dsn, "--concurrency", "16")
    try:
        ids = await broker.enqueue_many(
            cli_jobs.hold_a_pool_connection(16, 10.0) for _ in range(16)
        )
        assert ids is not None
        finished = [await wait_for_status(broker, i, Status.DONE, timeout=90) for i in ids]
    finally:
        log = await stop_worker(process)
    assert process.returncode == 0, log
    results = [job.result for job in finished]
    assert max(r["most"] for r in results) == 16
    assert len({r["pid"] for r in results}) == 16  # 16 server connections held together
    assert "pool_size=20" in next(line for line in log.splitlines() if "working" in line)


async def test_pool_size_can_be_set_but_not_below_what_the_worker_needs(
    dsn: str, broker: Broker
) -> None:
    result = await asyncio.to_thread(
        koyojobs, "worker", "tests.acceptance.cli_jobs", "--queue", "a", "--queue", "b",
        "--pool-size", "6", "--dsn", dsn,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: --pool-size 6 is too small: a worker with 2 queue(s) takes up to 7 for "
        "itself, plus one for each job that uses the pool at once"
    ]
    process = await start_worker(dsn, "--pool-size", "7")
    try:
        await wait_for_status(broker, await cli_jobs.echo(1), Status.DONE, timeout=30)
    finally:
        log = await stop_worker(process)
    assert "pool_size=7" in next(line for line in log.splitlines() if "working" in line)


async def test_statement_cache_and_listen_dsn_for_a_pooled_deployment(
    dsn: str, broker: Broker
) -> None:
    listen_dsn = f"{dsn}?application_name=koyojobs_cli_listen"
    process = await start_worker(dsn, "--statement-cache-size", "0", "--listen-dsn", listen_dsn)
    try:
        job = await wait_for_status(
            broker, await cli_jobs.prepared_statements(), Status.DONE, timeout=30
        )
        listening = await broker.pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'koyojobs_cli_listen' AND datname = current_database()"
        )
    finally:
        log = await stop_worker(process)
    assert process.returncode == 0, log
    assert job.result == {"prepared": 0, "options": {"statement_cache_size": 0}}
    assert listening == 1

    # The same through the environment, and in the DSN itself.
    environment = {
        **os.environ,
        "KOYOJOBS_DSN": f"{dsn}?statement_cache_size=0",
        "KOYOJOBS_LISTEN_DSN": listen_dsn,
    }
    process = await WorkerProcess("tests.acceptance.cli_jobs", env=environment).start()
    try:
        job = await wait_for_status(
            broker, await cli_jobs.prepared_statements(), Status.DONE, timeout=30
        )
    finally:
        log = await stop_worker(process)
    assert process.returncode == 0, log
    assert job.result["prepared"] == 0
    result = await asyncio.to_thread(
        koyojobs, "status", "--dsn", f"{dsn}?statement_cache_size=0", "--listen-dsn", listen_dsn
    )
    assert result.returncode == 0, result.stderr
    result = await asyncio.to_thread(
        koyojobs,
        "status",
        "--dsn",
        f"{dsn}?statement_cache_size=0",
        env={"KOYOJOBS_STATEMENT_CACHE_SIZE": "100"},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: statement_cache_size=100 conflicts with statement_cache_size=0 in the DSN "
        f"{dsn}: give one"
    ]


async def test_a_second_sigterm_during_the_graceful_stop_is_logged_and_harmless(
    dsn: str, broker: Broker, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    process = await start_worker(dsn)
    try:
        job_id = await cli_jobs.finish_when_file(str(go))
        assert job_id is not None
        await wait_for_status(broker, job_id, Status.RUNNING, timeout=30)
        process.signal(signal.SIGTERM)
        await asyncio.sleep(0.05)  # the scenario: two signals 50 ms apart
        process.signal(signal.SIGTERM)
        go.touch()  # both came while the job ran; now it may finish
    finally:
        code = await process.wait(60)
    log = process.log()
    assert code == 0, log
    assert "a graceful stop is already under way" in log
    job = await broker.get_job(job_id)
    assert job is not None
    assert (job.status, job.result) == (Status.DONE, "finished")


async def test_a_signal_after_the_stop_while_the_process_exits_does_not_kill_it(
    dsn: str, broker: Broker
) -> None:
    # The job module sends SIGTERM from an atexit hook: after the loop closed,
    # where asyncio's handlers are gone (the process died with -15 there).
    process = await start_worker(dsn, module="tests.acceptance.cli_signal_at_exit")
    try:
        await wait_for_status(broker, await cli_jobs.echo("x"), Status.DONE, timeout=30)
    finally:
        log = await stop_worker(process)
    assert process.returncode == 0, log
    assert "a graceful stop is already under way" in log


async def test_a_third_signal_stops_the_worker_at_once(dsn: str, broker: Broker) -> None:
    process = await start_worker(dsn, "--shutdown-grace", "600")
    try:
        job_id = await cli_jobs.block()
        assert job_id is not None
        await wait_for_status(broker, job_id, Status.RUNNING, timeout=30)
        for _ in range(3):
            process.signal(signal.SIGTERM)
            await asyncio.sleep(0.05)  # three signals, as a user sends them
        code = await process.wait(30)
    finally:
        if process.returncode is None:
            await process.kill()
    log = process.log()
    assert code == -signal.SIGTERM, log
    assert "stopping at once, without waiting for running jobs" in log
    job = await broker.get_job(job_id)
    assert job is not None
    assert job.status is Status.RUNNING  # back to ready once its lease lapses


# -- one-line errors ----------------------------------------------------------------


def _with(dsn: str, **parts: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(**parts))


@pytest.fixture
def bad_dsns(pg_server: Server) -> dict[str, tuple[str, str]]:
    """Name -> (DSN, the line the command should print)."""
    ok = pg_server.dsn_for("postgres")
    parts = urlsplit(ok)
    refused = _with(ok, netloc=f"{parts.username}@127.0.0.1:{_free_port()}")
    nobody = _with(ok, netloc=f"nobody:s3cret@{parts.hostname}:{parts.port}")
    nobody_shown = _with(ok, netloc=f"nobody:***@{parts.hostname}:{parts.port}")
    missing = pg_server.dsn_for("koyojobs_no_such_database")
    scheme = 'invalid DSN: scheme is expected to be either "postgresql" or "postgres"'
    return {
        "missing database": (
            missing,
            f'cannot connect to {missing}: database "koyojobs_no_such_database" does not exist',
        ),
        "missing role": (
            nobody,
            f'cannot connect to {nobody_shown}: role "nobody" does not exist',
        ),
        "not a url": ("not-a-url", f"cannot connect to not-a-url: {scheme}, got ''"),
        "mysql": ("mysql://u@h/db", f"cannot connect to mysql://u@h/db: {scheme}, got 'mysql'"),
        "bad sslmode": (
            f"{ok}?sslmode=bogus",
            f"cannot connect to {ok}?sslmode=bogus: `sslmode` parameter must be one of: "
            "disable, allow, prefer, require, verify-ca, verify-full",
        ),
        "refused": (refused, f"cannot connect to {refused}: connection refused ("),
    }


@pytest.mark.parametrize(
    "case", ["missing database", "missing role", "not a url", "mysql", "bad sslmode", "refused"]
)
def test_a_database_that_cannot_be_reached_is_one_line_and_exit_1(
    bad_dsns: dict[str, tuple[str, str]], case: str
) -> None:
    dsn, expected = bad_dsns[case]
    for command in (
        ["status"],
        ["migrate"],
        ["worker", "tests.acceptance.cli_jobs"],
        ["jobs"],
        ["prune", "--older-than", "7d"],
        ["retry", "1"],
        ["cancel", "1"],
        ["pause", "default"],
        ["resume", "default"],
    ):
        result = koyojobs(*command, "--dsn", dsn)
        lines = result.stderr.strip().splitlines()
        assert (result.returncode, len(lines)) == (1, 1), (command, result.stderr)
        assert lines[0].startswith(f"Error: {expected}"), (command, lines[0])
        assert "s3cret" not in result.stderr


def test_a_listen_dsn_that_cannot_be_reached_is_one_line_and_exit_1(
    dsn: str, pg_server: Server
) -> None:
    missing = urlsplit(pg_server.dsn_for("koyojobs_no_such_database"))
    listen_dsn = _with(
        missing.geturl(), netloc=f"{missing.username}:s3cret@{missing.hostname}:{missing.port}"
    )
    result = koyojobs(
        "worker", "tests.acceptance.cli_jobs", "--dsn", dsn, "--listen-dsn", listen_dsn
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: cannot LISTEN on {listen_dsn.replace('s3cret', '***')}: "
        'database "koyojobs_no_such_database" does not exist'
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "def broken(:\n    pass\n",
            "Error: job module 'broken_jobs' raised SyntaxError on import: "
            "invalid syntax (broken_jobs.py, line 1)",
        ),
        (
            "import os\n\nraise RuntimeError('no settings here')\n",
            "Error: job module 'broken_jobs' raised RuntimeError on import: "
            "no settings here (at broken_jobs.py:3)",
        ),
    ],
)
def test_a_job_module_that_raises_on_import_is_one_line_and_exit_1(
    tmp_path: Path, source: str, expected: str
) -> None:
    (tmp_path / "broken_jobs.py").write_text(source)
    result = koyojobs(
        "worker", "broken_jobs", "--dsn", "postgresql://localhost/unused", cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [expected]


# -- prune, retry, cancel -------------------------------------------------------------


@pytest.mark.parametrize(
    ("older_than", "message"),
    [
        ("1m", "'1m' is ambiguous: write 1min for minutes (months are not accepted)"),
        ("2mo", "'2mo' is ambiguous: write 2min for minutes (months are not accepted)"),
        ("7", "'7' has no unit: write a duration such as 90s, 30min, 12h, 7d or 2w"),
        ("3y", "'3y' is not a duration such as 90s, 30min, 12h, 7d or 2w"),
        ("-1d", "'-1d' is negative"),
    ],
)
def test_prune_durations_need_an_unambiguous_unit(older_than: str, message: str) -> None:
    result = koyojobs("prune", "--older-than", older_than, "--dsn", "postgresql://h/unused")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: Invalid value for '--older-than': {message}"
    )


async def test_prune_dry_run_counts_per_status_and_deletes_nothing(
    dsn: str, broker: Broker
) -> None:
    ids = await broker.enqueue_many(cli_jobs.echo(n) for n in range(5))
    assert ids is not None
    for job_id, status, age in zip(
        ids,
        ["done", "done", "failed", "done", "ready"],
        ["2 hours", "3 minutes", "1 day", "2 weeks", "1 day"],
        strict=True,
    ):
        await broker.pool.execute(
            "UPDATE koyojobs_jobs SET status = $2, "
            "finished_at = CASE WHEN $2 = 'ready' THEN NULL ELSE now() - $3::text::interval END "
            "WHERE id = $1",
            job_id,
            status,
            age,
        )
    result = await asyncio.to_thread(
        koyojobs, "prune", "--older-than", "90min", "--dry-run", "--dsn", dsn
    )
    assert (result.returncode, result.stdout.strip()) == (
        0,
        "would delete 3 finished jobs (2 done, 1 failed, 0 cancelled)",
    )
    assert await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs") == 5
    result = await asyncio.to_thread(koyojobs, "prune", "--older-than", "1w", "--dsn", dsn)
    assert (result.returncode, result.stdout.strip()) == (0, "deleted 1 finished jobs")
    result = await asyncio.to_thread(koyojobs, "prune", "--older-than", "90min", "--dsn", dsn)
    assert (result.returncode, result.stdout.strip()) == (0, "deleted 2 finished jobs")
    assert await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs") == 2


async def test_retry_and_cancel_say_why_they_did_nothing(dsn: str, broker: Broker) -> None:
    ready, running, done = await broker.enqueue_many(cli_jobs.echo(n) for n in range(3)) or []
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET status = 'running', attempts = 1 WHERE id = $1", running
    )
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET status = 'done', attempts = 1, finished_at = now() WHERE id = $1",
        done,
    )
    expected = {
        ("retry", 999): "Error: job 999 does not exist",
        ("retry", ready): f"Error: job {ready} is ready, not finished: "
        "only a done, failed or cancelled job can be retried",
        ("retry", running): f"Error: job {running} is running, not finished: "
        "only a done, failed or cancelled job can be retried",
        ("cancel", 999): "Error: job 999 does not exist",
        ("cancel", done): f"Error: job {done} already finished (done): nothing to cancel",
    }
    for (command, job_id), line in expected.items():
        result = await asyncio.to_thread(koyojobs, command, str(job_id), "--dsn", dsn)
        assert (result.returncode, result.stderr.strip().splitlines()) == (1, [line])
    job = await broker.get_job(running)
    assert job is not None and job.status is Status.RUNNING


async def test_worker_retention_overrides_the_defaults(dsn: str, broker: Broker) -> None:
    from tests.faults.conftest import WorkerProcess, until

    finished = (
        "INSERT INTO koyojobs_jobs (name, queue, args, status, finished_at) "
        "VALUES ('x', 'default', '\\x00', $1, now() - make_interval(days => $2)) RETURNING id"
    )
    done_two_days_ago = await broker.pool.fetchval(finished, "done", 2)
    failed_a_month_ago = await broker.pool.fetchval(finished, "failed", 30)
    worker = WorkerProcess(dsn, retention="failed=none")
    await worker.start()
    try:
        # done keeps its default (a day); failed ones are kept for good.
        await until(
            lambda: broker.pool.fetchval(
                "SELECT NOT EXISTS (SELECT FROM koyojobs_jobs WHERE id = $1)", done_two_days_ago
            ),
            timeout=20,
            what="the old done job pruned",
        )
        assert await broker.get_job(failed_a_month_ago) is not None
    finally:
        worker.signal(signal.SIGTERM)
        assert await worker.wait(20) == 0, worker.output()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("done=1m", "Error: --retention 'done=1m': '1m' is ambiguous: write 1min"),
        ("started=1d", "Error: --retention 'started=1d': 'started' is not done, failed or"),
        ("done", "Error: --retention 'done': write STATUS=AGE, such as done=1d"),
    ],
)
def test_a_bad_retention_is_a_one_line_usage_error(dsn: str, option: str, message: str) -> None:
    result = koyojobs("worker", "tests.jobs", "--dsn", dsn, "--retention", option)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


async def test_pause_and_resume_show_in_status_and_jobs_says_why_a_job_waits(
    dsn: str, broker: Broker
) -> None:
    job_id = await jobs.echo("later")
    result = await asyncio.to_thread(koyojobs, "pause", "default", "--dsn", dsn)
    assert (result.returncode, result.stdout) == (0, "queue 'default' paused\n"), result.stderr
    result = await asyncio.to_thread(koyojobs, "status", "--dsn", dsn)
    line, *_ = result.stdout.splitlines()[1:]
    assert line.split()[0] == "default" and line.endswith("paused")
    result = await asyncio.to_thread(koyojobs, "jobs", "--dsn", dsn)
    [line] = result.stdout.splitlines()[1:]
    assert line.split()[0] == str(job_id) and line.endswith("waiting: queue paused")

    result = await asyncio.to_thread(koyojobs, "resume", "default", "--dsn", dsn)
    assert (result.returncode, result.stdout) == (0, "queue 'default' resumed\n"), result.stderr
    result = await asyncio.to_thread(koyojobs, "status", "--dsn", dsn)
    assert not result.stdout.splitlines()[1].endswith("paused")
    assert await broker.paused_queues() == {}
