"""The ``koyojobs`` command: run workers, migrate, inspect, retry and cancel.

Thin over the public API: each command opens a broker on ``--dsn`` (or
``KOYOJOBS_DSN``), does one thing, and closes it. What goes wrong outside the
program (a database that is missing or refuses, a malformed DSN, a job module
that raises) is told in one line, with exit status 1; a wrong invocation
exits 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
import re
import signal
import socket
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import asyncpg
import click

from ._version import __version__
from .broker import Broker
from .config import ConfigError, Deployment, load_deployment
from .database import Database, _redacted
from .models import Job, QueueStatus, Status
from .periodic import periodic_jobs
from .schema import migrate as apply_migrations
from .sql import QUERIES
from .worker import Worker

T = TypeVar("T")

_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({})))


class _UsageError(click.ClickException):
    """A one-line usage error with exit status 2 (click's UsageError adds the usage text)."""

    exit_code = 2


class _ExtrasFormatter(logging.Formatter):
    """Appends a record's ``extra`` details as key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}
        extras.pop("message", None)
        extras.pop("asctime", None)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_ExtrasFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("koyojobs")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _require_dsn(dsn: str | None) -> str:
    if not dsn:
        raise _UsageError("no database given: pass --dsn or set KOYOJOBS_DSN")
    return dsn


def _reason(exc: BaseException) -> str:
    """What went wrong, in one line."""
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused ({exc})"
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


@dataclass(frozen=True)
class _Connection:
    """Where and how a command connects: the options every such command shares."""

    dsn: str
    listen_dsn: str | None
    statement_cache_size: int | None
    deployment: Deployment

    @contextlib.asynccontextmanager
    async def broker(
        self,
        *,
        migrate: bool = True,
        retention: dict[str, timedelta | None] | None = None,
        **pool_options: Any,
    ) -> AsyncIterator[Broker]:
        """A started broker on a pool of its own; what fails on the way is one line."""
        where = _redacted(self.dsn)
        try:
            database = Database(
                self.dsn, statement_cache_size=self.statement_cache_size, **pool_options
            )
        except ValueError as exc:
            raise _Failure(_reason(exc)) from None
        try:
            await database.start()
        except Exception as exc:  # refused, unknown database or role, malformed DSN...
            raise _Failure(f"cannot connect to {where}: {_reason(exc)}") from None
        try:
            broker = Broker(
                database,
                migrate=migrate,
                listen_dsn=self.listen_dsn,
                secret=self.deployment.secret,
                retention=retention,
            )
            try:
                await broker.start()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                raise _Failure(f"cannot migrate the schema on {where}: {_reason(exc)}") from None
            try:
                yield broker
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                raise _Failure(f"database error on {where}: {_reason(exc)}") from None
            finally:
                await broker.stop()
        finally:
            await database.stop()


class _Failure(click.ClickException):
    """Something outside the command went wrong: one line, exit status 1."""

    exit_code = 1


def _connects(command: Callable[..., T]) -> Callable[..., T]:
    """Give a command the connection options, passed to it as one ``connection``."""

    @functools.wraps(command)
    def with_connection(
        *args: Any,
        dsn: str | None,
        listen_dsn: str | None,
        statement_cache_size: int | None,
        **kwargs: Any,
    ) -> T:
        deployment = _deployment()
        # The command line (and KOYOJOBS_*) first, then what pyproject.toml declares.
        if dsn is None:
            dsn = os.environ.get(deployment.dsn_env) if deployment.path else None
        if listen_dsn is None and deployment.listen_dsn_env:
            listen_dsn = os.environ.get(deployment.listen_dsn_env)
        if statement_cache_size is None:
            statement_cache_size = deployment.statement_cache_size
        if not dsn and deployment.dsn_env != "KOYOJOBS_DSN":
            raise _UsageError(
                f"no database given: pass --dsn, or set KOYOJOBS_DSN or {deployment.dsn_env} "
                f"(dsn_env in {deployment.path})"
            )
        connection = _Connection(_require_dsn(dsn), listen_dsn, statement_cache_size, deployment)
        return command(*args, connection=connection, **kwargs)

    options = (
        click.option(
            "--dsn", envvar="KOYOJOBS_DSN", help="PostgreSQL URL (default: $KOYOJOBS_DSN)."
        ),
        click.option(
            "--listen-dsn",
            envvar="KOYOJOBS_LISTEN_DSN",
            help="Straight to PostgreSQL, for the worker's LISTEN connection and VACUUM, "
            "when --dsn is a transaction pooler such as PgBouncer "
            "(default: $KOYOJOBS_LISTEN_DSN, else --dsn).",
        ),
        click.option(
            "--statement-cache-size",
            envvar="KOYOJOBS_STATEMENT_CACHE_SIZE",
            type=click.IntRange(min=0),
            help="asyncpg's prepared statements per connection; 0 behind a transaction "
            "pooler (default: $KOYOJOBS_STATEMENT_CACHE_SIZE, else the DSN's "
            "statement_cache_size, else 100).",
        ),
    )
    wrapped: Callable[..., T] = with_connection
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped


def _deployment() -> Deployment:
    """``[tool.koyojobs]`` of ./pyproject.toml; a malformed one is a usage error.

    A program that runs the CLI may pass its own as click's ``obj`` instead
    (``manage.py koyojobs`` passes ``settings.KOYOJOBS``).
    """
    context = click.get_current_context(silent=True)
    given = context.find_object(Deployment) if context is not None else None
    if given is not None:
        return given
    try:
        return load_deployment(Path.cwd() / "pyproject.toml")
    except ConfigError as exc:
        raise _UsageError(str(exc)) from None


def _run(
    connection: _Connection, action: Callable[[Broker], Awaitable[T]], migrate: bool = True
) -> T:
    async def main() -> T:
        async with connection.broker(migrate=migrate) as broker:
            return await action(broker)

    return asyncio.run(main())


@click.group()
@click.version_option(
    __version__, "--version", prog_name="koyojobs", message="%(prog)s %(version)s"
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="INFO logs a line per finished job; WARNING only failures and trouble.",
)
def main(log_level: str) -> None:
    """koyojobs: a job queue on PostgreSQL."""
    _setup_logging(log_level)


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
@_connects
def worker(
    modules: tuple[str, ...],
    queues: tuple[str, ...],
    concurrency: int | None,
    pool_size: int | None,
    lease: float,
    poll_interval: float,
    shutdown_grace: float,
    vacuum_threshold: int,
    retention_options: tuple[str, ...],
    connection: _Connection,
) -> None:
    """Import MODULES (which define jobs) and work QUEUEs until SIGINT or SIGTERM.

    With no MODULES, the modules and queues (with their concurrency) come
    from [tool.koyojobs] in ./pyproject.toml: one worker per declared queue.
    Options given here win over the file. Each worker also enqueues the
    ticks of the periodic jobs of its queue.

    A second signal during the graceful stop is logged and changes nothing; a
    third stops the process at once (its running jobs run again once their
    leases lapse).
    """
    # First of all, so that no signal from here to the exit kills the process
    # by default: asyncio's own handlers go with its loop, before the exit.
    signals = _StopSignals()
    signals.install()
    declared = connection.deployment
    modules = modules or declared.modules
    if not modules:
        raise _UsageError(
            "no job modules: name them (koyojobs worker myapp.jobs) "
            "or declare modules in [tool.koyojobs] of pyproject.toml"
        )
    retention = _retention(declared.retention, retention_options)
    queues = tuple(dict.fromkeys(queues or declared.queues or ("default",)))
    slots = {q: concurrency or declared.queues.get(q, _DEFAULT_CONCURRENCY) for q in queues}
    if pool_size is None:
        pool_size = declared.pool_size
    if pool_size is None:
        pool_size = sum(slots.values()) + own_connections(len(queues))
    elif pool_size < own_connections(len(queues)):
        raise _UsageError(
            f"--pool-size {pool_size} is too small: a worker with {len(queues)} "
            f"queue(s) takes up to {own_connections(len(queues))} for itself, "
            "plus one for each job that uses the pool at once"
        )
    sys.path.insert(0, os.getcwd())
    for module in modules:
        _import_job_module(module)
    log = logging.getLogger("koyojobs.cli")

    async def serve() -> None:
        stop = signals.attach()
        try:
            async with connection.broker(
                min_size=1, max_size=pool_size, retention=retention
            ) as broker:
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
        finally:
            signals.detach()

    asyncio.run(serve())
    _exit_past_stuck_job_threads()


async def _start_workers(workers: list[Worker], connection: _Connection) -> None:
    started: list[Worker] = []
    try:
        for w in workers:
            started.append(w)
            await w.start()
    except Exception as exc:
        # Worker.start only opens the LISTEN connection on the way.
        await asyncio.gather(*(w.stop() for w in started), return_exceptions=True)
        where = _redacted(connection.listen_dsn or connection.dsn)
        raise _Failure(f"cannot LISTEN on {where}: {_reason(exc)}") from None


def _import_job_module(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise _UsageError(f"cannot import job module {module!r}: {exc}") from None
    except Exception as exc:
        raise _Failure(
            f"job module {module!r} raised {type(exc).__name__} on import: "
            f"{_reason(exc)}{_where_raised(exc)}"
        ) from None


def _where_raised(exc: BaseException) -> str:
    # A SyntaxError names its file and line in its message already.
    if isinstance(exc, SyntaxError):
        return ""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {os.path.relpath(last.filename)}:{last.lineno})"


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


@main.command()
@_connects
def migrate(connection: _Connection) -> None:
    """Create or upgrade the schema."""

    async def action(broker: Broker) -> list[int]:
        return await apply_migrations(broker.pool)

    applied = _run(connection, action, migrate=False)
    click.echo(f"applied migrations: {applied}" if applied else "schema is up to date")


def _table(rows: list[tuple[str, ...]], right: frozenset[int] = frozenset()) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        click.echo("  ".join(cells).rstrip())


def _age(seconds: float | None) -> str:
    # The units --older-than reads: "min", never a bare "m".
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    for unit, size, sub, sub_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "min", 60),
        ("min", 60, "s", 1),
    ):
        if seconds >= size:
            rest = (seconds % size) // sub_size
            return f"{seconds // size}{unit}{rest}{sub}" if rest else f"{seconds // size}{unit}"
    return f"{seconds}s"


@main.command()
@_connects
def status(connection: _Connection) -> None:
    """Show job counts per queue and status, the oldest due job's wait, and pauses."""

    async def action(broker: Broker) -> list[QueueStatus]:
        return await broker.queue_status()

    queues = _run(connection, action)
    if not queues:
        click.echo("no jobs")
        return
    header = ("queue", "ready", "running", "done", "failed", "cancelled", "oldest ready", "")
    rows = [
        (
            q.queue,
            str(q.ready),
            str(q.running),
            str(q.done),
            str(q.failed),
            str(q.cancelled),
            _age(q.oldest_ready_seconds),
            "paused" if q.paused else "",
        )
        for q in queues
    ]
    _table([header, *rows], right=frozenset(range(1, 7)))


@main.command()
@click.option(
    "--status",
    "status_",
    type=click.Choice([s.value for s in Status]),
    help="Only jobs with this status.",
)
@click.option("--queue", help="Only jobs of this queue.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@_connects
def jobs(status_: str | None, queue: str | None, limit: int, connection: _Connection) -> None:
    """List the newest jobs, with the first line of their last error.

    For a due job that is not running, the last column says instead what
    holds it back: its queue paused, or its key at a concurrency or rate limit.
    """

    async def action(broker: Broker) -> list[Job]:
        return await broker.list_jobs(status=status_, queue=queue, limit=limit)

    found = _run(connection, action)
    if not found:
        click.echo("no jobs")
        return
    header = ("id", "name", "queue", "status", "attempts", "finished", "last error / waiting")
    rows = [
        (
            str(j.id),
            j.name,
            j.queue,
            j.status.value,
            f"{j.attempts}/{j.max_attempts}" + (f" +{j.snoozes} snoozes" if j.snoozes else ""),
            "-" if j.finished_at is None else j.finished_at.to_datetime_string(),
            f"waiting: {j.waiting}"
            if j.waiting
            else (j.last_error or "").splitlines()[0][:100]
            if j.last_error
            else "",
        )
        for j in found
    ]
    _table([header, *rows], right=frozenset({0}))


_DURATION_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[a-z]*)", re.IGNORECASE)
_DURATION_HINT = "a duration such as 90s, 30min, 12h, 7d or 2w"


def _retention(declared: dict[str, str], given: tuple[str, ...]) -> dict[str, timedelta | None]:
    """Ages per finished status: [tool.koyojobs.retention], then ``--retention`` over it."""
    written = [(f"[tool.koyojobs] retention.{k}", k, v) for k, v in declared.items()]
    for option in given:
        status, equals, age = option.partition("=")
        if not equals:
            raise _UsageError(f"--retention {option!r}: write STATUS=AGE, such as done=1d")
        written.append((f"--retention {option!r}", status.strip(), age.strip()))
    retention: dict[str, timedelta | None] = {}
    for where, status, age in written:
        if status not in ("done", "failed", "cancelled"):
            raise _UsageError(f"{where}: {status!r} is not done, failed or cancelled")
        if age.lower() in ("none", "keep"):
            retention[status] = None
            continue
        try:
            retention[status] = timedelta(seconds=_seconds(age))
        except click.BadParameter as exc:
            raise _UsageError(f"{where}: {exc.message}") from None
    return retention


def _seconds(text: str) -> float:
    """Seconds in a duration; every number needs one of the units of ``_DURATION_UNITS``.

    A bare ``m`` is refused: read as minutes by some and months by others, it
    once deleted far more than was meant. Months are never accepted.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        if text.strip().startswith("-"):
            raise click.BadParameter(f"{text!r} is negative")
        raise click.BadParameter(f"{text!r} is not {_DURATION_HINT}")
    number, unit = match["number"], match["unit"]
    if unit == "":
        raise click.BadParameter(f"{text!r} has no unit: write {_DURATION_HINT}")
    if unit.lower() in ("m", "mo", "mon", "month", "months"):
        raise click.BadParameter(
            f"{text!r} is ambiguous: write {number}min for minutes (months are not accepted)"
        )
    if unit not in _DURATION_UNITS:
        raise click.BadParameter(f"{text!r} is not {_DURATION_HINT}")
    return float(number) * _DURATION_UNITS[unit]


@main.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="Age, with a unit: s, min, h, d or w (such as 12h or 7d).",
)
@click.option(
    "--dry-run", is_flag=True, help="Count, per status, what would be deleted; delete nothing."
)
@_connects
def prune(older_than: str, dry_run: bool, connection: _Connection) -> None:
    """Delete jobs that finished (done, failed, cancelled) longer ago than --older-than."""
    try:
        seconds = _seconds(older_than)
    except click.BadParameter as exc:
        exc.param_hint = "'--older-than'"
        raise

    if dry_run:

        async def count(broker: Broker) -> dict[Status, int]:
            return await broker.prunable(seconds)

        counts = _run(connection, count)
        details = ", ".join(f"{n} {s.value}" for s, n in counts.items())
        click.echo(f"would delete {sum(counts.values())} finished jobs ({details})")
        return

    async def delete(broker: Broker) -> int:
        return await broker.prune(seconds)

    click.echo(f"deleted {_run(connection, delete)} finished jobs")


_FINISHED = frozenset({Status.DONE, Status.FAILED, Status.CANCELLED})


def _job_command(
    verb: str,
    method: Callable[[Broker, int], Awaitable[bool]],
    acts_on: frozenset[Status],
    done: str,
    refused: Callable[[int, Status], str],
) -> Callable[..., None]:
    @click.argument("job_id", type=int)
    @_connects
    def command(job_id: int, connection: _Connection) -> None:
        async def action(broker: Broker) -> str | None:
            # The job may change between the refusal and the look at why:
            # try again while the status says it would work now.
            for _ in range(3):
                if await method(broker, job_id):
                    return None
                found = await broker.pool.fetchval(QUERIES["job_status"], job_id)
                if found is None:
                    return f"job {job_id} does not exist"
                if Status(found) not in acts_on:
                    return refused(job_id, Status(found))
                holder = await broker.unique_holder(job_id)
                if holder is not None:
                    return f"job {job_id} is unique and job {holder} holds its key now"
            return f"job {job_id} keeps changing; {verb} it again"

        failure = _run(connection, action)
        if failure is not None:
            raise _Failure(failure)
        click.echo(f"job {job_id} {done}")

    command.__doc__ = f"{verb.capitalize()} job JOB_ID."
    return command


def _retry(broker: Broker, job_id: int) -> Awaitable[bool]:
    return broker.retry_job(job_id)


def _cancel(broker: Broker, job_id: int) -> Awaitable[bool]:
    return broker.cancel(job_id)


main.command("retry")(
    _job_command(
        "retry",
        _retry,
        _FINISHED,
        "is ready to run again",
        lambda job_id, status: (
            f"job {job_id} is {status.value}, not finished: "
            "only a done, failed or cancelled job can be retried"
        ),
    )
)
main.command("cancel")(
    _job_command(
        "cancel",
        _cancel,
        frozenset({Status.READY, Status.RUNNING}),
        "is cancelled",
        lambda job_id, status: f"job {job_id} already finished ({status.value}): nothing to cancel",
    )
)


def _queue_command(verb: str, method: Callable[[Broker, str], Awaitable[None]]) -> Any:
    @click.argument("queue")
    @_connects
    def command(queue: str, connection: _Connection) -> None:
        async def action(broker: Broker) -> None:
            await method(broker, queue)

        _run(connection, action)
        click.echo(f"queue {queue!r} {verb}")

    return command


main.command("pause")(_queue_command("paused", Broker.pause))
main.command("resume")(_queue_command("resumed", Broker.resume))
main.commands["pause"].help = (
    "Pause QUEUE: its workers in every process claim nothing more (running jobs "
    "finish; enqueueing goes on) until `koyojobs resume QUEUE`. Stored: it outlives restarts."
)
main.commands["resume"].help = "Resume a paused QUEUE: its workers wake and claim again."


@main.command()
@click.argument("modules", nargs=-1)
@_connects
def schedules(modules: tuple[str, ...], connection: _Connection) -> None:
    """List the periodic jobs MODULES define, with their last and next ticks.

    With no MODULES, the modules of [tool.koyojobs] in ./pyproject.toml.
    """
    modules = modules or connection.deployment.modules
    if not modules:
        raise _UsageError("no job modules: name them or declare modules in [tool.koyojobs]")
    sys.path.insert(0, os.getcwd())
    for module in modules:
        _import_job_module(module)
    jobs = periodic_jobs()
    if not jobs:
        click.echo("no periodic jobs")
        return

    async def action(broker: Broker) -> tuple[Any, dict[str, Any]]:
        now = await broker.pool.fetchval(QUERIES["database_now"])
        rows = await broker.pool.fetch(QUERIES["schedules"], [job.name for job in jobs])
        return now, {row["name"]: row for row in rows}

    now, known = _run(connection, action)
    header = ("job", "queue", "schedule", "zone", "last tick", "last enqueued", "next tick")
    lines: list[tuple[str, ...]] = [header]
    for job in jobs:
        assert job.schedule is not None
        row = known.get(job.name)
        last = "-" if row is None else _when(row["last_tick"])
        if row is not None and row["last_skipped"]:
            last += " (skipped: still running)"
        lines.append(
            (
                job.name,
                job.queue,
                job.schedule.expression,
                job.schedule.timezone,
                last,
                "-" if row is None else _when(row["last_enqueued_tick"]),
                _when(job.schedule.next_tick(now)),
            )
        )
    _table(lines)


@main.group()
def new() -> None:
    """Generate code: a job module and its test."""


@new.command("job")
@click.argument("name")
@click.option("--queue", default="default", show_default=True, help="The job's queue.")
@click.option("--path", help="Folder for the job module (default: [tool.koyojobs] jobs_dir, jobs).")
def new_job(name: str, queue: str, path: str | None) -> None:
    """Write a job module NAME and a test for it; never overwrites a file."""
    from .scaffold import ScaffoldError, new_job

    deployment = _deployment()
    folders = {"jobs_dir": path or deployment.jobs_dir, "tests_dir": deployment.tests_dir}
    try:
        for written in new_job(name, root=Path.cwd(), queue=queue, **folders):
            click.echo(f"created {written.relative_to(Path.cwd())}")
    except ScaffoldError as exc:
        raise _UsageError(str(exc)) from None


@main.command()
@click.argument("modules", nargs=-1)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Let every visitor retry, cancel, pause, resume and run now (default: read-only). "
    "The dashboard has no login of its own: put it behind one.",
)
@click.option(
    "--show-payloads",
    is_flag=True,
    help="Show arguments and results even when payloads are not signed (loading them "
    "runs dill: only for a table whose contents you trust).",
)
@_connects
def dashboard(
    modules: tuple[str, ...],
    host: str,
    port: int,
    allow_actions: bool,
    show_payloads: bool,
    connection: _Connection,
) -> None:
    """Serve the web dashboard (read-only unless --allow-actions).

    MODULES (default: the modules of [tool.koyojobs]) are imported so that the
    periodic page knows their schedules and can run them now.
    """
    try:
        import uvicorn

        from .dashboard import Dashboard
    except ImportError as exc:
        raise _Failure(
            f"the dashboard needs its extra: pip install 'koyojobs[dashboard]' ({exc})"
        ) from None
    sys.path.insert(0, os.getcwd())
    for module in modules or connection.deployment.modules:
        _import_job_module(module)
    # Bound here, not by uvicorn: a taken port is then one line and exit status 1.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _Failure(f"cannot listen on {host}:{port}: {_reason(exc)}") from None

    async def serve() -> None:
        async with connection.broker() as broker:
            app = Dashboard(
                broker,
                can_act=(lambda request: True) if allow_actions else None,
                show_payloads=show_payloads,
            )
            config = uvicorn.Config(app, log_level="warning")
            server = _quiet_server_class()(config)
            mode = "actions allowed" if allow_actions else "read-only"
            click.echo(f"koyojobs dashboard on http://{host}:{port}/ ({mode})")
            await server.serve(sockets=[sock])

    try:
        asyncio.run(serve())
    finally:
        sock.close()


def _quiet_server_class() -> type[Any]:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn's server, stopping gracefully on SIGINT/SIGTERM and exiting 0 like a worker.

        (uvicorn re-raises the signal once it has stopped, which would make the
        process die of it, after the broker's clean stop.)
        """

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return QuietServer


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _when(moment: Any) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def run(argv: list[str] | None = None) -> Any:
    """Entry point of the ``koyojobs`` script."""
    return main.main(args=argv, prog_name="koyojobs")
