"""A conftest.py for an app's tests: a throwaway PostgreSQL for the session, and
for each test a fresh database with a started broker.

TemporaryPostgres needs PostgreSQL's server binaries (initdb, pg_ctl) on PATH,
in /usr/lib/postgresql/*/bin, or in $KOYOJOBS_TEST_PG_BIN. The async fixtures
need pytest-asyncio in auto mode (see the Testing page).
"""

import itertools
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from koyojobs import Broker, set_current_broker
from koyojobs.testing import TemporaryPostgres

_numbers = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[TemporaryPostgres]:
    """One cluster for the whole session, deleted at its end."""
    with TemporaryPostgres() as pg:
        yield pg


async def _admin(postgres: TemporaryPostgres, statement: str) -> None:
    conn = await asyncpg.connect(postgres.dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
async def dsn(postgres: TemporaryPostgres) -> AsyncIterator[str]:
    """A fresh, empty database for each test."""
    name = f"test_{next(_numbers)}"
    await _admin(postgres, f"CREATE DATABASE {name}")
    yield postgres.dsn_for(name)
    await _admin(postgres, f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
async def broker(dsn: str) -> AsyncIterator[Broker]:
    """A started broker (starting it creates koyojobs' tables), the current one."""
    async with Broker(dsn) as broker:
        set_current_broker(broker)
        yield broker
        set_current_broker(None)
