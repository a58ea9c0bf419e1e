"""Workflow steps for the fault tests (importable by CLI workers as tests.faults.workflow_jobs).

Each step appends "start" and "end" lines with the wall clock to a log file
(``O_APPEND``, one ``write`` per line: lines from many processes never
interleave), so the test judges the order from the steps' own records.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

from koyojobs import current_job, define_job


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@define_job(name="faults.wf.logged", max_attempts=20, backoff=lambda attempt: 0.1)
async def logged(path: str, workflow: int, step: str) -> str:
    job = current_job()
    assert job is not None
    _append(path, f"start {workflow} {step} {time.time():.6f} {job.attempt} {os.getpid()}\n")
    await asyncio.sleep(random.uniform(0.0, 0.05))
    _append(path, f"end {workflow} {step} {time.time():.6f} {job.attempt} {os.getpid()}\n")
    return step
