"""Hooks, middleware (a database session per job) and waiting for a result."""

import contextvars
from typing import Any

import asyncpg

from koyojobs import (
    Broker,
    CallNext,
    JobOutcome,
    RunningJob,
    Worker,
    current_broker,
    define_job,
    set_current_broker,
)

# The job's database session: set by the middleware, read by the job.
# (A pool's connection: the middleware acquires it from the broker's pool.)
session: contextvars.ContextVar[asyncpg.pool.PoolConnectionProxy] = contextvars.ContextVar(
    "session"
)


async def database_session(job: RunningJob, call_next: CallNext) -> Any:
    """One connection and one transaction per attempt: committed if the job
    returns, rolled back if it raises (and the attempt fails as usual)."""
    broker = current_broker()
    assert broker is not None
    async with broker.pool.acquire() as conn, conn.transaction():
        token = session.set(conn)
        try:
            return await call_next()
        finally:
            session.reset(token)


@define_job(name="docs.register_contact", max_attempts=2, backoff=lambda attempt: 0.0)
async def register_contact(email: str) -> int:
    if "@" not in email:
        raise ValueError(f"not an email address: {email!r}")
    contact_id: int = await session.get().fetchval(
        "INSERT INTO contacts (email) VALUES ($1) RETURNING id", email
    )
    return contact_id


@register_contact.on_success
async def welcome(outcome: JobOutcome) -> None:
    print(f"welcome {outcome.args[0]}: contact {outcome.result}")


@register_contact.on_failure
def alert(outcome: JobOutcome) -> None:  # a plain def runs on the worker's thread pool
    print(f"gave up on {outcome.args[0]} after {outcome.job.attempt} attempts: {outcome.error}")


async def main(dsn: str) -> None:
    async with Broker(dsn, middleware=[database_session]) as broker:
        set_current_broker(broker)
        await broker.pool.execute("CREATE TABLE contacts (id serial PRIMARY KEY, email text)")
        async with Worker(broker):
            ada = await register_contact("ada@example.com")
            bad = await register_contact("not-an-address")
            assert ada is not None and bad is not None

            # Woken when the job ends; TimeoutError past the timeout.
            job = await broker.wait(ada, timeout=30)
            print(job.status, job.result)
            job = await broker.wait(bad, timeout=30)
            print(job.status, job.attempts, job.last_error)
        set_current_broker(None)
