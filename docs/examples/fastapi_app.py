"""koyojobs in a FastAPI app: the database, the broker and a worker in the web process.

The app's lifespan starts a koyojobs :class:`~koyojobs.System` (the pool, the
broker and a worker, as in Loco's same-process mode) and stops it on shutdown.
``POST /signups`` inserts a row in the app's own table and enqueues the welcome
email in the same transaction: if the request fails, neither exists. Under
``execute_jobs_synchronously()`` (tests) the welcome runs inside the request,
on the request's connection and in its transaction, and no job id is returned.
``GET /jobs/{job_id}`` reads a job's status and result.

Run it with the DSN in ``KOYOJOBS_DSN`` (the app factory reads it)::

    KOYOJOBS_DSN=postgresql://localhost/app \\
        uvicorn docs.examples.fastapi_app:create_app --factory

In production the worker usually runs in its own process
(``koyojobs worker docs.examples.fastapi_app``); pass ``run_worker=False``
to keep only the broker in the web process.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypedDict

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Request, status
from pydantic import BaseModel

from koyojobs import (
    Broker,
    Database,
    System,
    Worker,
    current_broker,
    define_job,
    set_current_broker,
)

__all__ = ["EMAILS_QUEUE", "create_app", "send_welcome"]

EMAILS_QUEUE = "emails"

# The app's own table. The unique email is checked at commit (DEFERRABLE), so a
# duplicate signup fails *after* its job was enqueued: the rollback takes the
# job with it, which is the point of enqueuing inside the transaction.
SCHEMA = """
CREATE TABLE IF NOT EXISTS signups (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE DEFERRABLE INITIALLY DEFERRED,
    welcomed_at timestamptz
)
"""


@define_job(name="examples.fastapi.send_welcome", queue=EMAILS_QUEUE, max_attempts=5)
async def send_welcome(signup_id: int, email: str) -> str:
    """Send the welcome email (here: mark the signup as welcomed)."""
    broker = current_broker()  # inside a job: the broker of the worker running it
    assert broker is not None
    await broker.pool.execute("UPDATE signups SET welcomed_at = now() WHERE id = $1", signup_id)
    return f"welcome sent to {email}"


class SignupIn(BaseModel):
    email: str


class SignupOut(BaseModel):
    id: int
    email: str
    welcome_job_id: int
    """Negative when jobs run inline (the synchronous mode): the welcome went out already."""


class JobOut(BaseModel):
    id: int
    name: str
    status: str
    attempts: int
    result: Any = None
    last_error: str | None = None


class State(TypedDict):
    broker: Broker


def build_system(dsn: str, *, run_worker: bool = True, **worker_options: Any) -> System:
    """The koyojobs components of this app: pool, broker and (optionally) a worker."""
    system = System()
    system.add("db", lambda: Database(dsn))
    system.add("broker", Broker, depends_on=["db"])
    if run_worker:
        system.add(
            "worker",
            lambda broker: Worker(broker, queue=EMAILS_QUEUE, **worker_options),
            depends_on=["broker"],
        )
    return system


def get_broker(request: Request) -> Broker:
    broker: Broker = request.state.broker  # from the lifespan's state
    return broker


BrokerDep = Annotated[Broker, Depends(get_broker)]


def create_app(
    dsn: str | None = None, *, run_worker: bool = True, **worker_options: Any
) -> FastAPI:
    """The app, on ``dsn`` (default: ``$KOYOJOBS_DSN``).

    ``worker_options`` go to the :class:`~koyojobs.Worker` (``pool_size``,
    ``lease``, ...).
    """
    if dsn is None:
        dsn = os.environ.get("KOYOJOBS_DSN")
        if not dsn:
            raise RuntimeError("set KOYOJOBS_DSN or call create_app(dsn)")
    database_dsn = dsn

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        system = build_system(database_dsn, run_worker=run_worker, **worker_options)
        async with system:  # starts db, broker, worker; stops them in reverse
            broker: Broker = system["broker"]
            await broker.pool.execute(SCHEMA)  # an app would run its own migrations
            set_current_broker(broker)  # for job calls awaited outside a request
            try:
                yield {"broker": broker}
            finally:
                set_current_broker(None)

    app = FastAPI(title="koyojobs example", lifespan=lifespan)

    @app.post("/signups", status_code=status.HTTP_201_CREATED)
    async def create_signup(signup: SignupIn, broker: BrokerDep) -> SignupOut:
        # The transaction is explicit in the endpoint, so it has committed
        # before the response is sent: the job id returned is for a real job.
        try:
            async with broker.pool.acquire() as conn, conn.transaction():
                signup_id: int = await conn.fetchval(
                    "INSERT INTO signups (email) VALUES ($1) RETURNING id", signup.email
                )
                job_id = await broker.enqueue(
                    send_welcome(signup_id, signup.email), connection=conn
                )
        except asyncpg.UniqueViolationError:
            # Raised at commit; the signup and its job were rolled back together.
            raise HTTPException(status.HTTP_409_CONFLICT, "email already signed up") from None
        return SignupOut(id=signup_id, email=signup.email, welcome_job_id=job_id)

    @app.get("/jobs/{job_id}")
    async def get_job(job_id: int, broker: BrokerDep) -> JobOut:
        job = await broker.get_job(job_id)
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
        return JobOut(
            id=job.id,
            name=job.name,
            status=job.status.value,
            attempts=job.attempts,
            result=job.result,
            last_error=job.last_error,
        )

    return app
