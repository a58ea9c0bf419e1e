"""``koyojobs.sync.enqueue`` from many threads at once, as a threaded web server calls it.

T threads share ``--n`` single-job calls (each one call at a time, no
``connection=``: koyojobs' own connections), for each T of ``--threads``, in
alternation over ``--repeat`` rounds. Reports jobs/s and the per-call p50 and
p99 (medians over rounds). The koyojobs tables of the database are emptied
first: point it at a database of its own.

    python3 benchmarks/sync_threads.py --dsn postgresql://root@127.0.0.1:5432/bench_x
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

import psycopg

from koyojobs import define_job, sync


@define_job(name="bench_sync_threads.noop")
async def noop(seq: int) -> None:
    """Never run: only enqueued."""


def one_run(threads: int, n: int) -> tuple[float, float, float]:
    per = max(1, n // threads)
    calls: list[float] = []
    start = threading.Barrier(threads + 1)

    def work() -> None:
        start.wait()
        mine = []
        for i in range(per):
            began = time.perf_counter()
            sync.enqueue(noop(i))
            mine.append(time.perf_counter() - began)
        calls.extend(mine)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    cut = statistics.quantiles(calls, n=100, method="inclusive")
    return threads * per / elapsed, cut[49] * 1000, cut[98] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DSN", "postgresql:///bench"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sync.configure(dsn=args.dsn)
    sync.enqueue(noop(-1))  # the schema must exist: created by a Broker before
    found: dict[int, list[tuple[float, float, float]]] = {t: [] for t in args.threads}
    for _ in range(args.repeat):
        for threads in args.threads:
            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE koyojobs_jobs")
            found[threads].append(one_run(threads, args.n))
            rate, p50, p99 = found[threads][-1]
            print(
                f"threads={threads}: {rate:,.0f} jobs/s p50 {p50:.1f} p99 {p99:.1f} ms",
                file=sys.stderr,
            )
    print(f"\n{args.n} sync.enqueue calls, medians of {args.repeat}\n")
    print("| threads | jobs/s | call p50 (ms) | call p99 (ms) |")
    print("|---:|---:|---:|---:|")
    for threads, rows in found.items():
        rate, p50, p99 = (statistics.median(r[i] for r in rows) for i in range(3))
        print(f"| {threads} | {rate:,.0f} | {p50:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    main()
