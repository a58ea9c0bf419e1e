"""The ``koyojobs`` command: run workers, migrate, inspect, retry and cancel.

Thin over the public API: each command opens a broker on ``--dsn`` (or
``KOYOJOBS_DSN``), does one thing, and closes it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from .broker import Broker
from .database import Database
from .models import Job, QueueStatus, Status
from .schema import migrate as apply_migrations
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


def _run(dsn: str | None, action: Callable[[Broker], Awaitable[T]], migrate: bool = True) -> T:
    dsn = _require_dsn(dsn)

    async def main() -> T:
        async with Broker(dsn, migrate=migrate) as broker:
            return await action(broker)

    try:
        return asyncio.run(main())
    except (OSError, ConnectionError) as exc:
        raise click.ClickException(f"cannot reach the database: {exc}") from None


_dsn_option = click.option(
    "--dsn", envvar="KOYOJOBS_DSN", help="PostgreSQL URL (default: $KOYOJOBS_DSN)."
)


@click.group()
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def main(log_level: str) -> None:
    """koyojobs: a job queue on PostgreSQL."""
    _setup_logging(log_level)


@main.command()
@click.argument("modules", nargs=-1, required=True)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    default=["default"],
    show_default=True,
    help="Queue to work; repeat for several.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Jobs run at once, per queue.",
)
@click.option(
    "--lease", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True
)
@click.option(
    "--poll-interval", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True
)
@click.option("--shutdown-grace", type=click.FloatRange(min=0), default=10.0, show_default=True)
@click.option(
    "--vacuum-threshold",
    type=click.IntRange(min=0),
    default=50_000,
    show_default=True,
    help="VACUUM the jobs table past this many dead rows; 0 leaves it to autovacuum.",
)
@_dsn_option
def worker(
    modules: tuple[str, ...],
    queues: tuple[str, ...],
    concurrency: int,
    lease: float,
    poll_interval: float,
    shutdown_grace: float,
    vacuum_threshold: int,
    dsn: str | None,
) -> None:
    """Import MODULES (which define jobs) and work QUEUEs until SIGINT or SIGTERM."""
    dsn = _require_dsn(dsn)
    sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise _UsageError(f"cannot import job module {module!r}: {exc}") from None

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        database = Database(dsn, max_size=max(4, 2 + len(queues) * 2))
        async with database, Broker(database) as broker:
            workers = [
                Worker(
                    broker,
                    queue=q,
                    pool_size=concurrency,
                    lease=lease,
                    poll_interval=poll_interval,
                    shutdown_grace=shutdown_grace,
                    vacuum_threshold=vacuum_threshold or None,
                )
                for q in queues
            ]
            for w in workers:
                await w.start()
            logging.getLogger("koyojobs.cli").info(
                "working", extra={"queues": ",".join(queues), "concurrency": concurrency}
            )
            await stop.wait()
            logging.getLogger("koyojobs.cli").info("stopping gracefully")
            await asyncio.gather(*(w.stop() for w in workers))

    try:
        asyncio.run(serve())
    except (OSError, ConnectionError) as exc:
        raise click.ClickException(f"cannot reach the database: {exc}") from None
    _exit_past_stuck_job_threads()


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
@_dsn_option
def migrate(dsn: str | None) -> None:
    """Create or upgrade the schema."""

    async def action(broker: Broker) -> list[int]:
        return await apply_migrations(broker.pool)

    applied = _run(dsn, action, migrate=False)
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
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    for unit, size, sub, sub_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if seconds >= size:
            rest = (seconds % size) // sub_size
            return f"{seconds // size}{unit}{rest}{sub}" if rest else f"{seconds // size}{unit}"
    return f"{seconds}s"


@main.command()
@_dsn_option
def status(dsn: str | None) -> None:
    """Show job counts per queue and status, and the oldest due job's wait."""

    async def action(broker: Broker) -> list[QueueStatus]:
        return await broker.queue_status()

    queues = _run(dsn, action)
    if not queues:
        click.echo("no jobs")
        return
    header = ("queue", "ready", "running", "done", "failed", "cancelled", "oldest ready")
    rows = [
        (
            q.queue,
            str(q.ready),
            str(q.running),
            str(q.done),
            str(q.failed),
            str(q.cancelled),
            _age(q.oldest_ready_seconds),
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
@_dsn_option
def jobs(status_: str | None, queue: str | None, limit: int, dsn: str | None) -> None:
    """List the newest jobs, with the first line of their last error."""

    async def action(broker: Broker) -> list[Job]:
        return await broker.list_jobs(status=status_, queue=queue, limit=limit)

    found = _run(dsn, action)
    if not found:
        click.echo("no jobs")
        return
    header = ("id", "name", "queue", "status", "attempts", "finished", "last error")
    rows = [
        (
            str(j.id),
            j.name,
            j.queue,
            j.status.value,
            f"{j.attempts}/{j.max_attempts}",
            "-" if j.finished_at is None else j.finished_at.to_datetime_string(),
            (j.last_error or "").splitlines()[0][:100] if j.last_error else "",
        )
        for j in found
    ]
    _table([header, *rows], right=frozenset({0}))


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> float:
    unit = text[-1:].lower()
    number = text[:-1] if unit in _DURATION_UNITS else text
    try:
        value = float(number)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a duration such as 90s, 30m, 12h or 7d"
        ) from None
    if value < 0:
        raise click.BadParameter(f"{text!r} is negative")
    return value * _DURATION_UNITS.get(unit, 1)


@main.command()
@click.option("--older-than", "older_than", required=True, help="Age, such as 12h or 7d.")
@_dsn_option
def prune(older_than: str, dsn: str | None) -> None:
    """Delete jobs that finished (done, failed, cancelled) longer ago than --older-than."""
    seconds = _seconds(older_than)

    async def action(broker: Broker) -> int:
        return await broker.prune(seconds)

    click.echo(f"deleted {_run(dsn, action)} finished jobs")


def _job_command(
    verb: str, method: Callable[[Broker, int], Awaitable[bool]], done: str, refused: str
) -> Callable[..., None]:
    @click.argument("job_id", type=int)
    @_dsn_option
    def command(job_id: int, dsn: str | None) -> None:
        async def action(broker: Broker) -> bool:
            return await method(broker, job_id)

        if not _run(dsn, action):
            raise click.ClickException(f"job {job_id} {refused}")
        click.echo(f"job {job_id} {done}")

    command.__doc__ = f"{verb.capitalize()} job JOB_ID."
    return command


def _retry(broker: Broker, job_id: int) -> Awaitable[bool]:
    return broker.retry_job(job_id)


def _cancel(broker: Broker, job_id: int) -> Awaitable[bool]:
    return broker.cancel(job_id)


main.command("retry")(
    _job_command(
        "retry", _retry, "is ready to run again", "was not retried: unknown, or not finished"
    )
)
main.command("cancel")(
    _job_command(
        "cancel", _cancel, "is cancelled", "was not cancelled: unknown, or already finished"
    )
)


def run(argv: list[str] | None = None) -> Any:
    """Entry point of the ``koyojobs`` script."""
    return main.main(args=argv, prog_name="koyojobs")
