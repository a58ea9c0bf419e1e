"""``koyojobs worker --metrics-port``: the process's attempts, scraped and parsed."""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from koyojobs import Broker, Status
from koyojobs.testing import _free_port
from tests import jobs
from tests.conftest import wait_for_status
from tests.worker_process import start_worker, stop_worker


async def test_the_worker_serves_its_attempts_to_prometheus(dsn: str, broker: Broker) -> None:
    port = _free_port()
    worker = await start_worker(
        dsn, "--metrics-port", str(port), "--poll-interval", "0.2", module="tests.jobs",
        log_level=None,
    )  # fmt: skip
    try:
        done = [await jobs.echo(i) for i in range(3)]
        failed = await jobs.always_fails()
        for job_id in done:
            await wait_for_status(broker, job_id, Status.DONE, timeout=30)
        await wait_for_status(broker, failed, Status.FAILED, timeout=30)
        text = ""
        deadline = time.monotonic() + 10
        while "koyojobs_attempts_total" not in text:
            assert time.monotonic() < deadline, text
            try:
                text = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics")).text
            except httpx.TransportError:
                await asyncio.sleep(0.05)  # the port opens as the worker starts
    finally:
        log = await stop_worker(worker)
    assert worker.returncode == 0, log
    families = {f.name: f for f in text_string_to_metric_families(text)}
    attempts = {
        (s.labels["name"], s.labels["outcome"]): s.value
        for s in families["koyojobs_attempts"].samples
        if s.name == "koyojobs_attempts_total"
    }
    assert attempts[("tests.jobs.echo", "done")] == 3
    assert attempts[("tests.jobs.always_fails", "retried")] == 1
    assert attempts[("tests.jobs.always_fails", "failed")] == 1
    durations = families["koyojobs_attempt_duration_seconds"]
    assert durations.type == "histogram"
    counts = {
        s.labels["name"]: s.value
        for s in durations.samples
        if s.name == "koyojobs_attempt_duration_seconds_count"
    }
    assert counts["tests.jobs.echo"] == 3
    assert "process_cpu_seconds_total" in text  # the process's own metrics beside them
