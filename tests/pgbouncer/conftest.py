"""The PgBouncer tier: koyojobs through a real PgBouncer in transaction mode.

One PgBouncer for the session, in front of the suite's server; each test's
database is reached through it as ``pooled_dsn`` (and directly as ``dsn``).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.conftest import Server
from tests.pooler import PgBouncer


@pytest.fixture(scope="session")
def pgbouncer(pg_server: Server) -> Iterator[PgBouncer]:
    with PgBouncer(pg_server.admin_dsn) as bouncer:
        yield bouncer


@pytest.fixture
def pooled_dsn(dsn: str, pgbouncer: PgBouncer) -> str:
    """The test's database, through PgBouncer."""
    return pgbouncer.dsn_for(urlsplit(dsn).path.lstrip("/"))
