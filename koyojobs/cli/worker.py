"""``koyojobs worker``: the worker process, its pool sizing, signals and graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from datetime import timedelta
from types import FrameType
from typing import Any

import click

from ..database import _redacted
from ..worker import Worker
from .base import (
    Connection,
    Failure,
    UsageError,
    connects,
    duration_seconds,
    import_job_module,
    main,
    reason,
)
from .supervisor import Supervisor, child_of_supervisor, watch_supervisor

_DEFAULT_CONCURRENCY = 8

OWN_CONNECTIONS_PER_QUEUE = 3
"""Pool connections a worker takes for itself, per queue, at most at once: putting
back unfinished jobs at stop in each of its (up to two) claim loops, and the
NOTIFY after a rescue. Its claim loops (which also renew leases), the LISTEN
connection and a VACUUM use connections of their own."""

OWN_CONNECTIONS_PER_PROCESS = 1
"""And one per process: the LISTEN connection's probe, a notification to itself."""


def own_connections(queues: int) -> int:
    """The pool connections ``koyojobs worker`` needs for itself, jobs aside.

    Example:
        >>> own_connections(queues=2)
        7
    """
    return queues * OWN_CONNECTIONS_PER_QUEUE + OWN_CONNECTIONS_PER_PROCESS


def default_pool_size(concurrency: int, queues: int = 1) -> int:
    """The most pool connections ``koyojobs worker`` may open: one per running job, and its own.

    Each running job may hold one connection of the broker's pool (to write
    its results, to enqueue), so a pool smaller than the jobs at once would
    make them take turns whatever ``--concurrency`` says, and make the
    worker's lease renewals wait behind them.

    Example:
        >>> default_pool_size(concurrency=16, queues=2)
        39
    """
    return queues * concurrency + own_connections(queues)


