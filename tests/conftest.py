"""Fixtures: a real PostgreSQL (the one in KOYOJOBS_TEST_DSN, or a throwaway
cluster started here), and a fresh database per test cloned from a migrated
template."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from koyojobs import Broker, Job, Status, set_current_broker
from koyojobs.testing import TemporaryPostgres

TEMPLATE = "koyojobs_test_template"
_counter = itertools.count()


@dataclass
class Server:
    """A PostgreSQL server the tests may create databases on."""

    admin_dsn: str
    cluster: TemporaryPostgres | None

    def dsn_for(self, database: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path=f"/{database}"))

    async def empty_database(self, name: str) -> str:
        """(Re)create database ``name``, empty; returns its DSN."""
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
            await conn.execute(f"CREATE DATABASE {_ident(name)}")
        finally:
            await conn.close()
        return self.dsn_for(name)


def _ident(name: str) -> str:
    # Test database names are generated here from [a-z0-9_]; quote anyway.
    assert name.replace("_", "").isalnum(), name
    return '"' + name + '"'


async def _prepare_template(server: Server) -> None:
    async with Broker(await server.empty_database(TEMPLATE)):
        pass  # starting a broker migrates


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    given = os.environ.get("KOYOJOBS_TEST_DSN")
    if given:
        server = Server(given, None)
        asyncio.run(_prepare_template(server))
        yield server
        return
    with TemporaryPostgres() as cluster:
        server = Server(cluster.dsn, cluster)
        asyncio.run(_prepare_template(server))
        yield server


@pytest.fixture
async def dsn(pg_server: Server) -> AsyncIterator[str]:
    """A fresh, migrated database for this test."""
    name = f"koyojobs_t{os.getpid()}_{next(_counter)}"
    conn = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {_ident(name)} TEMPLATE {_ident(TEMPLATE)}")
    finally:
        await conn.close()
    yield pg_server.dsn_for(name)
    conn = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


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
