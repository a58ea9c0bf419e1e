"""``koyojobs worker`` in a child process, as a user starts it, for the tests that need one.

The acceptance tests (the command as users run it) and the fault tests (workers
killed, cut off, restarted) share it: start the process, read its log as it
comes, wait for a line ("working": it claims), signal it, wait for its exit.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "WorkerProcess", "start_worker", "stop_worker", "until"]


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
    """``python -m koyojobs [--log-level LEVEL] worker ARGS...``; its stderr (the log) is kept.

    ``env`` replaces the environment (``None``: this process's); ``cwd`` is
    where it runs (the repository: the tests' job modules import from there).
    """

    def __init__(
        self,
        *args: str,
        log_level: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO,
    ) -> None:
        self.args = args
        self.log_level = log_level
        self.env = None if env is None else dict(env)
        self.cwd = cwd
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self, wait_ready: bool = True) -> Self:
        """Start it; with ``wait_ready``, return once it logged "working" (it claims)."""
        level = [] if self.log_level is None else ["--log-level", self.log_level]
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "koyojobs",
            *level,
            "worker",
            *self.args,
            cwd=self.cwd,
            env=self.env,
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
        """The log's last 40 lines (for a failure's message)."""
        return "".join(self.lines[-40:])

    def log(self) -> str:
        """The whole log so far."""
        return "".join(self.lines)

    async def wait_for_line(self, text: str, timeout: float = 10.0) -> None:
        """Wait until a line of the log holds ``text``; fail if the process exits first."""

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
        """Its exit code once it exited, its log then read to the end."""
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

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful stop) if it still runs; its exit code."""
        self.signal(signal.SIGTERM)
        return await self.wait(timeout)

    async def kill(self) -> int:
        self.signal(signal.SIGKILL)
        return await self.wait(10)


async def start_worker(
    dsn: str,
    *args: str,
    module: str = "tests.acceptance.cli_jobs",
    log_level: str | None = "INFO",
    wait_ready: bool = True,
) -> WorkerProcess:
    """``koyojobs worker MODULE --dsn DSN ARGS...``, once it logged "working" if ``wait_ready``."""
    return await WorkerProcess(module, "--dsn", dsn, *args, log_level=log_level).start(wait_ready)


async def stop_worker(worker: WorkerProcess, timeout: float = 60.0) -> str:
    """SIGTERM (if it still runs); its whole log once it exited."""
    await worker.stop(timeout)
    return worker.log()
