"""Wake latency with many producers at once: one producer against 64, same pace.

The peers' ``latency`` workload enqueues one job every 20 ms from one task,
so only one call is ever in flight. Here P producer tasks of one process
share one broker (as a web app's requests do) and enqueue ``--jobs`` jobs
on a fixed schedule, one every ``--interval-ms`` in all, job i by task
i mod P; each job's payload carries the monotonic time read just before its
enqueue call, and the worker (``benchmarks/bench_koyojobs.py`` re-executed as
its worker process, concurrency 16) records ``now - t`` at entry, as the
peers' workload does. With 64 producers, calls that fall at the same moment
are coalesced (koyojobs.enqueuer); this measures what that does to the wake-up.

    python3 benchmarks/latency_producers.py --dsn postgresql://root@127.0.0.1:5432/bench_x
    python3 benchmarks/latency_producers.py --producers 1 64 --jobs 1000 --interval-ms 2

Prints a markdown table: for each producer count (alternating, ``--repeat``
rounds), the median over rounds of each percentile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_koyojobs as bk  # the adapter, beside this script


async def one_run(dsn: str, producers: int, jobs: int, interval: float) -> list[float]:
    args = bk.parse_args(["--dsn", dsn, "--latency-jobs", str(jobs)])
    bench = bk.KoyojobsBench(args)
    await bk.sql_run(dsn, bk.RESET_SQL)
    worker = bk.WorkerProcess(args, "latency", jobs)
    await bench.open_producer()
    try:
        await worker.start()
        await worker.wait(worker.ready, 60, "worker READY")
        await bench.enqueue_one(-1, bk.now())
        await worker.wait(worker.warm, 60, "warm-up job")
        await asyncio.sleep(1.0)
        start = bk.now() + 0.05

        async def producer(k: int) -> None:
            for i in range(k, jobs, producers):
                pause = start + i * interval - bk.now()
                if pause > 0:
                    await asyncio.sleep(pause)
                await bench.enqueue_one(i, bk.now())

        await asyncio.gather(*(producer(k) for k in range(producers)))
        await asyncio.wait_for(worker.all_latencies.wait(), 60)
    finally:
        await bench.close_producer()
        await worker.stop()
    return list(worker.latencies.values())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DSN", "postgresql:///bench"))
    parser.add_argument("--producers", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--interval-ms", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    await bk.KoyojobsBench(bk.parse_args(["--dsn", args.dsn])).install()
    found: dict[int, list[tuple[float, float, float]]] = {p: [] for p in args.producers}
    for _ in range(args.repeat):
        for p in args.producers:
            samples = await one_run(args.dsn, p, args.jobs, args.interval_ms / 1000)
            row = tuple(bk.percentile(samples, q) for q in (50, 95, 99))
            found[p].append((row[0], row[1], row[2]))
            print(
                f"producers={p}: p50 {row[0]:.2f} p95 {row[1]:.2f} p99 {row[2]:.2f} ms",
                file=sys.stderr,
            )
    print(
        f"\n{args.jobs} jobs, one every {args.interval_ms:g} ms in all, medians of {args.repeat}\n"
    )
    print("| producers | latency p50 (ms) | p95 (ms) | p99 (ms) |")
    print("|---:|---:|---:|---:|")
    for p, rows in found.items():
        cells = [statistics.median(r[i] for r in rows) for i in range(3)]
        print(f"| {p} | {cells[0]:.2f} | {cells[1]:.2f} | {cells[2]:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
