"""``Broker.wait``: woken by one notification per finishing batch, never hung by a lost one."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from koyojobs import Broker, Status
from koyojobs.listener import FINISHED_CHANNEL
from koyojobs.outcomes import Outcome, as_columns, succeeded
from koyojobs.sql import QUERIES
from koyojobs.testing import wait_for_job
from tests import jobs
from tests.faults.conftest import until
from tests.integration.conftest import StartWorker

# Far longer than any answer below: an answer sooner came from a notification.
_NO_RECHECK = 60.0


async def _until_waiting(broker: Broker, job_id: int) -> None:
    # The waiter registers once its LISTEN is in place: from then on, no
    # notification for its job is missed.
    await until(lambda: job_id in broker._waiters._events, what="the waiter listening")


async def test_wait_is_woken_when_the_job_is_done(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker(poll_interval=_NO_RECHECK)
    job_id = await jobs.wait_for_gate("w")
    assert job_id is not None
    waiting = asyncio.create_task(broker.wait(job_id, timeout=10, recheck=_NO_RECHECK))
    await until(lambda: ("started", "w") in jobs.runs, what="the job starting")
    assert not waiting.done()
    opened = time.monotonic()
    jobs.gates["w"].set()
    job = await waiting
    assert time.monotonic() - opened < 2.0
    assert job.id == job_id and job.status is Status.DONE and job.result == "w"


async def test_wait_returns_a_failed_job_after_its_last_attempt(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    job_id = await jobs.always_fails()
    assert job_id is not None
    job = await broker.wait(job_id, timeout=10, recheck=_NO_RECHECK)
    assert job.status is Status.FAILED and job.attempts == 2


async def test_a_cancel_wakes_the_waiter(broker: Broker) -> None:
    job_id = await jobs.echo(1)  # no worker: it stays ready
    assert job_id is not None
    waiting = asyncio.create_task(broker.wait(job_id, recheck=_NO_RECHECK))
    await _until_waiting(broker, job_id)
    assert await broker.cancel(job_id)
    job = await asyncio.wait_for(waiting, 5)
    assert job.status is Status.CANCELLED


async def test_wait_times_out_and_the_job_stays(broker: Broker) -> None:
    job_id = await jobs.echo(1)
    assert job_id is not None
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=rf"job {job_id} did not finish within 0.3s"):
        await broker.wait(job_id, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    job = await broker.get_job(job_id)
    assert job is not None and job.status is Status.READY


async def test_an_unknown_id_is_an_error_at_once(broker: Broker) -> None:
    with pytest.raises(LookupError, match="no job with id 424242"):
        await broker.wait(424242, timeout=None)
    assert broker.listener is None  # nothing was opened for it


async def test_a_finished_job_returns_at_once(broker: Broker, start_worker: StartWorker) -> None:
    await start_worker()
    job_id = await jobs.echo("x")
    assert job_id is not None
    await broker.wait(job_id, timeout=10)
    job = await broker.wait(job_id, timeout=0)
    assert job.result == "x"


async def test_a_lost_notification_only_delays(broker: Broker) -> None:
    job_id = await jobs.echo(1)
    assert job_id is not None
    waiting = asyncio.create_task(broker.wait(job_id, timeout=10, recheck=0.2))
    await _until_waiting(broker, job_id)
    # Finished behind koyojobs' back: no notification at all.
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET status = 'done', finished_at = now() WHERE id = $1", job_id
    )
    job = await asyncio.wait_for(waiting, 5)
    assert job.status is Status.DONE


@pytest.mark.parametrize(
    ("timeout", "recheck", "error"),
    [(-1, 1.0, ValueError), ("1", 1.0, ValueError), (None, 0, ValueError), (None, 1.0, None)],
)
async def test_bad_arguments_are_one_line_errors(
    broker: Broker, timeout: object, recheck: object, error: type[Exception] | None
) -> None:
    if error is None:
        with pytest.raises(TypeError, match=r"wait\(\) needs a job id \(int\), got '1'"):
            await broker.wait("1")  # type: ignore[arg-type]
        return
    with pytest.raises(error, match=r"wait\(\) (timeout|recheck) must be"):
        await broker.wait(1, timeout, recheck=recheck)  # type: ignore[arg-type]


async def test_one_notification_per_finishing_batch(broker: Broker, dsn: str) -> None:
    ids = await broker.enqueue_many([jobs.echo(i) for i in range(6)])
    assert ids is not None
    heard: list[str] = []
    end = asyncio.Event()

    def on_notify(conn: object, pid: int, channel: str, payload: object) -> None:
        if payload == "end":
            end.set()
        else:
            heard.append(str(payload))

    listening = await asyncpg.connect(dsn)
    worker = await asyncpg.connect(dsn)
    try:
        await listening.add_listener(FINISHED_CHANNEL, on_notify)

        async def round_(outcomes: list[Outcome], free: int) -> list[int]:
            rows = await worker.fetch(
                QUERIES["finish_and_claim"], "default", free, 30.0, "w", *as_columns(outcomes)
            )
            # From the same session, so it arrives after whatever the round sent.
            await worker.execute("SELECT pg_notify($1, 'end')", FINISHED_CHANNEL)
            await asyncio.wait_for(end.wait(), 5)
            end.clear()
            return [row["id"] for row in rows]

        claimed = await round_([], 6)
        assert sorted(claimed) == ids
        assert heard == []  # claiming alone notifies nobody
        done = succeeded(b"")
        # Jobs nobody waits for end without a notification.
        assert await round_([(ids[0], 1, done)], 0) == []
        assert heard == []
        for job_id in ids[1:]:
            await broker.pool.execute(QUERIES["mark_waited"], job_id)
        assert await round_([(i, 1, done) for i in ids[1:]], 0) == []
        assert heard == [""]  # five waited jobs ended in one batch: one notification
    finally:
        await listening.close()
        await worker.close()


async def test_the_testing_helper_waits_on_the_current_broker(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    job_id = await jobs.echo(7)
    assert job_id is not None
    job = await wait_for_job(job_id)
    assert job.status is Status.DONE and job.result == 7
