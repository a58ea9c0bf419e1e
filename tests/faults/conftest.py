"""Fault-test helpers: CLI worker processes, a runs table, waiting on conditions."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from koyojobs import Broker
from tests.faults import jobs

REPO = Path(__file__).resolve().parents[2]


async def until(
    condition: Callable[[], Awaitable[Any]] | Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.02,
    details: Callable[[], str] | None = None,
) -> Any:
    """Poll ``condition`` (sync or async) until it is truthy; fail after ``timeout`` s.

    ``details()`` adds to the failure's message (a worker's log, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f":\n{details()}" if details is not None else ""
            raise AssertionError(f"{what} not met within {timeout}s{extra}")
        await asyncio.sleep(interval)


class WorkerProcess:
    """``koyojobs worker tests.faults.jobs`` in a child process; stderr is kept."""

    def __init__(self, dsn: str, module: str = "tests.faults.jobs", **options: Any) -> None:
        self.dsn = dsn
        self.module = module
        self.options = {
            "concurrency": 4,
            "lease": 1.0,
            "poll-interval": 0.2,
            "shutdown-grace": 1.0,
            **options,
        }
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self, wait_ready: bool = True) -> WorkerProcess:
        args = [f"--{k}={v}" for k, v in self.options.items()]
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from koyojobs.cli import run; run()",
            "--log-level",
            "INFO",
            "worker",
            self.module,
            "--dsn",
            self.dsn,
            *args,
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        if wait_ready:
            await self.wait_for_line("working", timeout=20)
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for line in self.process.stderr:
            self.lines.append(line.decode(errors="replace"))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        assert self.process is not None
        return self.process.returncode

    def output(self) -> str:
        return "".join(self.lines[-40:])

    async def wait_for_line(self, text: str, timeout: float = 10.0) -> None:
        def seen() -> bool:
            if any(text in line for line in self.lines):
                return True
            if self.returncode is not None:
                raise AssertionError(f"worker exited ({self.returncode}):\n{self.output()}")
            return False

        try:
            await until(seen, timeout, f"worker log line {text!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.output()}") from None

    async def wait(self, timeout: float) -> int:
        assert self.process is not None
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"worker {self.pid} still running after {timeout}s:\n{self.output()}"
            ) from None
        if self._reader is not None:
            await self._reader
        return code

    def signal(self, sig: int) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)

    async def kill(self) -> int:
        self.signal(signal.SIGKILL)
        return await self.wait(10)


@pytest.fixture
async def worker_processes(dsn: str) -> AsyncIterator[Callable[..., Awaitable[WorkerProcess]]]:
    """Start CLI workers on the test's database; any still alive are killed at the end."""
    started: list[WorkerProcess] = []

    async def start(wait_ready: bool = True, **options: Any) -> WorkerProcess:
        worker = WorkerProcess(dsn, **options)
        started.append(worker)
        return await worker.start(wait_ready)

    yield start
    for worker in started:
        if worker.process is not None:
            with contextlib.suppress(ProcessLookupError):
                worker.signal(signal.SIGKILL)
            await worker.process.wait()
            if worker._reader is not None:
                await worker._reader


@pytest.fixture
async def runs_table(broker: Broker) -> None:
    await broker.pool.execute(jobs.RUNS_TABLE)


async def fetch_runs(broker: Broker, job_id: int) -> list[tuple[int, int]]:
    rows = await broker.pool.fetch(
        "SELECT attempt, pid FROM fault_runs WHERE job_id = $1 ORDER BY attempt, started_at",
        job_id,
    )
    return [(r["attempt"], r["pid"]) for r in rows]
