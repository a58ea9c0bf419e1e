"""The dashboard in a FastAPI app, behind the app's own login.

FastAPI's dependencies guard its routes, not the apps mounted in it, so the
same checks go to the dashboard as ``can_view`` (may see it) and ``can_act``
(may retry, cancel, pause, resume, run now). Here a session cookie names the
user; use your app's own session or token check.

Run it with ``KOYOJOBS_DSN`` set::

    uvicorn docs.examples.dashboard_fastapi:create_app --factory
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request

from koyojobs import Broker
from koyojobs.dashboard import Dashboard


@dataclass(frozen=True)
class User:
    name: str
    role: str  # "staff" may look, "admin" may also act


SESSIONS = {"s-ada": User("ada", "admin"), "s-bob": User("bob", "staff"), "s-eve": User("eve", "")}


def current_user(request: Request) -> User | None:
    """The app's login: whoever the session cookie names."""
    return SESSIONS.get(request.cookies.get("session", ""))


def is_staff(request: Request) -> bool:
    user = current_user(request)
    return user is not None and user.role in ("staff", "admin")


def is_admin(request: Request) -> bool:
    user = current_user(request)
    return user is not None and user.role == "admin"


def logged_in(request: Request) -> User:
    user = current_user(request)
    if user is None:
        raise HTTPException(401, "log in first")
    return user


def create_app(dsn: str | None = None) -> FastAPI:
    broker = Broker(dsn or os.environ["KOYOJOBS_DSN"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with broker:  # the dashboard reads through it once it is started
            yield

    app = FastAPI(lifespan=lifespan)
    app.mount("/admin/jobs", Dashboard(broker, can_view=is_staff, can_act=is_admin))

    @app.get("/me")
    async def me(user: Annotated[User, Depends(logged_in)]) -> dict[str, str]:
        return {"name": user.name, "role": user.role}

    return app
