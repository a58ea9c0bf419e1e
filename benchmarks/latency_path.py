"""Where an idle worker's wake latency goes, hop by hop.

The producer (this process) enqueues one job every --interval-ms and notes the
time; a worker in a child process, started with its defaults, notes when the
NOTIFY woke it, when its claim went out and came back, and when the job body
started. All clocks are this machine's wall clock. The worker's hooks wrap two
private methods (``Worker.wake`` and the claim loops' ``_fetch``): this is a diagnostic,
not a benchmark of the public API (``bench_koyojobs.py`` is that).

    python3 benchmarks/latency_path.py --dsn postgresql://postgres@127.0.0.1:5432/postgres

Prints a markdown table of p50 and p90 per hop, and the round trip of a bare
``SELECT 1`` and of a one-row INSERT (no trigger) after the same idle pause,
which bound what any queue can do on this server.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import sys
import time
from typing import Any

import asyncpg
import scaling

from koyojobs import Broker, Database, Worker, define_job, set_current_broker

_starts: dict[int, tuple[float, float]] = {}


@define_job(name="latency_path.noop")
async def noop(seq: int, t_enqueued: float) -> None:
    _starts[seq] = (t_enqueued, time.time())


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values) or [float("nan")]
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.9)]


async def worker_side(dsn: str, jobs: int) -> None:
    wakes: list[float] = []
    claims: list[tuple[float, float]] = []
    async with Database(dsn) as db, Broker(db) as broker:
        worker = Worker(broker)
        plain_wake = worker.wake

        def wake() -> None:
            wakes.append(time.time())
            plain_wake()

        def timed(plain_fetch: Any) -> Any:
            async def fetch(query: str, *args: Any) -> list[asyncpg.Record]:
                sent = time.time()
                rows = await plain_fetch(query, *args)
                if rows and "args" in rows[0]:  # a claim that returned jobs
                    claims.append((sent, time.time()))
                return rows

            return fetch

        worker.wake = wake  # type: ignore[method-assign]
        for lane in worker._lanes:  # the claim loops (one at the default pool_size)
            lane._fetch = timed(lane._fetch)  # type: ignore[method-assign]
        async with worker:
            print("READY", flush=True)
            while len(_starts) < jobs + 1:
                await asyncio.sleep(0.05)
    print(json.dumps({"starts": _starts, "wakes": wakes, "claims": claims}), flush=True)


async def bare_round_trips(dsn: str, pause: float, n: int) -> dict[str, list[float]]:
    conn = await asyncpg.connect(dsn)
    times: dict[str, list[float]] = {"select": [], "insert": []}
    try:
        await conn.execute(
            "CREATE TABLE bare (id bigserial PRIMARY KEY, b bytea)"
        )  # logged, as jobs are
        for i in range(n):
            await asyncio.sleep(pause)
            started = time.perf_counter()
            if i % 2:
                await conn.fetchval("SELECT 1")
                times["select"].append((time.perf_counter() - started) * 1000)
            else:
                await conn.fetchval("INSERT INTO bare (b) VALUES ($1) RETURNING id", b"x" * 60)
                times["insert"].append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    return times


async def producer_side(args: argparse.Namespace) -> None:
    async with scaling.fresh_database(args.dsn) as dsn:
        bare = await bare_round_trips(dsn, args.interval_ms / 1000, 2 * args.jobs)
        await run_jobs(args, dsn, bare)


async def run_jobs(args: argparse.Namespace, dsn: str, bare: dict[str, list[float]]) -> None:
    enqueue_ms: dict[int, float] = {}
    async with Database(dsn) as db, Broker(db) as broker:
        set_current_broker(broker)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--worker",
            dsn,
            str(args.jobs),
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdout is not None
        assert (await child.stdout.readline()).strip() == b"READY"
        await noop(-1, time.time())  # warm-up
        await asyncio.sleep(1.0)
        for seq in range(args.jobs):
            await asyncio.sleep(args.interval_ms / 1000)
            started = time.time()
            await noop(seq, started)
            enqueue_ms[seq] = (time.time() - started) * 1000
        seen = json.loads(await child.stdout.readline())
        await child.wait()
    starts = {int(k): v for k, v in seen["starts"].items() if int(k) >= 0}
    wakes: list[float] = seen["wakes"]
    claims = sorted(seen["claims"])
    hops: dict[str, list[float]] = {
        "enqueue call (INSERT, NOTIFY, commit)": list(enqueue_ms.values()),
        "enqueue -> worker woken by NOTIFY": [],
        "woken -> claim sent": [],
        "claim round trip (UPDATE, commit)": [],
        "claim answered -> job body starts": [],
        "total: enqueue -> job body starts": [],
    }
    for enqueued, began in starts.values():
        hops["total: enqueue -> job body starts"].append((began - enqueued) * 1000)
        w = bisect.bisect_left(wakes, enqueued)
        c = bisect.bisect_left(claims, [wakes[w], 0.0]) if w < len(wakes) else len(claims)
        if c >= len(claims):
            continue
        sent, answered = claims[c]
        hops["enqueue -> worker woken by NOTIFY"].append((wakes[w] - enqueued) * 1000)
        hops["woken -> claim sent"].append((sent - wakes[w]) * 1000)
        hops["claim round trip (UPDATE, commit)"].append((answered - sent) * 1000)
        hops["claim answered -> job body starts"].append((began - answered) * 1000)
    hops[f"bare SELECT 1 after {args.interval_ms:g} ms idle"] = bare["select"]
    hops[f"bare one-row INSERT after {args.interval_ms:g} ms idle"] = bare["insert"]
    print(f"{len(starts)} jobs, one every {args.interval_ms:g} ms\n")
    print("| hop | p50 (ms) | p90 (ms) |\n|---|---|---|")
    for hop, values in hops.items():
        p50, p90 = _percentiles(values)
        print(f"| {hop} | {p50:.3f} | {p90:.3f} |")


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        asyncio.run(worker_side(sys.argv[2], int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    asyncio.run(producer_side(parser.parse_args()))


if __name__ == "__main__":
    main()
