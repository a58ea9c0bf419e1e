"""Fixtures of the dashboard tests: a dashboard served by uvicorn on a thread of its own
(with a broker and a real worker on that thread's event loop), and headless Chromium.

The tests themselves are synchronous, as selenium is: they ask the server's loop
to do database work with :meth:`LiveDashboard.call`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from koyojobs import Broker, Job, Status, Worker, set_current_broker
from koyojobs.dashboard import Dashboard
from tests import conftest as root
from tests.dashboard import jobs

T = TypeVar("T")

CHROMIUM = Path(os.environ.get("KOYOJOBS_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("KOYOJOBS_CHROMEDRIVER", "/usr/bin/chromedriver"))
PREFIX = "/ops/jobs"
"""Where the live dashboard is mounted: every link must carry it."""


class LiveDashboard:
    """A Starlette app with the dashboard mounted at :data:`PREFIX`, served on 127.0.0.1."""

    def __init__(self, dsn: str, *, can_act: bool, worker: bool, **options: Any) -> None:
        self.dsn = dsn
        self._can_act = can_act
        self._with_worker = worker
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: uvicorn.Server | None = None
        self._served: Future[None] | None = None
        self.broker: Broker
        self.worker: Worker | None = None
        self.url = ""

    def call(self, make: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run ``make()`` on the server's loop and return its result."""

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        # Listening now: a request sent before uvicorn runs waits in the backlog.
        sock.listen(64)
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}{PREFIX}"
        self.call(self._start_broker)
        can_act = (lambda request: True) if self._can_act else None
        app = Starlette(
            routes=[Mount(PREFIX, app=Dashboard(self.broker, can_act, **self._options))]
        )
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._served = asyncio.run_coroutine_threadsafe(
            self._server.serve(sockets=[sock]), self._loop
        )

    async def _start_broker(self) -> None:
        self.broker = Broker(self.dsn)
        await self.broker.start()
        set_current_broker(self.broker)
        if self._with_worker:
            self.worker = Worker(
                self.broker, queue=jobs.QUEUE, lease=2.0, poll_interval=0.2, shutdown_grace=1.0
            )
            await self.worker.start()

    def stop(self) -> None:
        if self._server is not None and self._served is not None:
            self._server.should_exit = True
            self._served.result(10)
        with contextlib.suppress(Exception):
            self.call(self._stop_broker)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _stop_broker(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        await self.broker.stop()

    # -- database helpers, run on the server's loop --------------------------------

    def enqueue(self, call: Any) -> int:
        async def go() -> int:
            job_id: int = await self.broker.enqueue(call)
            assert job_id is not None
            return job_id

        return self.call(go)

    def wait_for(self, job_id: int, *statuses: Status, timeout: float = 15.0) -> Job:
        return self.call(
            lambda: root.wait_for_status(self.broker, job_id, *statuses, timeout=timeout),
            timeout=timeout + 5,
        )

    def job(self, job_id: int) -> Job:
        async def go() -> Job:
            job = await self.broker.get_job(job_id)
            assert job is not None
            return job

        return self.call(go)


@pytest.fixture
def database(pg_server: root.Server) -> Iterator[str]:
    """A fresh, migrated database, made without an event loop of the test's own."""
    name = root._database_name("dash")
    dsn = asyncio.run(pg_server.create_database(name, template=root.TEMPLATE))
    try:
        yield dsn
    finally:
        asyncio.run(pg_server.drop_database(name))


@pytest.fixture
def live(database: str) -> Iterator[Callable[..., LiveDashboard]]:
    """Starts live dashboards on the test's database; all are stopped at its end."""
    started: list[LiveDashboard] = []
    jobs.fixed.clear()

    def start(*, can_act: bool = True, worker: bool = True, **options: Any) -> LiveDashboard:
        server = LiveDashboard(database, can_act=can_act, worker=worker, **options)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            server.stop()
        set_current_broker(None)


@pytest.fixture(scope="session")
def _chromium_present() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        # A browser test that cannot run fails: a skip would pass unseen.
        pytest.fail(f"no headless Chromium here ({', '.join(missing)}): .ci/install installs it")


@pytest.fixture
def browser(_chromium_present: None) -> Iterator[Any]:
    """Headless Chromium, driven by selenium (Debian's chromium and chromium-driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def empty_database_sync(pg_server: root.Server) -> Iterator[str]:
    """An empty (unmigrated) database, made without an event loop of the test's own."""
    name = root._database_name("bare")
    dsn = asyncio.run(pg_server.create_database(name))
    try:
        yield dsn
    finally:
        asyncio.run(pg_server.drop_database(name))
