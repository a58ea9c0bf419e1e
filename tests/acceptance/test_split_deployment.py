"""The split FastAPI recipe (docs/examples/split_web.py and split_jobs.py) as the
Components page runs it: the web app with a broker and the dashboard only, and
a separate ``koyojobs worker`` process that runs the jobs it enqueues."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from docs.examples import split_jobs, split_web
from koyojobs import Broker, Status

ROOT = Path(__file__).resolve().parents[2]
STAFF = {"authorization": "Bearer s3cret"}


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client


async def test_the_web_process_enqueues_and_a_worker_process_runs_it(
    dsn: str, broker: Broker
) -> None:
    app = split_web.create_app(dsn, staff_token="s3cret")
    async with serve(app) as client:
        response = await client.post("/signups", json={"email": "ada@example.com"})
        assert response.status_code == 202, response.text
        job_id = response.json()["welcome_job_id"]
        # No worker in the web process: the job waits for the worker process.
        job = await broker.get_job(job_id)
        assert job is not None and job.status is Status.READY

        # The page's worker command, from the project's folder.
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "koyojobs",
            "worker",
            "docs.examples.split_jobs",
            "--queue",
            split_jobs.EMAILS,
            cwd=ROOT,
            env={**os.environ, "KOYOJOBS_DSN": dsn},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            job = await broker.wait(job_id, timeout=30)
        finally:
            worker.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(worker.communicate(), timeout=30)
        assert worker.returncode == 0, stderr.decode()
        assert job.status is Status.DONE, job.last_error
        assert job.result == "welcome sent to ada@example.com"

        # The dashboard, mounted in the web app, shows it to staff only.
        page = await client.get(f"/admin/jobs/jobs/{job_id}", headers=STAFF)
        assert page.status_code == 200
        assert "examples.split.send_welcome" in page.text
        assert (await client.get(f"/admin/jobs/jobs/{job_id}")).status_code == 403


def test_the_web_app_reads_its_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KOYOJOBS_DSN", "postgresql://localhost/app")
    monkeypatch.setenv("DASHBOARD_TOKEN", "t")
    assert isinstance(split_web.create_app(), FastAPI)
