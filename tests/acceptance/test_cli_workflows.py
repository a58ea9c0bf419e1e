"""koyojobs jobs with workflow steps: pending steps say what they wait for; progress shows."""

from __future__ import annotations

import asyncio

from koyojobs import Broker, Workflow
from tests import workflow_jobs as wj
from tests.acceptance.test_cli import koyojobs


async def test_jobs_shows_pending_steps_with_what_they_wait_for_and_progress(
    dsn: str, broker: Broker
) -> None:
    wf = Workflow("onboard")
    fetch = wf.add(wj.step("fetch"), name="fetch")
    sizes = [wf.add(wj.step(f"r{px}"), after=fetch, name=f"resize-{px}") for px in (64, 256)]
    wf.add(wj.step("notify"), after=sizes, name="notify")
    run = await wf.enqueue()
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET status = 'running', progress = 0.4, "
        "progress_message = 'fetched 4 of 10' WHERE id = $1",
        run.job_ids["fetch"],
    )
    result = await asyncio.to_thread(koyojobs, "jobs", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    notify = lines[str(run.job_ids["notify"])]
    assert f"(step notify of workflow {run.id})" in notify
    assert notify.endswith("waiting: upstream steps resize-64, resize-256")
    assert "pending" in notify.split()
    assert "running 40%: fetched 4 of 10" in lines[str(run.job_ids["fetch"])]
    assert lines[str(run.job_ids["resize-64"])].endswith("waiting: upstream steps fetch")
    pending = await asyncio.to_thread(koyojobs, "jobs", "--status", "pending", "--dsn", dsn)
    assert len(pending.stdout.splitlines()) == 4  # a header and three steps


async def test_jobs_escapes_a_progress_message_and_a_step_name(dsn: str, broker: Broker) -> None:
    wf = Workflow("escapes")
    first = wf.add(wj.step("first"), name="first")
    wf.add(wj.step("second"), after=first, name="second")
    run = await wf.enqueue()
    # What a job, or a row written by hand, may hold: names are checked at add(),
    # a progress message is whatever the job reported.
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET status = 'running', progress = 0.5, "
        "progress_message = $2, step = $3 WHERE id = $1",
        run.job_ids["first"],
        "half\x1b[2J\rdone",
        "fi\x1b]0;pwned\x07rst",
    )
    result = await asyncio.to_thread(koyojobs, "jobs", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    assert not {"\x1b", "\r", "\x07"} & set(result.stdout), result.stdout
    assert "running 50%: half\\x1b[2J\\x0ddone" in result.stdout
    assert "(step fi\\x1b]0;pwned\\x07rst of workflow" in result.stdout
    assert "waiting: upstream steps fi\\x1b]0;pwned\\x07rst" in result.stdout


async def test_status_counts_pending_steps(dsn: str, broker: Broker) -> None:
    await Workflow().then(wj.step("a")).then(wj.step("b")).then(wj.step("c")).enqueue()
    [queue] = await broker.queue_status()
    assert (queue.queue, queue.pending, queue.ready, queue.running) == ("default", 2, 1, 0)
    result = await asyncio.to_thread(koyojobs, "status", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[:2]
    assert header.split()[:3] == ["queue", "pending", "ready"]
    assert row.split()[:3] == ["default", "2", "1"]
