"""Workflow steps the dashboard tests run, in the worker the live server starts."""

from __future__ import annotations

import asyncio

from koyojobs import define_job, report_progress
from tests.dashboard.jobs import QUEUE


@define_job(name="tests.dashboard.wf.fetch", queue=QUEUE, max_attempts=1)
async def fetch(user: int) -> str:
    return f"profile {user}"


@define_job(name="tests.dashboard.wf.resize", queue=QUEUE, max_attempts=1)
async def resize(user: int, message: str = "half way") -> str:
    """Says it is half way (in ``message``), then works until cancelled (a minute at most)."""
    report_progress(0.5, message)
    await asyncio.sleep(60)
    return "resized"


@define_job(name="tests.dashboard.wf.notify", queue=QUEUE, max_attempts=1)
async def notify(user: int) -> None:
    return None
