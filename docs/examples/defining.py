"""Defining and enqueuing jobs: options, scheduling, transactions, bulk."""

import asyncio
from datetime import UTC, datetime, timedelta

import pendulum

from koyojobs import Broker, Status, Worker, define_job, schedule_at, set_current_broker


@define_job(name="docs.resize_image", queue="images", priority=10, max_attempts=5, timeout=60)
def resize_image(path: str, width: int) -> str:
    # A plain def runs on the worker's thread pool: blocking work is fine here.
    return f"{path}@{width}"


@define_job(name="docs.send_reminder", backoff=lambda attempt: 30 * attempt)
async def send_reminder(user_id: int) -> None: ...


async def main(dsn: str) -> None:
    async with Broker(dsn) as broker:
        set_current_broker(broker)

        # Await a call to enqueue it; the id comes back.
        job_id = await resize_image("cat.png", width=640)

        # No earlier than a time (pendulum, or any timezone-aware datetime).
        await schedule_at(pendulum.now().add(hours=1), send_reminder(7))
        await schedule_at(datetime.now(UTC) + timedelta(days=1), send_reminder(8))

        # Inside your own transaction: rolled back, the job never existed.
        async with broker.pool.acquire() as conn, conn.transaction():
            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS orders (id int)")
            await conn.execute("INSERT INTO orders VALUES (1)")
            await broker.enqueue(send_reminder(1), connection=conn)

        # Many at once: one statement, one round trip.
        ids = await broker.enqueue_many(resize_image(f"{n}.png", 320) for n in range(100))
        assert ids is not None and len(ids) == 100

        async with Worker(broker, queue="images", pool_size=4):
            while (job := await broker.get_job(job_id)) and job.status is not Status.DONE:
                await asyncio.sleep(0.01)
        assert job is not None
        print(job.result)  # cat.png@640
        set_current_broker(None)
