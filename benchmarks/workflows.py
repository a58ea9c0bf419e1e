"""What workflows cost: a fan-out/fan-in and a chain beside plain jobs, in one run.

Variants run in turn (round 1: every variant, round 2: every variant, ...) so a
busy machine slows them alike; each run is a fresh database on --dsn (or on a
throwaway cluster when --dsn is not given). The drain is benchmarks/scaling.py's
(one in-process worker of --concurrency slots, an async no-op job that counts
itself); medians and ranges.

- ``plain``: --jobs plain jobs, enqueued with ``enqueue_many`` and drained.
- ``plain, no release CTEs``: the same, with ``finish_and_claim`` stripped of
  the workflow CTEs (in this process only): what they cost a drain of plain
  jobs, which end no step.
- ``fan-out + fan-in``: a workflow of --jobs parallel steps and one step
  after all of them (``group(...).then(...)``), enqueued in one statement and
  drained. Its rate counts the --jobs + 1 steps.
- ``chain``: --chain steps, each after the previous: seconds per step (a
  step's end releases the next, whose NOTIFY wakes the worker to claim it),
  and the gaps between step starts in the chain's first and last tenth (a
  chain must not slow down as it goes).
- ``one plain job at a time``: --chain plain jobs, each enqueued once the
  previous is done (``broker.wait``): seconds per job, for the chain's scale.
- the statement alone: ``finish_and_claim`` of plain jobs as shipped and
  without the workflow CTEs, in turns on one connection (see
  :func:`statement_cost`): the steadiest view of what plain jobs pay.

    python3 benchmarks/workflows.py --dsn postgresql://root@127.0.0.1:5432/postgres --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scaling  # the drain and enqueue of the scaling benchmark

from koyojobs import Broker, Status, Worker, chain, group
from koyojobs.outcomes import Outcome, as_columns, succeeded
from koyojobs.sql import QUERIES
from koyojobs.testing import TemporaryPostgres

SHIPPED = QUERIES["finish_and_claim"]
_RELEASE_START = SHIPPED.index(", ended AS (")
_RELEASE_END = SHIPPED.index(", picked AS (")
WITHOUT_RELEASE = SHIPPED[:_RELEASE_START] + SHIPPED[_RELEASE_END:]

_chain_ends: list[tuple[float, float]] = []
"""Per chain run: the mean gap between step starts in its first and last tenth."""

DRAINS = ["plain", "plain, no release CTEs", "fan-out + fan-in"]
LATENCIES = ["chain", "one plain job at a time"]


@contextlib.contextmanager
def _claim_query(variant: str) -> Iterator[None]:
    if variant == "plain, no release CTEs":
        QUERIES["finish_and_claim"] = WITHOUT_RELEASE
    try:
        yield
    finally:
        QUERIES["finish_and_claim"] = SHIPPED


async def run_drain(admin_dsn: str, variant: str, n: int, slots: int) -> dict[str, float]:
    async with scaling.fresh_database(admin_dsn) as dsn, Broker(dsn) as broker:
        started = time.perf_counter()
        if variant == "fan-out + fan-in":
            wf = group(*(scaling.noop(i) for i in range(n))).then(scaling.noop(-1))
            await broker.enqueue(wf)
            bodies = n + 1
        else:
            await broker.enqueue_many([scaling.noop(i) for i in range(n)])
            bodies = n
        enqueue_rate = bodies / (time.perf_counter() - started)
        with _claim_query(variant):
            rate = await scaling.drain(broker, bodies, ["default"], slots)
        left = await broker.pool.fetchval(
            "SELECT count(*) FROM koyojobs_jobs WHERE status <> 'done'"
        )
        assert left == 0, f"{variant}: {left} jobs not done"
        return {"rate": rate, "enqueue": enqueue_rate}


async def run_latency(admin_dsn: str, variant: str, n: int, slots: int) -> float:
    async with scaling.fresh_database(admin_dsn) as dsn, Broker(dsn) as broker:
        worker = Worker(broker, pool_size=slots)
        await worker.start()
        try:
            scaling._count, scaling._target = 0, -1
            started = time.perf_counter()
            if variant == "chain":
                run = await broker.enqueue(chain(*(scaling.noop(i) for i in range(n))))
                last = max(run.job_ids.values())
                job = await broker.wait(last, timeout=600)
                assert job.status is Status.DONE
                elapsed = (time.perf_counter() - started) / n
                starts = await broker.pool.fetch(
                    "SELECT extract(epoch FROM started_at)::float8 AS t "
                    "FROM koyojobs_jobs ORDER BY id"
                )
                gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(starts)]
                tenth = max(1, len(gaps) // 10)
                _chain_ends.append((statistics.mean(gaps[:tenth]), statistics.mean(gaps[-tenth:])))
                return elapsed
            else:
                for i in range(n):
                    job_id = await broker.enqueue(scaling.noop(i))
                    await broker.wait(job_id, timeout=60)
            return (time.perf_counter() - started) / n
        finally:
            await worker.stop()


async def statement_cost(admin_dsn: str, blocks: int) -> dict[str, float]:
    """ms per round of finish_and_claim, as shipped and without the workflow CTEs.

    One connection as a worker's (generic plans), 16 outcomes written and 16
    plain jobs claimed a round; the two statements take turns, 50 rounds at
    a time, so that the machine's ups and downs fall on both alike.
    """
    async with scaling.fresh_database(admin_dsn) as dsn, Broker(dsn) as broker:
        for _ in range(6):
            await broker.enqueue_many([scaling.noop(i) for i in range(20_000)])
        await broker.pool.execute("ANALYZE koyojobs_jobs")
        conn = await broker.database.connect(
            timeout=10, role="koyojobs-worker", settings={"plan_cache_mode": "force_generic_plan"}
        )
        try:
            spent = {"as shipped": 0.0, "without the workflow CTEs": 0.0}
            outcomes: list[Outcome] = []
            done = succeeded(b"x")
            for _ in range(blocks):
                for name, query in zip(spent, (SHIPPED, WITHOUT_RELEASE), strict=True):
                    started = time.perf_counter()
                    for _ in range(50):
                        rows = await conn.fetch(
                            query, "default", 16, 30.0, "w", *as_columns(outcomes)
                        )
                        outcomes = [(r["id"], r["attempts"], done) for r in rows]
                    spent[name] += time.perf_counter() - started
            return {name: seconds / (blocks * 50) * 1000 for name, seconds in spent.items()}
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def _server(dsn: str | None) -> AsyncIterator[str]:
    if dsn:
        yield dsn
        return
    with TemporaryPostgres() as cluster:
        yield cluster.dsn


async def measure(args: argparse.Namespace) -> None:
    drains: dict[str, list[dict[str, float]]] = {v: [] for v in DRAINS}
    latencies: dict[str, list[float]] = {v: [] for v in LATENCIES}
    async with _server(args.dsn) as admin_dsn:
        for round_ in range(args.rounds):
            # Each round starts with another variant: the first of a round
            # runs on a machine that is not yet warm.
            for variant in DRAINS[round_ % len(DRAINS) :] + DRAINS[: round_ % len(DRAINS)]:
                result = await run_drain(admin_dsn, variant, args.jobs, args.concurrency)
                drains[variant].append(result)
                print(f"round {round_ + 1} {variant}: {result['rate']:,.0f}/s", file=sys.stderr)
            for variant in LATENCIES:
                seconds = await run_latency(admin_dsn, variant, args.chain, args.concurrency)
                latencies[variant].append(seconds)
                print(f"round {round_ + 1} {variant}: {seconds * 1000:.2f} ms", file=sys.stderr)
        statement = await statement_cost(admin_dsn, args.blocks)
    print("\nfinish_and_claim of plain jobs, ms per round (16 written, 16 claimed)")
    for name, ms in statement.items():
        print(f"- {name}: {ms:.3f}")
    print(
        f"\n{args.jobs:,} no-op jobs or steps, worker concurrency {args.concurrency}, "
        f"{args.rounds} rounds"
    )
    print("| variant | median drain/s | range | vs. plain | median enqueue/s |")
    print("|---|---|---|---|---|")
    base = statistics.median(r["rate"] for r in drains["plain"])
    for variant, results in drains.items():
        rates = [r["rate"] for r in results]
        enqueue = statistics.median(r["enqueue"] for r in results)
        print(
            f"| {variant} | {statistics.median(rates):,.0f} | {min(rates):,.0f} to "
            f"{max(rates):,.0f} | {statistics.median(rates) / base:.2f} | {enqueue:,.0f} |"
        )
    print(f"\n{args.chain:,} steps in a chain, or plain jobs one at a time")
    print("| variant | median ms per step or job | range |")
    print("|---|---|---|")
    for variant, values in latencies.items():
        ms = [v * 1000 for v in values]
        print(f"| {variant} | {statistics.median(ms):.2f} | {min(ms):.2f} to {max(ms):.2f} |")
    first = statistics.median(f for f, _ in _chain_ends) * 1000
    last = statistics.median(v for _, v in _chain_ends) * 1000
    print(
        f"\nchain, ms between step starts (median of rounds): first tenth {first:.2f}, "
        f"last tenth {last:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a server to create the databases on (default: a throwaway)")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--chain", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=40, help="of 50 rounds, per statement")
    args: Any = parser.parse_args()
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
