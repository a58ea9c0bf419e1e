"""Retention at steady state: enqueue and drain together, done jobs kept one minute.

One process: an enqueuer adds --rate jobs a second (a statement of --batch
every --batch/--rate seconds), one worker (--concurrency slots) drains them,
and the broker's retention keeps done jobs for --keep seconds, so the
worker's pruner deletes them in batches while it drains. Every --sample
seconds it prints the table's size (heap + indexes + TOAST), its rows by
status, the jobs drained in the interval per second, and the jobs pruned.
The table's size and the drain rate should stay flat once the first
retention period has passed.

    python3 benchmarks/retention_soak.py --minutes 10 --rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from datetime import timedelta
from typing import Any

from koyojobs import Broker, Worker, define_job
from koyojobs.testing import TemporaryPostgres

_done = 0


@define_job(name="soak.retention_noop")
async def noop(n: int) -> None:
    global _done
    _done += 1


async def _enqueue(broker: Broker, rate: float, batch: int, stop: asyncio.Event) -> None:
    period = batch / rate
    n = 0
    next_at = time.monotonic()
    while not stop.is_set():
        await broker.enqueue_many(noop(n + i) for i in range(batch))
        n += batch
        next_at += period
        # A steady rate: the next statement at its time, not a fixed nap after this one.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))


_SAMPLE = """
SELECT pg_total_relation_size('koyojobs_jobs') AS bytes,
       count(*) FILTER (WHERE status = 'done') AS done,
       count(*) FILTER (WHERE status IN ('ready', 'running')) AS pending
  FROM koyojobs_jobs
"""


async def measure(args: argparse.Namespace, dsn: str) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    keep = timedelta(seconds=args.keep)
    async with Broker(dsn, retention={"done": keep}) as broker:
        stop = asyncio.Event()
        async with Worker(broker, pool_size=args.concurrency):
            enqueuer = asyncio.create_task(_enqueue(broker, args.rate, args.batch, stop))
            started = last = time.monotonic()
            drained_before = 0
            ids_before = 0
            while time.monotonic() - started < args.minutes * 60:
                await asyncio.sleep(args.sample)  # the sampling period
                now = time.monotonic()
                row = await broker.pool.fetchrow(_SAMPLE)
                enqueued = await broker.pool.fetchval(
                    "SELECT coalesce(max(id), 0) FROM koyojobs_jobs"
                )
                sample = {
                    "t": round(now - started),
                    "table_mb": round(row["bytes"] / 2**20, 1),
                    "done_rows": row["done"],
                    "pending": row["pending"],
                    "drained_per_s": round((_done - drained_before) / (now - last)),
                    "enqueued_per_s": round((enqueued - ids_before) / (now - last)),
                    "pruned_so_far": _done - row["done"],
                }
                drained_before, ids_before, last = _done, enqueued, now
                samples.append(sample)
                print(json.dumps(sample), flush=True)
            stop.set()
            await enqueuer
    return samples


def chart(samples: list[dict[str, Any]]) -> str:
    """A text chart: the table's size, its done rows and the drain rate per sample."""
    most_mb = max(s["table_mb"] for s in samples) or 1
    lines = ["   t | table MB                             | rows (done) | drained/s"]
    for s in samples:
        bar = "#" * round(30 * s["table_mb"] / most_mb)
        lines.append(
            f"{s['t']:4}s | {s['table_mb']:5.1f} {bar:<30} | {s['done_rows']:11,} "
            f"| {s['drained_per_s']:5}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a database to use (default: a throwaway cluster)")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=1000, help="jobs enqueued per second")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--keep", type=float, default=60, help="seconds done jobs are kept")
    parser.add_argument("--sample", type=float, default=30)
    args = parser.parse_args()
    if args.dsn:
        samples = asyncio.run(measure(args, args.dsn))
    else:
        with TemporaryPostgres() as server:
            samples = asyncio.run(measure(args, server.dsn))
    print(chart(samples))


if __name__ == "__main__":
    main()
