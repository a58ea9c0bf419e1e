"""Helpers for testing code that uses koyojobs.

:func:`assert_enqueued`, :func:`assert_not_enqueued` and :func:`enqueued_jobs`
look at what code under test enqueued; :func:`drain` runs a queue's due jobs
in the current task until none is left, as Oban's ``drain_queue`` does.
:class:`TemporaryPostgres` starts a throwaway PostgreSQL cluster in a
temporary directory (``initdb`` + ``pg_ctl``), for test suites and demos on a
machine that has PostgreSQL's binaries but no server to spare.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .broker import Broker
from .context import current_broker
from .execution import attempt
from .jobs import JobDefinition
from .limits import limited_jobs, register_limits
from .models import Job, Status
from .outcomes import Outcome, as_columns
from .sql import QUERIES

__all__ = [
    "EnqueuedJob",
    "TemporaryPostgres",
    "assert_enqueued",
    "assert_not_enqueued",
    "drain",
    "enqueued_jobs",
    "find_pg_bin",
    "wait_for_job",
]


@dataclass(frozen=True)
class EnqueuedJob:
    """A job not yet started as :func:`enqueued_jobs` shows it: its id, arguments, status.

    ``status`` is ``Status.READY``, or ``Status.PENDING`` for a workflow step
    that waits for its upstream steps.

    Example:
        >>> EnqueuedJob(7, ("ada@example.com",), {}).status
        <Status.READY: 'ready'>
    """

    id: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    status: Status = Status.READY


def _broker(broker: Broker | None) -> Broker:
    found = broker or current_broker()
    if found is None:
        raise RuntimeError("no broker: pass broker=... or call koyojobs.set_current_broker()")
    return found


async def enqueued_jobs(
    job: JobDefinition[Any, Any], *, broker: Broker | None = None
) -> list[EnqueuedJob]:
    """The jobs of ``job`` not yet started, oldest first, with their arguments read back.

    Those are the ``ready`` ones and the ``pending`` ones: workflow steps that
    wait for their upstream steps (they were enqueued, and will run).

    Example:
        >>> [j.args for j in await enqueued_jobs(send_email)]  # doctest: +SKIP
        [('ada@example.com',)]
    """
    b = _broker(broker)
    rows = await b.pool.fetch(QUERIES["enqueued_jobs_named"], job.name)
    found = []
    for row in rows:
        args, kwargs = b.serializer.load_arguments(row["args"], job.name)
        found.append(EnqueuedJob(row["id"], args, kwargs, Status(row["status"])))
    return found


def _bound(job: JobDefinition[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # Compare calls as the function sees them: f(1, b=2) matches f(a=1, b=2).
    try:
        bound = job.signature.bind(*args, **kwargs)
    except TypeError:
        return (args, kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


async def assert_enqueued(
    job: JobDefinition[Any, Any], *args: Any, broker: Broker | None = None, **kwargs: Any
) -> EnqueuedJob:
    """Fail unless ``job`` was enqueued with these arguments and has not started; returns it.

    Arguments match as the function would bind them, defaults included. A
    ``pending`` workflow step matches as a ``ready`` job does (its ``status``
    says which).

    Example:
        >>> await signup("ada@example.com")  # doctest: +SKIP
        >>> await assert_enqueued(send_email, "ada@example.com")  # doctest: +SKIP
    """
    wanted = _bound(job, args, kwargs)
    found = await enqueued_jobs(job, broker=broker)
    for candidate in found:
        if _bound(job, candidate.args, candidate.kwargs) == wanted:
            return candidate
    shown = ", ".join(_call_text(c.args, c.kwargs) for c in found) or "none"
    raise AssertionError(
        f"{job.name}{_call_text(args, kwargs)} is not enqueued; "
        f"ready or pending {job.name} jobs: {shown}"
    )


async def assert_not_enqueued(
    job: JobDefinition[Any, Any], *args: Any, broker: Broker | None = None, **kwargs: Any
) -> None:
    """Fail if ``job`` was enqueued and has not started (with these arguments, if any are given).

    A ``pending`` workflow step counts, as in :func:`assert_enqueued`.

    Example:
        >>> await assert_not_enqueued(send_email)  # doctest: +SKIP
    """
    found = await enqueued_jobs(job, broker=broker)
    if args or kwargs:
        wanted = _bound(job, args, kwargs)
        found = [c for c in found if _bound(job, c.args, c.kwargs) == wanted]
    if found:
        raise AssertionError(
            f"{job.name} is enqueued {len(found)} time(s): "
            + ", ".join(_call_text(c.args, c.kwargs) for c in found)
        )


def _call_text(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"({', '.join(parts)})"


_DRAIN_DEADLINE = 10.0
"""Seconds the declaration of a queue's limits may take before a drain."""


