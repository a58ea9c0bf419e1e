"""The web process of a split deployment: FastAPI with a broker and the dashboard, no worker.

Run the two processes from the project's folder, both with ``KOYOJOBS_DSN`` set::

    uvicorn docs.examples.split_web:create_app --factory     # web: enqueues, serves
    koyojobs worker docs.examples.split_jobs --queue emails  # worker: runs the jobs

Scale them apart: more web processes for requests, more workers (or
``--concurrency``) for the queue. A deploy restarts them in any order: jobs
enqueued while no worker runs wait in the table.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from pydantic import BaseModel

from docs.examples.split_jobs import send_welcome
from koyojobs import Broker, set_current_broker
from koyojobs.dashboard import Dashboard


class SignupIn(BaseModel):
    email: str


class SignupOut(BaseModel):
    welcome_job_id: int | None


def create_app(dsn: str | None = None, staff_token: str | None = None) -> FastAPI:
    """The app on ``dsn`` (default ``$KOYOJOBS_DSN``); the dashboard at ``/admin/jobs``
    for requests bearing ``staff_token`` (default ``$DASHBOARD_TOKEN``)."""
    broker = Broker(dsn or os.environ["KOYOJOBS_DSN"])
    token = staff_token or os.environ["DASHBOARD_TOKEN"]

    def is_staff(request: Request) -> bool:
        # Stands for your app's login: the dashboard is outside FastAPI's
        # dependencies, so the check is given to it.
        return request.headers.get("authorization") == f"Bearer {token}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with broker:  # a broker only: the worker process runs the jobs
            set_current_broker(broker)
            try:
                yield
            finally:
                set_current_broker(None)

    app = FastAPI(lifespan=lifespan)
    app.mount("/admin/jobs", Dashboard(broker, can_view=is_staff))

    @app.post("/signups", status_code=status.HTTP_202_ACCEPTED)
    async def sign_up(signup: SignupIn) -> SignupOut:
        return SignupOut(welcome_job_id=await send_welcome(signup.email))

    return app
