"""Fixtures: a real PostgreSQL (the one in KOYOJOBS_TEST_DSN, or a throwaway
cluster started here from the binaries in KOYOJOBS_TEST_PG_BIN or on PATH),
and a fresh database per test cloned from a migrated template. Every database
made here is dropped again: a shared server is left as it was found."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from koyojobs import Broker, Job, Status, set_current_broker
from koyojobs.testing import PG_BIN_VARIABLE, TemporaryPostgres, find_pg_bin

# Names carry the pid: two sessions may share one server (KOYOJOBS_TEST_DSN).
TEMPLATE = f"koyojobs_template_{os.getpid()}"
_counter = itertools.count()


def _database_name(suffix: str = "") -> str:
    return f"koyojobs_t{os.getpid()}_{next(_counter)}{suffix and '_' + suffix}"


def pytest_report_header() -> str:
    if os.environ.get("KOYOJOBS_TEST_DSN"):
        return "PostgreSQL: the server in KOYOJOBS_TEST_DSN"
    try:
        folder = find_pg_bin()
    except FileNotFoundError as exc:
        return f"PostgreSQL: {exc}"
    version = subprocess.run(
        [str(folder / "pg_ctl"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    chosen = f" from {PG_BIN_VARIABLE}" if os.environ.get(PG_BIN_VARIABLE) else ""
    return f"PostgreSQL: {version} in {folder}{chosen}"


@dataclass
class Server:
    """A PostgreSQL server the tests may create databases on."""

    admin_dsn: str
    cluster: TemporaryPostgres | None
    made: set[str] = field(default_factory=set)
    """Every database created through this object, dropped or not."""

    def dsn_for(self, database: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path=f"/{database}"))

    async def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (empty, or a copy of ``template``); returns its DSN.

        Drop it again with :meth:`drop_database`: the session fails at its end
        if one is left on the server."""
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            self.made.add(name)
            await conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
            copy = f" TEMPLATE {_ident(template)}" if template else ""
            await conn.execute(f"CREATE DATABASE {_ident(name)}{copy}")
        finally:
            await conn.close()
        return self.dsn_for(name)

    async def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, whoever is connected to it."""
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
        finally:
            await conn.close()

    async def left_behind(self) -> list[str]:
        """The databases made here that still exist."""
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname = ANY($1::text[]) ORDER BY 1",
                sorted(self.made),
            )
        finally:
            await conn.close()
        return [r["datname"] for r in rows]


def _ident(name: str) -> str:
    # Test database names are generated here from [a-z0-9_]; quote anyway.
    assert name.replace("_", "").isalnum(), name
    return '"' + name + '"'


async def _prepare_template(server: Server) -> None:
    async with Broker(await server.create_database(TEMPLATE)):
        pass  # starting a broker migrates


async def _clean_up(server: Server) -> None:
    await server.drop_database(TEMPLATE)
    left = await server.left_behind()
    for name in left:
        await server.drop_database(name)
    # A test that makes a database without dropping it would litter a shared
    # server (KOYOJOBS_TEST_DSN) run after run.
    assert not left, f"the tests left these databases behind (now dropped): {left}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    given = os.environ.get("KOYOJOBS_TEST_DSN")
    with contextlib.ExitStack() as stack:
        if given:
            server = Server(given, None)
        else:
            cluster = stack.enter_context(TemporaryPostgres())
            server = Server(cluster.dsn, cluster)
        asyncio.run(_prepare_template(server))
        try:
            yield server
        finally:
            asyncio.run(_clean_up(server))


@pytest.fixture
async def dsn(pg_server: Server) -> AsyncIterator[str]:
    """A fresh, migrated database for this test."""
    name = _database_name()
    try:
        yield await pg_server.create_database(name, template=TEMPLATE)
    finally:
        await pg_server.drop_database(name)


@pytest.fixture
async def empty_database(pg_server: Server) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """Makes empty (unmigrated) databases for this test; returns a DSN. All are
    dropped at its end, whatever the test did."""
    made: list[str] = []

    async def make(suffix: str) -> str:
        name = _database_name(suffix)
        made.append(name)
        return await pg_server.create_database(name)

    try:
        yield make
    finally:
        for name in made:
            await pg_server.drop_database(name)


@pytest.fixture
async def broker(dsn: str) -> AsyncIterator[Broker]:
    """A started broker on the test's database, set as the current one."""
    async with Broker(dsn) as b:
        set_current_broker(b)
        try:
            yield b
        finally:
            set_current_broker(None)


async def wait_for_status(
    broker: Broker, job_id: int, *statuses: Status, timeout: float = 10.0
) -> Job:
    """Poll the job until it has one of ``statuses``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = await broker.get_job(job_id)
        if job is not None and job.status in statuses:
            return job
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout}s: {job}")


async def insert_raw_job(broker: Broker, name: str, args: bytes, max_attempts: int) -> int:
    """A row written by hand, as another version of the code (or an attacker) would."""
    job_id: int = await broker.pool.fetchval(
        "INSERT INTO koyojobs_jobs (name, queue, max_attempts, args) "
        "VALUES ($1, 'default', $2, $3) RETURNING id",
        name,
        max_attempts,
        args,
    )
    return job_id


@pytest.fixture
async def reader_dsn(dsn: str) -> AsyncIterator[str]:
    """A DSN of the test's database for a role that may only SELECT from its tables.

    The role is the server's, not the database's: it is dropped at the end.
    """
    database = urlsplit(dsn).path.lstrip("/")
    role = f"reader_{database}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(
            f'DROP ROLE IF EXISTS "{role}"; CREATE ROLE "{role}" LOGIN PASSWORD \'reader\'; '
            f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"; '
            f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'
        )
        parts = urlsplit(dsn)
        yield urlunsplit(parts._replace(netloc=f"{role}:reader@{parts.hostname}:{parts.port}"))
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'REVOKE CONNECT ON DATABASE "{database}" FROM "{role}"')
        await admin.close()
        admin = await asyncpg.connect(dsn)
        try:
            # Its sessions may linger a moment after their pools closed.
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
            )
            await admin.execute(f'DROP ROLE "{role}"')
        finally:
            await admin.close()
