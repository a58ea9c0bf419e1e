"""Wiring the database, the broker and a worker into a System."""

import asyncio

from koyojobs import Broker, Database, Status, System, Worker, define_job, set_current_broker


@define_job(name="docs.add")
async def add(a: int, b: int) -> int:
    return a + b


def build_system(dsn: str) -> System:
    system = System()
    system.add("db", lambda: Database(dsn, max_size=10))
    system.add("broker", Broker, depends_on=["db"])  # Broker(db)
    system.add("worker", lambda broker: Worker(broker, pool_size=8), depends_on=["broker"])
    return system


async def main(dsn: str) -> None:
    async with build_system(dsn) as system:  # starts db, broker, worker; stops in reverse
        broker: Broker = system["broker"]
        set_current_broker(broker)
        job_id = await add(2, 3)
        while (job := await broker.get_job(job_id)) and job.status is not Status.DONE:
            await asyncio.sleep(0.01)
        assert job is not None
        print(job.result)  # 5
        set_current_broker(None)
