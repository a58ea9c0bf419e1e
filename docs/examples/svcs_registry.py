"""koyojobs components in an svcs registry, with health checks.

`svcs <https://svcs.hynek.me>`_ keeps one :class:`svcs.Registry` per
application and hands services out through per-request
:class:`svcs.Container` objects. Here the :class:`~koyojobs.Database`, the
:class:`~koyojobs.Broker` and (optionally) a :class:`~koyojobs.Worker` are
started once, registered as values with a ``ping`` each for a health
endpoint, and stopped by :meth:`svcs.Registry.aclose` in reverse order of
registration (the worker, then the broker, then the pool)::

    registry = await create_registry("postgresql://localhost/app")
    try:
        async with svcs.Container(registry) as container:
            broker = await container.aget(Broker)
            job_id = await broker.enqueue(send_report("weekly"))
            for ping in container.get_pings():  # e.g. in GET /health
                await ping.aping()
    finally:
        await registry.aclose()
"""

from __future__ import annotations

from typing import Any

import svcs

from koyojobs import Broker, Database, Worker, define_job

__all__ = ["create_registry", "ping_broker", "ping_database", "send_report"]


@define_job(name="examples.svcs.send_report")
async def send_report(kind: str) -> str:
    return f"{kind} report sent"


async def ping_database(db: Database) -> None:
    """Raises unless the pool can run a query."""
    await db.pool.fetchval("SELECT 1")


async def ping_broker(broker: Broker) -> None:
    """Raises unless the broker is started and its pool can run a query."""
    await broker.pool.fetchval("SELECT 1")  # broker.pool raises if the broker is stopped


async def create_registry(
    dsn: str, *, run_worker: bool = True, queue: str = "default", **worker_options: Any
) -> svcs.Registry:
    """Start the koyojobs components on ``dsn`` and register them.

    Close the registry (``await registry.aclose()``) to stop them.
    ``worker_options`` go to the :class:`~koyojobs.Worker`.
    """
    registry = svcs.Registry()
    try:
        # Each component is registered as soon as it has started, so that
        # closing the registry stops exactly those that did.
        db = Database(dsn)
        await db.start()
        registry.register_value(Database, db, ping=ping_database, on_registry_close=db.stop)
        broker = Broker(db)
        await broker.start()
        registry.register_value(Broker, broker, ping=ping_broker, on_registry_close=broker.stop)
        if run_worker:
            worker = Worker(broker, queue=queue, **worker_options)
            await worker.start()
            registry.register_value(Worker, worker, on_registry_close=worker.stop)
    except BaseException:
        await registry.aclose()
        raise
    return registry
