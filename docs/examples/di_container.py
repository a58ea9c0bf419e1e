"""koyojobs components as dependency-injector resources.

`dependency-injector <https://python-dependency-injector.ets-labs.org>`_
resources have an init and a shutdown; an async generator gives both, so the
:class:`~koyojobs.Database`, the :class:`~koyojobs.Broker` and a
:class:`~koyojobs.Worker` each become a :class:`~dependency_injector.providers.Resource`
that starts its component, yields it, and stops it. ``init_resources()``
starts them in dependency order; ``shutdown_resources()`` stops them in
reverse::

    container = Container()
    container.config.dsn.from_env("KOYOJOBS_DSN", required=True)
    await container.init_resources()
    try:
        broker = await container.broker()
        job_id = await broker.enqueue(resize_image("cat.png", 128))
    finally:
        await container.shutdown_resources()
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from dependency_injector import containers, providers

from koyojobs import Broker, Database, Worker, define_job

__all__ = ["Container", "broker_resource", "database_resource", "resize_image", "worker_resource"]


@define_job(name="examples.di.resize_image")
def resize_image(path: str, width: int) -> str:  # a plain def runs on the worker's threads
    return f"{path} resized to {width}px"


async def database_resource(dsn: str) -> AsyncIterator[Database]:
    async with Database(dsn) as db:
        yield db


async def broker_resource(database: Database) -> AsyncIterator[Broker]:
    async with Broker(database) as broker:  # starting it migrates the schema
        yield broker


async def worker_resource(
    broker: Broker, queue: str = "default", options: dict[str, Any] | None = None
) -> AsyncIterator[Worker]:
    async with Worker(broker, queue=queue, **(options or {})) as worker:
        yield worker


class Container(containers.DeclarativeContainer):
    """``config``: ``dsn`` (required), ``queue`` and ``worker`` (options of the Worker)."""

    config = providers.Configuration(default={"queue": "default", "worker": {}})

    database = providers.Resource(database_resource, dsn=config.dsn.required())
    broker = providers.Resource(broker_resource, database=database)
    worker = providers.Resource(
        worker_resource, broker=broker, queue=config.queue, options=config.worker
    )
