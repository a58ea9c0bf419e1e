"""Never twice at once, judged from the jobs' own logs: a plain ``def`` job's thread
cannot be stopped, so a graceful stop or a lease lost in an outage must not let
another worker start the job while that thread may still run."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from koyojobs import Broker, Status
from koyojobs.leases import EXIT_LOST_LEASE
from tests.conftest import wait_for_status
from tests.faults import jobs
from tests.faults.conftest import WorkerProcess, until
from tests.proxy import BlackholeProxy

StartProcess = Callable[..., Awaitable[WorkerProcess]]


def _started(log: Path) -> bool:
    return log.exists() and "start" in log.read_text()


@pytest.mark.timeout(60)
async def test_a_def_job_outliving_the_grace_is_not_started_elsewhere_while_its_thread_may_run(
    broker: Broker, worker_processes: StartProcess, tmp_path: Path
) -> None:
    log = tmp_path / "life.log"
    first = await worker_processes(lease=2.0, **{"shutdown-grace": 0.5})
    job_id = await jobs.lifelog(str(log), 4.0)
    await until(lambda: _started(log), what="the job started")
    # Waiting, woken by the release's NOTIFY: today it claims the job at once.
    await worker_processes(lease=2.0)
    first.signal(signal.SIGTERM)
    assert await first.wait(15) == 0, first.output()
    job = await wait_for_status(broker, job_id, Status.DONE, timeout=30)
    assert job.result == "lived"
    spans = jobs.life_spans(str(log))
    assert len(spans) == 2 and spans[0][0] == first.pid, spans
    assert jobs.overlaps(spans) == []


@pytest.mark.timeout(60)
async def test_a_worker_that_cannot_renew_a_def_jobs_lease_ends_itself_before_it_lapses(
    broker: Broker, dsn: str, worker_processes: StartProcess, tmp_path: Path
) -> None:
    log = tmp_path / "life.log"
    proxy = BlackholeProxy(dsn)
    await proxy.start()
    cut_off = WorkerProcess(proxy.dsn, lease=1.5)
    try:
        await cut_off.start()
        job_id = await jobs.lifelog(str(log), 5.0)
        await until(lambda: _started(log), what="the job started")
        await worker_processes(lease=1.5)  # reaches the database; rescues the lapsed lease
        proxy.blackhole()  # no renewal reaches the database from now on
        assert await cut_off.wait(15) == EXIT_LOST_LEASE, cut_off.output()
        assert "exiting before the lease lapses" in cut_off.output()
        job = await wait_for_status(broker, job_id, Status.DONE, timeout=30)
    finally:
        await cut_off.kill()
        await proxy.stop()
    assert (job.attempts, job.result) == (2, "lived")
    spans = jobs.life_spans(str(log))
    assert len(spans) == 2 and spans[0][0] == cut_off.pid, spans
    assert jobs.overlaps(spans) == []


@pytest.mark.timeout(60)
async def test_a_def_job_past_its_timeout_is_not_retried_while_its_thread_runs(
    broker: Broker, worker_processes: StartProcess, tmp_path: Path
) -> None:
    log = tmp_path / "life.log"
    for _ in range(2):  # the retry may go to either
        await worker_processes(lease=2.0)
    job_id = await jobs.lifelog_past_timeout(str(log), 1.5)
    job = await wait_for_status(broker, job_id, Status.FAILED, timeout=30)
    assert job.last_error is not None and "ran past its timeout" in job.last_error
    spans = jobs.life_spans(str(log))
    assert len(spans) == 2, spans
    assert jobs.overlaps(spans) == []


@pytest.mark.timeout(60)
async def test_a_def_job_outliving_the_grace_keeps_its_concurrency_slot_while_its_thread_may_run(
    broker: Broker, worker_processes: StartProcess, tmp_path: Path
) -> None:
    # concurrency=1: the job cut short by the stop must hold its key until its
    # thread is gone, or another job of the key starts beside it.
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    queue = jobs.LIMITED_QUEUE
    stopping = await worker_processes(queue=queue, lease=2.0, **{"shutdown-grace": 0.5})
    first = await jobs.limited_lifelog(str(first_log), 3.0)
    await until(lambda: _started(first_log), what="the first job started")
    second = await jobs.limited_lifelog(str(second_log), 0.5)  # held back by the limit
    await worker_processes(queue=queue, lease=2.0)  # waiting, woken by a NOTIFY
    stopping.signal(signal.SIGTERM)
    assert await stopping.wait(15) == 0, stopping.output()
    await wait_for_status(broker, second, Status.DONE, timeout=30)
    await wait_for_status(broker, first, Status.DONE, timeout=30)
    cut_short = [run for run in jobs.life_spans(str(first_log)) if run[0] == stopping.pid]
    [(_, _, last_sign)] = cut_short
    [(_, second_began, _)] = jobs.life_spans(str(second_log))
    assert second_began > last_sign, (
        f"the second job began {last_sign - second_began:.3f}s before the first's thread "
        "last showed life"
    )
