"""[tool.koyojobs] read by `koyojobs worker` with no arguments, and `koyojobs schedules`."""

from __future__ import annotations

import os
import pickle
import textwrap
from pathlib import Path

from koyojobs import Broker, Status
from tests.acceptance.test_cli import koyojobs
from tests.conftest import wait_for_status
from tests.worker_process import WorkerProcess

APP_JOBS = """
from koyojobs import define_job


@define_job(name="app.double", queue="fast")
async def double(x: int) -> int:
    return 2 * x


@define_job(name="app.triple", queue="slow")
def triple(x: int) -> int:
    return 3 * x
"""


def _project(tmp_path: Path, section: str) -> Path:
    (tmp_path / "appjobs.py").write_text(APP_JOBS)
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "1"\n\n' + textwrap.dedent(section)
    )
    return tmp_path


DECLARED = """
[tool.koyojobs]
modules = ["appjobs"]
dsn_env = "APP_DATABASE_URL"

[tool.koyojobs.queues]
fast = 3
slow = 2
"""


async def _raw_job(broker: Broker, name: str, queue: str, x: int) -> int:
    # Unsigned, as an app with no secret enqueues; this process never imports appjobs.
    job_id: int = await broker.pool.fetchval(
        "INSERT INTO koyojobs_jobs (name, queue, args) VALUES ($1, $2, $3) RETURNING id",
        name,
        queue,
        pickle.dumps(((x,), {})),
    )
    return job_id


async def _start(cwd: Path, env: dict[str, str], *args: str) -> WorkerProcess:
    """``koyojobs worker ARGS`` in the project ``cwd``, with none of our KOYOJOBS_ variables."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KOYOJOBS_")}
    return await WorkerProcess(*args, env={**full_env, **env}, cwd=cwd).start()


async def test_worker_with_no_arguments_runs_every_declared_queue(
    tmp_path: Path, dsn: str, broker: Broker
) -> None:
    project = _project(tmp_path, DECLARED)
    worker = await _start(project, {"APP_DATABASE_URL": dsn})
    try:
        working = next(line for line in worker.lines if "working" in line)
        assert "queues=fast:3,slow:2" in working, working
        doubled = await _raw_job(broker, "app.double", "fast", 21)
        tripled = await _raw_job(broker, "app.triple", "slow", 5)
        assert (await wait_for_status(broker, doubled, Status.DONE)).result == 42
        assert (await wait_for_status(broker, tripled, Status.DONE)).result == 15
    finally:
        assert await worker.stop(20) == 0, worker.log()


async def test_options_on_the_command_line_win_over_the_file(
    tmp_path: Path, dsn: str, broker: Broker
) -> None:
    project = _project(tmp_path, DECLARED)
    worker = await _start(
        project,
        {"APP_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        "--dsn",
        dsn,
        "--queue",
        "slow",
        "--concurrency",
        "4",
    )
    try:
        working = next(line for line in worker.lines if "working" in line)
        assert "queues=slow:4 " in working + " ", working
    finally:
        assert await worker.stop(20) == 0, worker.log()


def test_a_malformed_section_is_one_line_naming_the_key(tmp_path: Path, dsn: str) -> None:
    project = _project(tmp_path, "[tool.koyojobs.queues]\nfast = 'many'\n")
    result = koyojobs("worker", "--dsn", dsn, cwd=project)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "queues.fast" in lines[0] and "pyproject.toml" in lines[0], lines


def test_a_declared_dsn_variable_that_is_unset_is_named(tmp_path: Path) -> None:
    project = _project(tmp_path, DECLARED)
    result = koyojobs("worker", cwd=project)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: no database given: pass --dsn, or set KOYOJOBS_DSN or APP_DATABASE_URL "
        f"(dsn_env in {project / 'pyproject.toml'})"
    ]


def test_no_modules_anywhere_is_a_usage_error(dsn: str) -> None:
    result = koyojobs("worker", "--dsn", dsn)
    assert result.returncode == 2
    assert "no job modules" in result.stderr


async def test_schedules_lists_periodic_jobs_with_their_ticks(dsn: str, broker: Broker) -> None:
    await broker.pool.execute(
        "INSERT INTO koyojobs_schedules (name, last_tick, last_enqueued_tick, last_skipped) "
        "VALUES ('periodic.slow', '2026-01-02 03:04:05+00', '2026-01-02 03:04:04+00', true)"
    )
    result = koyojobs("schedules", "tests.periodic_jobs", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "job",
        "queue",
        "schedule",
        "zone",
        "last",
        "tick",
        "last",
        "enqueued",
        "next",
        "tick",
    ]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {
        "periodic.catch_up",
        "periodic.clock",
        "periodic.every_second",
        "periodic.removed",
        "periodic.slow",
    }
    slow = rows["periodic.slow"]
    assert slow.split()[1:5] == ["periodic-slow", "every", "1s", "UTC"], slow
    assert "2026-01-02 03:04:05 UTC (skipped: still running)" in slow
    assert "2026-01-02 03:04:04 UTC" in slow
    # Never ticked on this database: no last tick, and its next tick is a whole second.
    assert rows["periodic.every_second"].split()[5:7] == ["-", "-"]