async def drain(
    broker: Broker | None = None, queue: str = "default", *, limit: int = 100
) -> dict[str, int]:
    """Run the due jobs of ``queue`` here, one at a time, until none is left.

    Jobs that a run enqueues are run too when due; a job retried with a delay
    is not (it is not due yet). Returns the outcomes counted by status
    (``done``, ``failed``, and ``ready`` for attempts that will be retried).
    Uses the same claim and the same rules as a worker, so what passes here
    passes there.

    Example:
        >>> await signup("ada@example.com")  # doctest: +SKIP
        >>> await drain(queue="emails")  # doctest: +SKIP
        {'done': 1}
    """
    b = _broker(broker)
    worker_id = f"koyojobs.testing.drain:{os.getpid()}"
    counts: Counter[str] = Counter()
    # A queue with limited jobs claims as its workers do, within the limits.
    claim = QUERIES["finish_and_claim"]
    if limited_jobs(queue):
        await register_limits(b.database, queue, _DRAIN_DEADLINE)
        claim = QUERIES["finish_and_claim_limited"]
    with ThreadPoolExecutor(1, thread_name_prefix="koyojobs-drain") as executor:
        outcomes: list[Outcome] = []
        while True:
            rows = await b.pool.fetch(claim, queue, limit, 3600.0, worker_id, *as_columns(outcomes))
            # A retry written by this very statement was not claimable in it
            # (one snapshot), nor a workflow step its outcomes released: look
            # once more before calling the queue drained. Not for a snooze: a
            # job that always snoozes would never let go.
            again = any(not o[2].snoozed for o in outcomes)
            if not rows and not again:
                return dict(counts)
            outcomes = []
            for row in rows:
                decision = await attempt(row, b.serializer, b, executor)
                counts[decision.status.value] += 1
                outcomes.append((row["id"], row["attempts"], decision))


async def wait_for_job(
    job_id: int, timeout: float | None = 10.0, *, broker: Broker | None = None
) -> Job:
    """Wait until a worker finished the job, and return it: :meth:`Broker.wait` for tests.

    The broker is ``broker`` or the current one; the timeout is 10 s by
    default, so a test whose worker never runs the job fails rather than hangs.

    Example:
        >>> job = await wait_for_job(await make_thumbnail("cat.png"))  # doctest: +SKIP
        >>> job.result  # doctest: +SKIP
        'cat.png@640'
    """
    return await _broker(broker).wait(job_id, timeout)


_UNPRIVILEGED_USER = "postgres"
PG_BIN_VARIABLE = "KOYOJOBS_TEST_PG_BIN"
"""Names the folder of the server binaries :class:`TemporaryPostgres` runs,
to test against another PostgreSQL version than the one on PATH."""


def find_pg_bin(bin_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``.

    ``bin_dir`` if given, else ``$KOYOJOBS_TEST_PG_BIN`` if set, else the one
    on PATH, else Debian's newest (``/usr/lib/postgresql/*/bin``). A folder
    given either way must hold both programs.

    Example:
        >>> find_pg_bin("/usr/lib/postgresql/17/bin")  # doctest: +SKIP
        PosixPath('/usr/lib/postgresql/17/bin')
    """
    given, source = bin_dir, "bin_dir"
    if given is None and os.environ.get(PG_BIN_VARIABLE):
        given, source = os.environ[PG_BIN_VARIABLE], PG_BIN_VARIABLE
    if given is not None:
        folder = Path(given)
        missing = [p for p in ("initdb", "pg_ctl") if not (folder / p).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{source}={str(given)!r} is not a PostgreSQL bin folder: "
                f"no {' nor '.join(missing)} in it"
            )
        return folder.resolve()
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    raise FileNotFoundError(
        "PostgreSQL's initdb was not found on PATH nor in /usr/lib/postgresql/*/bin; "
        "install it (Debian: apt-get install postgresql)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TemporaryPostgres:
    """A PostgreSQL cluster of its own, in a temporary directory, gone on stop.

    It trusts local connections, listens on 127.0.0.1 on a free port and
    runs with ``fsync=off``: fast, and only for throwaway data. As root
    (initdb refuses root) it runs the server as the ``postgres`` user, who
    must be able to read and run the binaries. ``bin_dir`` picks the server's
    binaries as :func:`find_pg_bin` says (``$KOYOJOBS_TEST_PG_BIN``, PATH...).

    Example:
        >>> with TemporaryPostgres() as pg:  # doctest: +SKIP
        ...     print(pg.dsn)
        postgresql://postgres@127.0.0.1:41234/postgres
    """

    def __init__(self, bin_dir: str | os.PathLike[str] | None = None) -> None:
        self.bin = find_pg_bin(bin_dir)
        self.port = _free_port()
        self._dir: Path | None = None

    @property
    def dsn(self) -> str:
        """The URL of the cluster's ``postgres`` database."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        """The URL of another database on this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        assert self._dir is not None, "TemporaryPostgres is not started"
        return self._dir / "data"

    def _as_server_user(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["runuser", "-u", _UNPRIVILEGED_USER, "--"]

    def _run(self, *args: str) -> None:
        command = [*self._as_server_user(), *args]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            said = (result.stderr or result.stdout).strip()
            if os.geteuid() == 0 and "Permission denied" in said:
                said += f" (as root, the {_UNPRIVILEGED_USER} user runs it: let it read {self.bin})"
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {said}")

    def start(self) -> None:
        """initdb and start; returns once the server accepts connections."""
        self._dir = Path(tempfile.mkdtemp(prefix="koyojobs-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam(_UNPRIVILEGED_USER)
            os.chown(self._dir, user.pw_uid, user.pw_gid)
        try:
            self._init_and_start()
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            raise

    def _init_and_start(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        self._pg_ctl("start")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        assert self._dir is not None
        options = (
            f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            action,
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self._dir / "server.log"),
            "-w",
            *extra,
        )

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> None:
        """Restart the server (``fast`` or ``immediate``), dropping every connection.

        With ``down_for``, the server stays stopped that many seconds first: an
        outage, for tests of what happens while the database is out of reach.
        """
        if not down_for:
            self._pg_ctl("restart", "-m", mode)
            return
        self._pg_ctl("stop", "-m", mode)
        time.sleep(down_for)  # the outage itself: nothing to wait for
        self._pg_ctl("start")

    def stop(self) -> None:
        """Stop the server and delete its files."""
        if self._dir is None:
            return
        try:
            self._run(
                str(self.bin / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "immediate", "-w"
            )
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
