"""CPU-bound ``def`` jobs: ``koyojobs worker --processes N`` against one process.

Each job is a pure-Python loop of about ``--job-ms`` milliseconds (the loop's
length is measured once here, then passed to every job), so it holds the GIL:
one process runs one at a time, whatever its concurrency. For each process
count, in alternation (``--repeat`` rounds), a real ``koyojobs worker`` is
started on an empty queue of a fresh database and waited for until each of
its children logs "working"; then ``--n`` jobs are enqueued in one call and
the clock runs until the table shows them all done (polled every 10 ms).

    python3 benchmarks/processes.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
    python3 benchmarks/processes.py --processes 1 2 --n 600 --repeat 3

The worker's options: ``--concurrency C`` (default 2) per process, the other
options at their defaults. Prints a markdown table (median, min-max).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from koyojobs import Broker, define_job

HERE = Path(__file__).resolve().parent


@define_job(name="bench_processes.spin", max_attempts=1)
def spin(iterations: int) -> int:
    """A pure-Python loop: CPU work that holds the GIL."""
    return _loop(iterations) & 0xFFFF


def calibrate(ms: float) -> int:
    """Iterations of ``spin``'s loop that take about ``ms`` here (the median of 5 tries)."""
    tries = []
    for _ in range(5):
        started = time.perf_counter()
        _loop(200_000)
        tries.append(time.perf_counter() - started)
    per_iteration = statistics.median(tries) / 200_000
    return max(1, int(ms / 1000 / per_iteration))


def _loop(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def _dsn_for(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


@contextlib.asynccontextmanager
async def fresh_database(admin_dsn: str) -> AsyncIterator[str]:
    name = f"koyojobs_processes_{os.getpid()}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')  # generated name, digits and _
    finally:
        await conn.close()
    try:
        yield _dsn_for(admin_dsn, name)
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def one_run(dsn: str, processes: int, concurrency: int, n: int, iterations: int) -> float:
    """Jobs per second of one worker command of ``processes`` processes."""
    async with Broker(dsn) as broker:
        await broker.pool.execute("TRUNCATE koyojobs_jobs")
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "koyojobs",
            "--log-level",
            "INFO",
            "worker",
            "processes",
            "--dsn",
            dsn,
            "--processes",
            str(processes),
            "--concurrency",
            str(concurrency),
            cwd=HERE,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert worker.stderr is not None
        working = 0
        while working < processes:
            line = await asyncio.wait_for(worker.stderr.readline(), 60)
            if not line:
                raise RuntimeError("the worker exited before it was working")
            working += b"koyojobs.cli: working" in line

        async def drain_stderr() -> None:
            assert worker.stderr is not None
            while await worker.stderr.readline():
                pass

        reader = asyncio.create_task(drain_stderr())
        started = time.perf_counter()
        await broker.enqueue_many(spin(iterations) for _ in range(n))
        while (
            await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs WHERE status = 'done'")
            < n
        ):
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 60)
        await reader
        return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DSN", "postgresql:///postgres"))
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--job-ms", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    iterations = calibrate(args.job_ms)
    rates: dict[int, list[float]] = {p: [] for p in args.processes}
    async with fresh_database(args.dsn) as dsn:
        for _ in range(args.repeat):
            for p in args.processes:  # alternating, so the machine's noise hits each alike
                rate = await one_run(dsn, p, args.concurrency, args.n, iterations)
                rates[p].append(rate)
                print(f"processes={p}: {rate:,.0f} jobs/s", file=sys.stderr)
    base = statistics.median(rates[args.processes[0]])
    print(
        f"\n{args.n} def jobs of ~{args.job_ms:g} ms ({iterations} iterations), "
        f"--concurrency {args.concurrency}, {os.cpu_count()} cores\n"
    )
    print("| --processes | jobs/s, median (min-max) | vs first |")
    print("|---:|---:|---:|")
    for p, values in rates.items():
        median = statistics.median(values)
        print(
            f"| {p} | {median:,.0f} ({min(values):,.0f}-{max(values):,.0f}) | "
            f"{median / base:.2f}x |"
        )


if __name__ == "__main__":
    asyncio.run(main())
