"""Where COPY wins over the unnest INSERT for ``enqueue_many``: the threshold of koyojobs.bulk.

For each batch size, ``broker.enqueue_many`` of that many plain calls (built
outside the timed region) is sent both ways in alternation, ``--repeat``
times each, by moving ``koyojobs.bulk.COPY_FROM`` (1: always COPY; above the
size: always the INSERT). The table is emptied before each. Prints a markdown
table of the medians.

    python3 benchmarks/bulk_copy.py --dsn postgresql://root@127.0.0.1:5432/bench_x
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import koyojobs.bulk as bulk
from koyojobs import Broker, define_job


@define_job(name="bench_bulk_copy.noop")
async def noop(seq: int, t: float) -> None:
    """Never run: only enqueued."""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DSN", "postgresql:///bench"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000, 2000, 5000, 20000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("| calls | INSERT (jobs/s) | COPY (jobs/s) | COPY / INSERT |")
    print("|---:|---:|---:|---:|")
    async with Broker(args.dsn) as broker:
        for size in args.sizes:
            took: dict[str, list[float]] = {"insert": [], "copy": []}
            for _ in range(args.repeat):
                for way, threshold in (("insert", size + 1), ("copy", 1)):
                    bulk.COPY_FROM = threshold
                    await broker.pool.execute("TRUNCATE koyojobs_jobs")
                    calls = [noop(i, 0.0) for i in range(size)]
                    began = time.perf_counter()
                    ids = await broker.enqueue_many(calls)
                    took[way].append(time.perf_counter() - began)
                    assert ids == sorted(ids)
                    assert len(ids) == size
            insert, copy = (statistics.median(took[w]) for w in ("insert", "copy"))
            print(
                f"| {size:,} | {size / insert:,.0f} | {size / copy:,.0f} | {insert / copy:.2f}x |"
            )


if __name__ == "__main__":
    asyncio.run(main())
