"""What koyojobs.sync costs, next to the async path, in the same run.

1. One job per call, one call after the other: ``await broker.enqueue(call)``
   (asyncpg, the broker's pool) against ``koyojobs.sync.enqueue(call)`` (psycopg,
   koyojobs' own connection), in alternating rounds so that both see the same
   server and the same machine load.
2. Inside a caller's psycopg transaction: the messages one enqueue sends and
   receives, from libpq's trace: one flight out, one answer back is one round trip.
3. The wake-up: a worker in a child process (``koyojobs worker``, poll interval
   30 s) runs each job as it is committed by ``koyojobs.sync``; the job notes
   when it started, against the time of the commit.

    python3 benchmarks/sync_enqueue.py                 # a throwaway cluster of its own
    python3 benchmarks/sync_enqueue.py --dsn postgresql://postgres@127.0.0.1:5432/postgres

Prints a markdown table and one JSON line. The database's koyojobs tables are
emptied first: point it at a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from koyojobs import Broker, define_job, sync
from koyojobs.testing import TemporaryPostgres

HERE = Path(__file__).resolve().parent


@define_job(name="sync_enqueue.noop")
def noop(seq: int) -> float:
    return time.time()


def _per_call_us(timings: list[float]) -> dict[str, float]:
    ordered = sorted(timings)
    return {
        "mean_us": statistics.fmean(timings) * 1e6,
        "p50_us": ordered[len(ordered) // 2] * 1e6,
        "p90_us": ordered[int(len(ordered) * 0.9)] * 1e6,
    }


async def _async_round(broker: Broker, n: int) -> list[float]:
    timings = []
    for i in range(n):
        started = time.perf_counter()
        await broker.enqueue(noop(i))
        timings.append(time.perf_counter() - started)
    return timings


def _sync_round(n: int) -> list[float]:
    timings = []
    for i in range(n):
        started = time.perf_counter()
        sync.enqueue(noop(i))
        timings.append(time.perf_counter() - started)
    return timings


async def single_enqueues(dsn: str, n: int, rounds: int) -> dict[str, dict[str, float]]:
    async_times: list[float] = []
    sync_times: list[float] = []
    async with Broker(dsn) as broker:
        await _async_round(broker, 200)  # warm: connections, prepared statements
        await asyncio.to_thread(_sync_round, 200)
        for _ in range(rounds):
            async_times += await _async_round(broker, n)
            # In a thread: koyojobs.sync refuses to run inside an event loop.
            sync_times += await asyncio.to_thread(_sync_round, n)
        await broker.pool.execute("TRUNCATE koyojobs_jobs")
    return {"async": _per_call_us(async_times), "sync": _per_call_us(sync_times)}


def round_trips_in_a_transaction(dsn: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder, psycopg.connect(dsn) as conn:
        trace = Path(folder) / "trace"
        with conn.transaction():
            sync.enqueue(noop(0), connection=conn)  # the transaction is open; warm
            with trace.open("w") as out:
                conn.pgconn.trace(out.fileno())
                sync.enqueue(noop(1), connection=conn)
                conn.pgconn.untrace()
            raise psycopg.Rollback()  # leave nothing behind
        messages = [
            (fields[1], fields[3])
            for fields in (line.split("\t") for line in trace.read_text().splitlines())
            if len(fields) > 3 and fields[1] in ("F", "B")
        ]
    # A new flight starts where the client speaks again after the server answered.
    flights = 1 + sum(1 for a, b in itertools.pairwise(messages) if a[0] == "B" != b[0])
    return {
        "sent": [kind for direction, kind in messages if direction == "F"],
        "received": [kind for direction, kind in messages if direction == "B"],
        "round_trips": flights,
    }


@contextlib.contextmanager
def cli_worker(dsn: str) -> Iterator[None]:
    worker = subprocess.Popen(
        [sys.executable, "-m", "koyojobs", "worker", "sync_enqueue", "--poll-interval", "30"],
        cwd=HERE,
        env={**os.environ, "KOYOJOBS_DSN": dsn},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    for line in worker.stderr:
        if "working" in line:
            break
    else:
        raise RuntimeError("the worker exited before working")
    drain = threading.Thread(target=worker.stderr.read, daemon=True)
    drain.start()
    try:
        yield
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


async def wake_latency(dsn: str, jobs: int) -> dict[str, float]:
    committed: dict[int, float] = {}
    with cli_worker(dsn):

        def produce() -> None:
            for seq in range(jobs):
                job_id = sync.enqueue(noop(seq))  # autocommit: committed on return
                assert job_id is not None
                committed[job_id] = time.time()
                time.sleep(0.05)  # pacing: each job finds the worker idle

        await asyncio.to_thread(produce)
        async with Broker(dsn) as broker:
            delays = []
            for job_id, at in committed.items():
                for _ in range(500):
                    job = await broker.get_job(job_id)
                    if job is not None and job.result is not None:
                        break
                    await asyncio.sleep(0.01)
                assert job is not None
                assert job.result is not None, job
                delays.append(job.result - at)
            await broker.pool.execute("TRUNCATE koyojobs_jobs")
    ordered = sorted(delays)
    return {
        "p50_ms": ordered[len(ordered) // 2] * 1e3,
        "p90_ms": ordered[int(len(ordered) * 0.9)] * 1e3,
        "max_ms": ordered[-1] * 1e3,
    }


async def main(dsn: str, n: int, rounds: int, jobs: int) -> None:
    os.environ["KOYOJOBS_DSN"] = dsn
    sync.configure()
    async with Broker(dsn) as broker:  # migrates
        await broker.pool.execute("TRUNCATE koyojobs_jobs")
    singles = await single_enqueues(dsn, n, rounds)
    trips = await asyncio.to_thread(round_trips_in_a_transaction, dsn)
    wake = await wake_latency(dsn, jobs)
    ratio = singles["sync"]["mean_us"] / singles["async"]["mean_us"]
    print(f"| enqueue one job ({n} x {rounds} rounds each) | mean µs | p50 µs | p90 µs |")
    print("|---|---:|---:|---:|")
    for label, key in (
        ("async `await broker.enqueue`", "async"),
        ("`koyojobs.sync.enqueue`", "sync"),
    ):
        row = singles[key]
        print(f"| {label} | {row['mean_us']:.0f} | {row['p50_us']:.0f} | {row['p90_us']:.0f} |")
    print(f"\nsync / async, mean: {ratio:.2f}x")
    print(
        f"in a caller's transaction: {trips['round_trips']} round trip "
        f"(sent {', '.join(trips['sent'])}; received {', '.join(trips['received'])})"
    )
    print(
        f"commit -> job start, CLI worker polling every 30 s ({jobs} jobs): "
        f"p50 {wake['p50_ms']:.1f} ms, p90 {wake['p90_ms']:.1f} ms, max {wake['max_ms']:.1f} ms"
    )
    print(json.dumps({"single": singles, "ratio": ratio, "transaction": trips, "wake": wake}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="default: a throwaway cluster started here")
    parser.add_argument("--n", type=int, default=2000, help="enqueues per round and path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=100, help="jobs for the wake-up latency")
    options = parser.parse_args()
    with contextlib.ExitStack() as stack:
        dsn = options.dsn or stack.enter_context(TemporaryPostgres()).dsn
        asyncio.run(main(dsn, options.n, options.rounds, options.jobs))
