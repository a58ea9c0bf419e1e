"""A long drain, traced: the rate and what one claim reads, every few seconds.

Enqueues --jobs no-op jobs into a fresh database, drains them with one worker
(concurrency 16, its defaults otherwise), and every --every seconds prints the
drain rate since the last line and ``EXPLAIN (ANALYZE, BUFFERS)`` of the claim's
scan of ready jobs: how many index and heap pages it touched and how long it
took. With ``--vacuum-threshold 0`` the worker leaves the table to autovacuum,
which shows what dead index entries cost a claim.

    python3 benchmarks/backlog_trace.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
    python3 benchmarks/backlog_trace.py --vacuum-threshold 0   # nothing vacuums the table
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import time

import scaling

from koyojobs import Broker, Database, Worker

# The claim's scan of ready jobs, as finish_and_claim runs it (without the update).
_CLAIM_SCAN = (
    "EXPLAIN (ANALYZE, BUFFERS) SELECT id FROM koyojobs_jobs"
    " WHERE queue = 'default' AND status = 'ready' AND scheduled_at <= now()"
    " ORDER BY priority, scheduled_at, id LIMIT 16 FOR UPDATE SKIP LOCKED"
)


async def trace(args: argparse.Namespace) -> None:
    async with scaling.fresh_database(args.dsn) as dsn, Database(dsn) as db, Broker(db) as broker:
        rate_in = await scaling.enqueue(broker, scaling._noops(args.jobs, ["default"]))
        print(f"enqueued {args.jobs:,} jobs at {rate_in:,.0f}/s", flush=True)
        await broker.pool.execute("ANALYZE koyojobs_jobs")
        all_ran = asyncio.Event()
        scaling._count, scaling._target, scaling._all_ran = 0, args.jobs, all_ran
        worker = Worker(broker, pool_size=16, vacuum_threshold=args.vacuum_threshold or None)
        print("| done | jobs/s since last line | claim scan: pages | claim scan: ms |")
        print("|---|---|---|---|")
        started = last_time = time.perf_counter()
        last_count = 0
        async with worker:
            while not all_ran.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(args.every):
                        await all_ran.wait()
                plan = "\n".join(r[0] for r in await broker.pool.fetch(_CLAIM_SCAN))
                pages = max((int(p) for p in re.findall(r"shared hit=(\d+)", plan)), default=0)
                ms = float(re.findall(r"Execution Time: ([\d.]+)", plan)[-1])
                now, count = time.perf_counter(), scaling._count
                rate = (count - last_count) / (now - last_time)
                print(f"| {count:,} | {rate:,.0f} | {pages:,} | {ms:.2f} |", flush=True)
                last_time, last_count = now, count
        elapsed = time.perf_counter() - started
        print(f"\ndrained {args.jobs:,} jobs at {args.jobs / elapsed:,.0f}/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between lines")
    parser.add_argument(
        "--vacuum-threshold",
        type=int,
        default=50_000,
        help="the worker's; 0 leaves it to autovacuum",
    )
    parser.add_argument(
        "--log-vacuums", action="store_true", help="log each VACUUM the worker runs"
    )
    args = parser.parse_args()
    if args.log_vacuums:
        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("koyojobs.maintenance").setLevel(logging.INFO)
    asyncio.run(trace(args))


if __name__ == "__main__":
    main()
