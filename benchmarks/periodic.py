"""What periodic jobs cost: the drain with and without 100 periodic jobs defined
on the drained queue (same run, alternating), and how late ticks are enqueued.

    python3 benchmarks/periodic.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
    python3 benchmarks/periodic.py --lateness-seconds 180 --pairs 3

Lateness is each tick job's ``created_at`` minus its tick (``scheduled_at``),
both from the database's clock, for a job with ``every=1s``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from datetime import timedelta

from scaling import _noops, drain, enqueue, fresh_database

from koyojobs import Broker, Database, Worker, define_job
from koyojobs.registry import forget

_HUNDRED = [f"bench.periodic_{i}" for i in range(100)]


def _define_hundred() -> None:
    for name in _HUNDRED:

        async def tick() -> None:
            return None

        define_job(name=name, every=timedelta(seconds=60))(tick)


def _forget_hundred() -> None:
    for name in _HUNDRED:
        forget(name)


@define_job(name="bench.every_second", queue="bench-lateness", every=timedelta(seconds=1))
async def every_second() -> None:
    return None


async def _drain_once(admin_dsn: str, n: int) -> tuple[float, float]:
    async with fresh_database(admin_dsn) as dsn, Database(dsn) as db, Broker(db) as broker:
        rate_in = await enqueue(broker, _noops(n, ["default"]))
        rate = await drain(broker, n, ["default"], 16)
        return rate_in, rate


async def cost(admin_dsn: str, n: int, pairs: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"without": [], "with 100 periodic": []}
    for _ in range(pairs):
        _forget_hundred()
        rates["without"].append((await _drain_once(admin_dsn, n))[1])
        _define_hundred()
        rates["with 100 periodic"].append((await _drain_once(admin_dsn, n))[1])
    _forget_hundred()
    return rates


async def lateness(admin_dsn: str, seconds: float) -> dict[str, float]:
    async with fresh_database(admin_dsn) as dsn, Database(dsn) as db, Broker(db) as broker:
        async with Worker(broker, queue="bench-lateness"):
            await asyncio.sleep(seconds)  # the measurement window itself
        late = [
            r[0]
            for r in await broker.pool.fetch(
                "SELECT extract(epoch FROM created_at - scheduled_at)::float8 * 1000 "
                "FROM koyojobs_jobs WHERE name = 'bench.every_second'"
            )
        ]
    late.sort()
    return {
        "ticks": len(late),
        "p50_ms": round(statistics.median(late), 2),
        "p99_ms": round(late[min(len(late) - 1, int(len(late) * 0.99))], 2),
        "max_ms": round(late[-1], 2),
    }


async def main(args: argparse.Namespace) -> None:
    rates = await cost(args.dsn, args.jobs, args.pairs)
    for label, values in rates.items():
        print(
            json.dumps(
                {
                    "drain": label,
                    "jobs": args.jobs,
                    "median_per_s": round(statistics.median(values)),
                    "runs": [round(v) for v in values],
                }
            )
        )
    print(json.dumps({"lateness": await lateness(args.dsn, args.lateness_seconds)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--lateness-seconds", type=float, default=120.0)
    asyncio.run(main(parser.parse_args()))
