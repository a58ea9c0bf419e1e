"""``koyojobs worker --processes N``: N worker processes under one supervisor.

A ``def`` job holds the GIL while it computes, so one process uses one core
however many jobs it runs at once. The supervisor starts N children, each
the same ``koyojobs worker`` command line re-executed (each with its own pool,
sized as a lone worker's would be), and stays small itself: it runs no job
and opens no connection.

- A child that ends while no stop was asked for is replaced, after a delay
  that doubles (0.5 s up to 30 s) while children keep dying within 10 s of
  their start, and a log line says how it ended. Exit status 75 is a child
  that ended itself to protect a lease it could no longer renew: replaced alike.
- The children run in sessions of their own, so a Ctrl-C at a terminal
  reaches the supervisor alone; it passes every SIGINT or SIGTERM on to each
  child as SIGTERM, so the children count the signals as a lone worker
  would (the first stops gracefully, the third at once), waits for them
  all, and exits 0 when each stopped cleanly.
- Each child watches a pipe from the supervisor: if the supervisor dies
  (SIGKILL), the pipe closes and the children stop gracefully, rather than
  run on unsupervised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time

from ..leases import EXIT_LOST_LEASE

__all__ = ["CHILD_ENV", "Supervisor", "child_of_supervisor", "watch_supervisor"]

CHILD_ENV = "KOYOJOBS_SUPERVISOR_FD"
"""Set in each child: the file descriptor of the pipe it watches. A process
that has it is a child, and runs as one worker whatever ``--processes`` says."""

FIRST_DELAY = 0.5
LONGEST_DELAY = 30.0
QUICK_DEATH = 10.0
"""A child that ends within this many seconds of its start doubles the next delay."""

log = logging.getLogger("koyojobs.cli")


def child_of_supervisor() -> bool:
    """Whether this process is a child of ``koyojobs worker --processes N``.

    Example:
        >>> child_of_supervisor()
        False
    """
    return CHILD_ENV in os.environ


def watch_supervisor() -> None:
    """In a child: stop gracefully (SIGTERM to itself) when the supervisor's pipe closes.

    The variable is removed, so that a process a job starts is no child.
    """
    given = os.environ.pop(CHILD_ENV, None)
    if given is None:
        return
    fd = int(given)

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 1):
                pass
        log.warning("the supervisor is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _child_command() -> list[str]:
    # The command line this process was started with, run again: the same
    # entry point (the koyojobs script, python -m koyojobs, manage.py koyojobs)
    # with the same options; CHILD_ENV makes it a single worker.
    return [sys.executable, *sys.orig_argv[1:]]


class Supervisor:
    """Keeps ``processes`` children of ``command`` running until a signal stops them all.

    Example:
        >>> Supervisor(2, ["true"]).processes
        2
    """

    def __init__(self, processes: int, command: list[str] | None = None) -> None:
        self.processes = processes
        self.command = command if command is not None else _child_command()
        self.signals = 0
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self.unclean: list[tuple[int, int]] = []
        self._stop = asyncio.Event()

    def run(self) -> int:
        """Supervise until stopped; the exit status for the supervisor's process."""
        return asyncio.run(self._run())

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        read_end, self._write_end = os.pipe()
        try:
            log.info("supervising worker processes", extra={"processes": self.processes})
            await asyncio.gather(*(self._slot(read_end) for _ in range(self.processes)))
        finally:
            os.close(read_end)
            os.close(self._write_end)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
                # Between here and the exit, a late signal must not turn a clean stop into a kill.
                signal.signal(sig, signal.SIG_IGN)
        if self.signals >= 3:
            logging.shutdown()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        if self.unclean:
            for pid, code in self.unclean:
                log.error("a worker process did not stop cleanly", extra={"pid": pid, "code": code})
            return 1
        log.info("all worker processes stopped")
        return 0

    def _on_signal(self, sig: int) -> None:
        self.signals += 1
        if self.signals == 1:
            log.info(
                "stopping the worker processes gracefully",
                extra={"signal": signal.Signals(sig).name},
            )
        elif self.signals == 2:
            log.warning(
                "a graceful stop is already under way; a third signal stops at once",
                extra={"signal": signal.Signals(sig).name},
            )
        self._stop.set()
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    async def _slot(self, read_end: int) -> None:
        delay = FIRST_DELAY
        while not self._stop.is_set():
            env = {**os.environ, CHILD_ENV: str(read_end)}
            started = time.monotonic()
            child = await asyncio.create_subprocess_exec(
                *self.command, env=env, pass_fds=(read_end,), start_new_session=True
            )
            self.children[child.pid] = child
            log.info("worker process started", extra={"pid": child.pid})
            for _ in range(self.signals):  # a signal came while it was starting
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
            code = await child.wait()
            del self.children[child.pid]
            if self._stop.is_set():
                # SIGTERM before its handlers were in place: it had claimed nothing.
                if code not in (0, -signal.SIGTERM) and self.signals < 3:
                    self.unclean.append((child.pid, code))
                return
            lived = time.monotonic() - started
            delay = FIRST_DELAY if lived >= QUICK_DEATH else delay
            how = (
                "ended itself to protect a lease it could not renew"
                if code == EXIT_LOST_LEASE
                else "ended"
            )
            log.warning(
                f"a worker process {how}; replacing it",
                extra={"pid": child.pid, "code": code, "after_s": round(delay, 1)},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, LONGEST_DELAY)
