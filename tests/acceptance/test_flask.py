"""docs/examples/flask_app.py: views enqueue with koyojobs.sync, a CLI worker runs the jobs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from docs.examples import flask_app
from koyojobs import Broker, Status, sync
from tests.conftest import wait_for_status

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli_worker(dsn: str) -> Iterator[subprocess.Popen[str]]:
    # A 30 s poll: past its first claim round, the worker gets jobs in time only by NOTIFY.
    command = ["koyojobs", "worker", "docs.examples.flask_app", "--queue", "emails"]
    worker = subprocess.Popen(
        [sys.executable, "-m", *command, "--poll-interval", "30", "--shutdown-grace", "2"],
        cwd=ROOT,
        env={**os.environ, "KOYOJOBS_DSN": dsn, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    for line in worker.stderr:
        if "working" in line:
            break
    else:
        raise AssertionError("the worker exited before working")
    # Keep reading, so that the worker never blocks on a full pipe.
    threading.Thread(target=worker.stderr.read, daemon=True).start()
    try:
        yield worker
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0


async def test_the_flask_views_enqueue_and_the_cli_worker_runs_the_jobs(
    dsn: str, broker: Broker, cli_worker: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOYOJOBS_DSN", dsn)
    sync.configure()
    await broker.pool.execute("CREATE TABLE signups (email text NOT NULL)")
    app = flask_app.create_app()
    app.config["TESTING"] = False  # a view that raises answers 500, as in production
    client = app.test_client()
    try:
        signed_up = await asyncio.to_thread(client.post, "/signups", data={"email": "a@b.c"})
        refused = await asyncio.to_thread(client.post, "/signups", data={"email": "nope"})
        subscribed = await asyncio.to_thread(client.post, "/newsletter", data={"email": "d@e.f"})
    finally:
        sync.configure()
    assert signed_up.status_code == 201
    assert refused.status_code == 500  # rolled back: no signup, no job
    assert subscribed.status_code == 202
    for response, email in ((signed_up, "a@b.c"), (subscribed, "d@e.f")):
        job_id = response.get_json()["welcome_job_id"]
        job = await wait_for_status(broker, job_id, Status.DONE, Status.FAILED, timeout=10)
        assert (job.status, job.result) == (Status.DONE, f"welcome sent to {email}")
    assert await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs") == 2
    assert await broker.pool.fetchval("SELECT array_agg(email) FROM signups") == ["a@b.c"]
