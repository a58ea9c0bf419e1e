"""What every ``koyojobs`` command shares: the group, logging, errors, connecting.

What goes wrong outside the program (a database that is missing or refuses, a
malformed DSN, a job module that raises) is told in one line, with exit status
1 (:class:`Failure`); a wrong invocation exits 2 (:class:`UsageError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
import re
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click

from .._text import escape_controls
from .._version import __version__
from ..broker import Broker
from ..config import ConfigError, Deployment, load_deployment
from ..database import Database, _redacted
from ..errors import SchemaError
from ..schema import require_schema
from ..serializer import Secret

T = TypeVar("T")

_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({})))


class UsageError(click.ClickException):
    """A one-line usage error with exit status 2 (click's UsageError adds the usage text)."""

    exit_code = 2


class _ExtrasFormatter(logging.Formatter):
    """Appends a record's ``extra`` details as key=value pairs.

    Control characters in the message and the details (a job's name or
    error holds whatever its author wrote) are escaped: one record is one
    line, and no job can forge another or rewrite the terminal. A traceback
    keeps its lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = escape_controls(super().formatMessage(record))
        extras = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}
        extras.pop("message", None)
        extras.pop("asctime", None)
        if extras:
            line += " " + " ".join(f"{k}={escape_controls(str(v))}" for k, v in extras.items())
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
        raise UsageError("no database given: pass --dsn or set KOYOJOBS_DSN")
    return dsn


def reason(exc: BaseException) -> str:
    """What went wrong, in one line."""
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused ({exc})"
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


@dataclass(frozen=True)
class Connection:
    """Where and how a command connects: the options every such command shares."""

    dsn: str
    listen_dsn: str | None
    statement_cache_size: int | None
    deployment: Deployment
    secret: tuple[Secret, ...] | None = None
    """The keys of --secret (the first signs); ``None``: the deployment's, else $KOYOJOBS_SECRET."""

    @contextlib.asynccontextmanager
    async def broker(
        self,
        *,
        migrate: bool = True,
        read_only: bool = False,
        retention: dict[str, timedelta | None] | None = None,
        **pool_options: Any,
    ) -> AsyncIterator[Broker]:
        """A started broker on a pool of its own; what fails on the way is one line.

        ``read_only``: the schema is neither created nor changed (a role with
        SELECT rights only will do); without it, one line says to migrate.
        """
        where = _redacted(self.dsn)
        try:
            database = Database(
                self.dsn, statement_cache_size=self.statement_cache_size, **pool_options
            )
        except ValueError as exc:
            raise Failure(reason(exc)) from None
        try:
            await database.start()
        except Exception as exc:  # refused, unknown database or role, malformed DSN...
            raise Failure(f"cannot connect to {where}: {reason(exc)}") from None
        try:
            try:
                broker = Broker(
                    database,
                    migrate=migrate and not read_only,
                    listen_dsn=self.listen_dsn,
                    secret=self.secret if self.secret is not None else self.deployment.secret,
                    retention=retention,
                )
            except ValueError as exc:
                raise UsageError(reason(exc)) from None
            try:
                await broker.start()
                if read_only:
                    await require_schema(broker.pool)
            except SchemaError as exc:
                raise Failure(f"{exc} (on {where})") from None
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                raise Failure(f"cannot migrate the schema on {where}: {reason(exc)}") from None
            try:
                yield broker
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                raise Failure(f"database error on {where}: {reason(exc)}") from None
            finally:
                await broker.stop()
        finally:
            await database.stop()


class Failure(click.ClickException):
    """Something outside the command went wrong: one line, exit status 1."""

    exit_code = 1


def connects(command: Callable[..., T]) -> Callable[..., T]:
    """Give a command the connection options, passed to it as one ``connection``."""

    @functools.wraps(command)
    def with_connection(
        *args: Any,
        dsn: str | None,
        listen_dsn: str | None,
        statement_cache_size: int | None,
        secret: str | None,
        **kwargs: Any,
    ) -> T:
        declared = deployment()
        # The command line (and KOYOJOBS_*) first, then what pyproject.toml declares.
        if dsn is None:
            dsn = os.environ.get(declared.dsn_env) if declared.path else None
        if listen_dsn is None and declared.listen_dsn_env:
            listen_dsn = os.environ.get(declared.listen_dsn_env)
        if statement_cache_size is None:
            statement_cache_size = declared.statement_cache_size
        if not dsn and declared.dsn_env != "KOYOJOBS_DSN":
            raise UsageError(
                f"no database given: pass --dsn, or set KOYOJOBS_DSN or {declared.dsn_env} "
                f"(dsn_env in {declared.path})"
            )
        connection = Connection(
            _require_dsn(dsn), listen_dsn, statement_cache_size, declared, _secret_keys(secret)
        )
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
        click.option(
            "--secret",
            help="Payload signing keys, comma-separated: the first signs, every one is "
            "accepted (rotation: 'new,old'). Default: $KOYOJOBS_SECRET, read the same way.",
        ),
    )
    wrapped: Callable[..., T] = with_connection
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped


def _secret_keys(given: str | None) -> tuple[Secret, ...] | None:
    if given is None:
        return None
    keys = tuple(given.split(","))
    if not all(keys):
        raise UsageError("--secret has an empty key: give keys separated by single commas")
    return keys


def deployment() -> Deployment:
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
        raise UsageError(str(exc)) from None


def with_broker(
    connection: Connection,
    action: Callable[[Broker], Awaitable[T]],
    migrate: bool = True,
    read_only: bool = False,
) -> T:
    async def main() -> T:
        async with connection.broker(migrate=migrate, read_only=read_only) as broker:
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


def import_job_module(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(f"cannot import job module {module!r}: {exc}") from None
    except Exception as exc:
        raise Failure(
            f"job module {module!r} raised {type(exc).__name__} on import: "
            f"{reason(exc)}{_where_raised(exc)}"
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


def table(rows: list[tuple[str, ...]], right: frozenset[int] = frozenset()) -> None:
    # Cells hold names and errors from jobs: escaped, so none rewrites the terminal.
    rows = [tuple(escape_controls(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        click.echo("  ".join(cells).rstrip())


def age(seconds: float | None) -> str:
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


_DURATION_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[a-z]*)", re.IGNORECASE)
_DURATION_HINT = "a duration such as 90s, 30min, 12h, 7d or 2w"
_LONGEST = 1000 * 366 * 86400.0


def duration_seconds(text: str) -> float:
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
    seconds = float(number) * _DURATION_UNITS[unit]
    if seconds > _LONGEST:
        # PostgreSQL's timestamps end (and begin) somewhere: now() minus a
        # million years is an error, not "every job".
        raise click.BadParameter(f"{text!r} is longer than 1000 years")
    return seconds


def when(moment: Any) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
