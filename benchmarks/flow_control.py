"""What flow control costs: drains and bulk enqueues with and without it, in one run.

Variants run in turn (round 1: every variant, round 2: every variant, ...) so a
busy machine slows them alike; each run is a fresh database on --dsn (or on a
throwaway cluster when --dsn is not given). The drain is benchmarks/scaling.py's
(one worker of --concurrency slots, an async no-op job); medians and ranges.

- ``plain``: no flow control, as shipped (the claim reads the paused queues).
- ``no pause check``: ``finish_and_claim`` without its look at the paused
  queues (taken out in this process only): what pausing costs every claim.
- ``concurrency=1000``: the job declares a limit that never binds; its queue
  claims through the limited claim (two statements a round).
- ``4 per key, 100 keys``: ``concurrency=4, limit_key=`` over 100 keys,
  enqueued interleaved. Fairness: per key, when its first and its last job
  finished (seconds from the drain's start): the spread across keys.
- ``enqueue plain`` / ``enqueue unique``: ``enqueue_many`` of the jobs in
  chunks of 20,000, without and with ``unique=True`` (distinct keys).

    python3 benchmarks/flow_control.py --jobs 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scaling  # the drain and enqueue of the scaling benchmark

from koyojobs import Broker, JobCall, define_job
from koyojobs.sql import QUERIES
from koyojobs.testing import TemporaryPostgres

SHIPPED = QUERIES["finish_and_claim"]
_PAUSE_CHECK = "       AND NOT EXISTS (SELECT FROM koyojobs_queues WHERE queue = $1)\n"
assert _PAUSE_CHECK in SHIPPED, "finish_and_claim changed: update the baseline"
WITHOUT_PAUSE_CHECK = SHIPPED.replace(_PAUSE_CHECK, "")

KEYS = 100


async def _noop(payload: int) -> None:
    scaling._ran()


async def _keyed(key: int, payload: int) -> None:
    scaling._ran()


# Each in a queue of its own: a worker claims through the limited claim only
# for a queue with limited jobs.
roomy = define_job(name="flow_bench.roomy", queue="flow-roomy", concurrency=1000)(_noop)
keyed = define_job(
    name="flow_bench.keyed",
    queue="flow-keyed",
    concurrency=4,
    limit_key=lambda key, payload: f"k{key}",
)(_keyed)
unique = define_job(name="flow_bench.unique", queue="flow-unique", unique=True)(_noop)

DRAINS = ["plain", "no pause check", "concurrency=1000", "4 per key, 100 keys"]
ENQUEUES = ["enqueue plain", "enqueue unique"]


def _calls(variant: str, n: int) -> tuple[list[str], Iterable[JobCall[Any]]]:
    if variant in ("plain", "no pause check", "enqueue plain"):
        return ["default"], (scaling.noop(i) for i in range(n))
    if variant == "concurrency=1000":
        return ["flow-roomy"], (roomy(i) for i in range(n))
    if variant == "enqueue unique":
        return ["flow-unique"], (unique(i) for i in range(n))
    return ["flow-keyed"], (keyed(i % KEYS, i) for i in range(n))


@contextlib.contextmanager
def _claim_query(variant: str) -> Iterator[None]:
    if variant == "no pause check":
        QUERIES["finish_and_claim"] = WITHOUT_PAUSE_CHECK
    try:
        yield
    finally:
        QUERIES["finish_and_claim"] = SHIPPED


async def _fairness(broker: Broker) -> dict[str, float]:
    rows = await broker.pool.fetch(
        """
        WITH t0 AS (SELECT min(started_at) AS t0 FROM koyojobs_jobs),
             per_key AS (
                 SELECT limit_key,
                        extract(epoch FROM min(finished_at) - t0)::float8 AS first,
                        extract(epoch FROM max(finished_at) - t0)::float8 AS last
                   FROM koyojobs_jobs, t0
                  GROUP BY limit_key, t0)
        SELECT first, last FROM per_key
        """
    )
    firsts = sorted(r["first"] for r in rows)
    lasts = sorted(r["last"] for r in rows)
    return {
        "first finish, slowest key": firsts[-1],
        "last finish, fastest key": lasts[0],
        "last finish, median key": statistics.median(lasts),
        "last finish, slowest key": lasts[-1],
    }


async def run_variant(admin_dsn: str, variant: str, n: int, slots: int) -> dict[str, Any]:
    async with scaling.fresh_database(admin_dsn) as dsn, Broker(dsn) as broker:
        queues, calls = _calls(variant, n)
        rate = await scaling.enqueue(broker, calls)
        if variant in ENQUEUES:
            return {"rate": rate}
        with _claim_query(variant):
            drained = await scaling.drain(broker, n, queues, slots)
        result: dict[str, Any] = {"rate": drained}
        if variant == "4 per key, 100 keys":
            result["fairness"] = await _fairness(broker)
        return result


@contextlib.asynccontextmanager
async def _server(dsn: str | None) -> AsyncIterator[str]:
    if dsn:
        yield dsn
        return
    with TemporaryPostgres() as cluster:
        yield cluster.dsn


async def measure(args: argparse.Namespace) -> None:
    rates: dict[str, list[float]] = {v: [] for v in [*DRAINS, *ENQUEUES]}
    fairness: list[dict[str, float]] = []
    async with _server(args.dsn) as admin_dsn:
        for round_ in range(args.rounds):
            for variant in rates:
                result = await run_variant(admin_dsn, variant, args.jobs, args.concurrency)
                rates[variant].append(result["rate"])
                if "fairness" in result:
                    fairness.append(result["fairness"])
                print(f"round {round_ + 1} {variant}: {result['rate']:,.0f}/s", file=sys.stderr)
    print(
        f"\n{args.jobs:,} no-op jobs, worker concurrency {args.concurrency}, {args.rounds} rounds"
    )
    print("| variant | median jobs/s | range | vs. its baseline |")
    print("|---|---|---|---|")
    for variant, values in rates.items():
        base = "enqueue plain" if variant in ENQUEUES else "plain"
        ratio = statistics.median(values) / statistics.median(rates[base])
        print(
            f"| {variant} | {statistics.median(values):,.0f} | "
            f"{min(values):,.0f} to {max(values):,.0f} | {ratio:.2f} |"
        )
    print("\nfairness of `4 per key, 100 keys` (seconds from the drain's start, median of rounds)")
    for name in fairness[0]:
        print(f"- {name}: {statistics.median(f[name] for f in fairness):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a server to create the databases on (default: a throwaway)")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