@main.command()
@click.argument("modules", nargs=-1)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    help="Queue to work; repeat for several [default: the queues of [tool.koyojobs], "
    "else default].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Jobs run at once, per queue [default: as [tool.koyojobs] declares, else 8].",
)
@click.option(
    "--pool-size",
    type=click.IntRange(min=1),
    help="Most connections in the pool that jobs and the worker share "
    "[default: queues x (concurrency + 3) + 1].",
)
@click.option(
    "--lease", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True
)
@click.option(
    "--poll-interval", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True
)
@click.option("--shutdown-grace", type=click.FloatRange(min=0), default=10.0, show_default=True)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    help="Worker processes under one supervisor, each with this command's queues, "
    "concurrency and pool, so CPU-bound def jobs use every core; a process that "
    "dies is replaced [default: as [tool.koyojobs] declares, else 1].",
)
@click.option(
    "--retention",
    "retention_options",
    multiple=True,
    metavar="STATUS=AGE",
    help="Keep finished jobs of STATUS (done, failed, cancelled) for AGE (1h, 7d...) or "
    "'none' (for good) before this worker prunes them; repeat per status "
    "[default: done=1d failed=7d cancelled=7d, or as [tool.koyojobs.retention] says].",
)
@click.option(
    "--vacuum-threshold",
    type=click.IntRange(min=0),
    default=50_000,
    show_default=True,
    help="VACUUM the jobs table past this many dead rows; 0 leaves it to autovacuum.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics of this process's attempts at "
    "http://--metrics-host:PORT/metrics (needs the extra: koyojobs[metrics]).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="The address --metrics-port listens on.",
)
@connects
def worker(
    modules: tuple[str, ...],
    queues: tuple[str, ...],
    concurrency: int | None,
    pool_size: int | None,
    lease: float,
    poll_interval: float,
    shutdown_grace: float,
    processes: int | None,
    vacuum_threshold: int,
    retention_options: tuple[str, ...],
    metrics_port: int | None,
    metrics_host: str,
    connection: Connection,
) -> None:
    """Import MODULES (which define jobs) and work QUEUEs until SIGINT or SIGTERM.

    With no MODULES, the modules and queues (with their concurrency) come
    from [tool.koyojobs] in ./pyproject.toml: one worker per declared queue.
    Options given here win over the file. Each worker also enqueues the
    ticks of the periodic jobs of its queue.

    A second signal during the graceful stop is logged and changes nothing; a
    third stops the process at once (its running jobs run again once their
    leases lapse). With ``--processes N``, N such workers run under one
    supervisor that replaces any that dies and passes the signals on.
    """
    # First of all, so that no signal from here to the exit kills the process
    # by default: asyncio's own handlers go with its loop, before the exit.
    signals = _StopSignals()
    signals.install()
    declared = connection.deployment
    modules = modules or declared.modules
    if not modules:
        raise UsageError(
            "no job modules: name them (koyojobs worker myapp.jobs) "
            "or declare modules in [tool.koyojobs] of pyproject.toml"
        )
    retention = parse_retention(declared.retention, retention_options)
    queues = tuple(dict.fromkeys(queues or declared.queues or ("default",)))
    slots = {q: concurrency or declared.queues.get(q, _DEFAULT_CONCURRENCY) for q in queues}
    if pool_size is None:
        pool_size = declared.pool_size
    if pool_size is None:
        pool_size = sum(slots.values()) + own_connections(len(queues))
    elif pool_size < own_connections(len(queues)):
        raise UsageError(
            f"--pool-size {pool_size} is too small: a worker with {len(queues)} "
            f"queue(s) takes up to {own_connections(len(queues))} for itself, "
            "plus one for each job that uses the pool at once"
        )
    sys.path.insert(0, os.getcwd())
    for module in modules:
        import_job_module(module)
    log = logging.getLogger("koyojobs.cli")
    processes = processes or declared.processes or 1
    if processes > 1 and metrics_port is not None:
        # Each child would bind the same port; their counters are the process's own.
        raise UsageError(
            "--metrics-port serves one process's counters: with --processes, run a "
            "worker per port instead, or leave --metrics-port out"
        )
    if child_of_supervisor():
        watch_supervisor()
    elif processes > 1:
        raise SystemExit(Supervisor(processes).run())
    metrics_server = None if metrics_port is None else _serve_metrics(metrics_host, metrics_port)

    async def serve() -> None:
        stop = signals.attach()
        connected = asyncio.Event()
        work = asyncio.ensure_future(_work(stop, connected))
        asked = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((work, asked), return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and not connected.is_set():
                # Asked to stop while connecting (a database that does not
                # answer holds a connect for a minute): nothing runs yet.
                work.cancel()
            await work
        except (Failure, asyncio.CancelledError):
            if not stop.is_set():
                raise
            # What failed on the way (the database refused, say) stopped
            # nothing that ran: a supervisor stopping children that keep
            # failing to start exits cleanly too.
            log.info("stopped before it started")
        finally:
            asked.cancel()
            signals.detach()

    async def _work(stop: asyncio.Event, connected: asyncio.Event) -> None:
        async with connection.broker(min_size=1, max_size=pool_size, retention=retention) as broker:
            connected.set()
            if stop.is_set():
                return  # asked to stop while connecting: claim nothing
            workers = [
                Worker(
                    broker,
                    queue=q,
                    pool_size=slots[q],
                    lease=lease,
                    poll_interval=poll_interval,
                    shutdown_grace=shutdown_grace,
                    vacuum_threshold=vacuum_threshold or None,
                    # This process exits after its stop: it may end itself too.
                    exit_on_lost_lease=True,
                )
                for q in queues
            ]
            await _start_workers(workers, connection)
            log.info(
                "working",
                extra={
                    "queues": ",".join(f"{q}:{n}" for q, n in slots.items()),
                    "pool_size": pool_size,
                },
            )
            await stop.wait()
            log.info("stopping gracefully")
            await asyncio.gather(*(w.stop() for w in workers))

    try:
        asyncio.run(serve())
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
    _exit_past_stuck_job_threads()


def _serve_metrics(host: str, port: int) -> Any:
    try:
        from .. import metrics
    except ImportError as exc:
        raise Failure(
            f"--metrics-port needs the extra: pip install 'koyojobs[metrics]' ({exc})"
        ) from None
    try:
        server = metrics.serve(port, host)
    except OSError as exc:
        raise Failure(f"cannot serve metrics on {host}:{port}: {reason(exc)}") from None
    metrics.install()
    logging.getLogger("koyojobs.cli").info(
        "serving metrics", extra={"url": f"http://{host}:{server.server_port}/metrics"}
    )
    return server


async def _start_workers(workers: list[Worker], connection: Connection) -> None:
    started: list[Worker] = []
    try:
        for w in workers:
            started.append(w)
            await w.start()
    except Exception as exc:
        # Worker.start only opens the LISTEN connection on the way.
        await asyncio.gather(*(w.stop() for w in started), return_exceptions=True)
        where = _redacted(connection.listen_dsn or connection.dsn)
        raise Failure(f"cannot LISTEN on {where}: {reason(exc)}") from None


class _StopSignals:
    """SIGINT and SIGTERM for ``koyojobs worker``, from its start until the process exits.

    The first asks for a graceful stop; a second is logged and changes
    nothing; a third ends the process at once, by that signal's default action.
    Python-level handlers rather than asyncio's: the loop removes its own
    handlers when it closes, and a signal between then and the exit would kill
    the process after a clean stop. A wake-up fd wakes the loop when the signal
    lands on another thread (a plain ``def`` job's).
    """

    def __init__(self) -> None:
        self.received = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def attach(self) -> asyncio.Event:
        """The event the running loop waits on; set at once if a signal came already."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.received:
            self._stop.set()
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._wakeup = (reader, writer)
        self._loop.add_reader(reader.fileno(), self._drain)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        return self._stop

    def detach(self) -> None:
        """Before the loop closes; the handlers stay."""
        signal.set_wakeup_fd(-1)
        if self._loop is not None and self._wakeup is not None:
            self._loop.remove_reader(self._wakeup[0].fileno())
            for sock in self._wakeup:
                sock.close()
        self._loop, self._stop, self._wakeup = None, None, None

    def _drain(self) -> None:
        # The bytes only woke the loop; the Python handler does the work.
        assert self._wakeup is not None
        with contextlib.suppress(OSError):
            while self._wakeup[0].recv(4096):
                pass

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        name = signal.Signals(signum).name
        log = logging.getLogger("koyojobs.cli")
        if self.received == 1:
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
            return
        if self.received == 2:
            log.warning(
                "a graceful stop is already under way; a third signal stops at once",
                extra={"signal": name},
            )
            return
        log.error(
            "stopping at once, without waiting for running jobs; "
            "they run again when their leases lapse",
            extra={"signal": name},
        )
        logging.shutdown()
        sys.stderr.flush()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _exit_past_stuck_job_threads() -> None:
    # A plain def job's thread cannot be stopped, and Python waits for every
    # pool thread at exit: a job stuck past the grace would keep the process
    # alive. Its run is already put back, so exit without waiting for it.
    stuck = [t for t in threading.enumerate() if t.name.startswith("koyojobs-")]
    for thread in stuck:
        thread.join(timeout=0.1)  # idle pool threads leave at once
    stuck = [t for t in stuck if t.is_alive()]
    if stuck:
        logging.getLogger("koyojobs.cli").warning(
            "exiting with job threads still running", extra={"threads": len(stuck)}
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def parse_retention(
    declared: dict[str, str], given: tuple[str, ...]
) -> dict[str, timedelta | None]:
    """Ages per finished status: [tool.koyojobs.retention], then ``--retention`` over it."""
    written = [(f"[tool.koyojobs] retention.{k}", k, v) for k, v in declared.items()]
    for option in given:
        status, equals, age = option.partition("=")
        if not equals:
            raise UsageError(f"--retention {option!r}: write STATUS=AGE, such as done=1d")
        written.append((f"--retention {option!r}", status.strip(), age.strip()))
    retention: dict[str, timedelta | None] = {}
    for where, status, age in written:
        if status not in ("done", "failed", "cancelled"):
            raise UsageError(f"{where}: {status!r} is not done, failed or cancelled")
        if age.lower() in ("none", "keep"):
            retention[status] = None
            continue
        try:
            retention[status] = timedelta(seconds=duration_seconds(age))
        except click.BadParameter as exc:
            raise UsageError(f"{where}: {exc.message}") from None
    return retention
