"""What migration 0009's index of ready jobs costs a bulk enqueue.

Alternates bulk enqueues of ``--n`` calls (``enqueue_many``: COPY from 2,000
calls) into one database with and without ``koyojobs_jobs_ready_filter_idx``
(the console's exact filters of ready jobs by name), the table emptied and
checkpointed before each. Prints the medians and their ratio.

    python3 benchmarks/bulk_index.py --dsn postgresql://root@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import asyncpg

from koyojobs import Broker, Database, define_job

INDEX = (
    'CREATE INDEX koyojobs_jobs_ready_filter_idx ON koyojobs_jobs (name COLLATE "C", queue, id) '
    "WHERE status = 'ready'"
)


@define_job(name="bench_bulk_index.noop")
async def noop(seq: int) -> None:
    return None


async def main(dsn: str, n: int, rounds: int) -> None:
    base, _, _ = dsn.rpartition("/")
    admin = await asyncpg.connect(dsn)
    await admin.execute("DROP DATABASE IF EXISTS koyojobs_bulk_index")
    await admin.execute("CREATE DATABASE koyojobs_bulk_index")
    await admin.close()
    async with Database(f"{base}/koyojobs_bulk_index") as db, Broker(db) as broker:
        rates: dict[str, list[float]] = {"with": [], "without": []}
        for r in range(rounds):
            for variant in ("with", "without") if r % 2 else ("without", "with"):
                await broker.pool.execute("TRUNCATE koyojobs_jobs")
                await broker.pool.execute("DROP INDEX IF EXISTS koyojobs_jobs_ready_filter_idx")
                if variant == "with":
                    await broker.pool.execute(INDEX)
                await broker.pool.execute("CHECKPOINT")
                started = time.perf_counter()
                await broker.enqueue_many([noop(i) for i in range(n)])
                rates[variant].append(n / (time.perf_counter() - started))
        for variant, values in rates.items():
            print(
                f"{variant} the index: {statistics.median(values):,.0f} jobs/s "
                f"(min {min(values):,.0f}, max {max(values):,.0f})"
            )
        ratio = statistics.median(rates["with"]) / statistics.median(rates["without"])
        print(f"with / without: {ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.n, args.rounds))
