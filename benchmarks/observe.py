"""What hooks, middleware and Broker.wait cost: enqueue and drain, each feature on and off.

Variants run in turn (round 1: every variant, round 2: every variant, ...) so a
busy machine slows them alike; each run is a fresh database on --dsn (or on a
throwaway cluster when --dsn is not given). The drain is benchmarks/scaling.py's
(one worker, --concurrency slots, an async no-op job); medians and ranges.

- ``no notify``: finish_and_claim without its pg_notify (taken out of the
  statement, in this process only): the baseline.
- ``shipped``: as shipped, and nobody waits: no job is marked ``waited``, so
  no NOTIFY is sent.
- ``all waited``: every job is marked ``waited`` before the drain (as if a
  web process waited for each), and another connection LISTENs: one NOTIFY
  per batch, the worst case.
- ``finished index``: with the index of finished rows the Operations page
  suggests for a big table, to see what maintaining it costs.
- ``hook``: the job has an ``async def`` on_success hook that does nothing.
- ``middleware``: the broker has one pass-through middleware.
- ``otel``: ``koyojobs.otel.instrument()`` with the SDK's providers (spans
  recorded and sampled, exported nowhere): a producer span per enqueue
  statement, the trace context stored, a consumer span and three metric
  records per attempt.

    python3 benchmarks/observe.py --jobs 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scaling  # the drain and enqueue of the scaling benchmark

import koyojobs.otel
from koyojobs import Broker, CallNext, Database, JobOutcome, RunningJob, define_job
from koyojobs.listener import FINISHED_CHANNEL
from koyojobs.sql import QUERIES
from koyojobs.testing import TemporaryPostgres

SHIPPED = QUERIES["finish_and_claim"]
_NOTIFY = (
    "CASE WHEN j.waited AND u.status NOT IN ('ready', 'snoozed')\n"
    "                   THEN pg_notify('koyojobs_finished', '') END"
)
assert _NOTIFY in SHIPPED, "finish_and_claim changed: update the baseline"
WITHOUT_NOTIFY = SHIPPED.replace(_NOTIFY, "j.id")


@define_job(name="observe.noop_hooked")
async def noop_hooked(payload: int) -> None:
    scaling._ran()


@noop_hooked.on_success
async def _nothing(outcome: JobOutcome) -> None:
    return None


async def _pass_through(job: RunningJob, call_next: CallNext) -> Any:
    return await call_next()


VARIANTS = [
    "shipped",
    "no notify",
    "all waited",
    "finished index",
    "hook",
    "middleware",
    "otel",
]


@contextlib.asynccontextmanager
async def _listener(dsn: str, on: bool) -> AsyncIterator[list[int]]:
    heard: list[int] = []
    if not on:
        yield heard
        return
    conn = await asyncpg.connect(dsn)
    try:
        await conn.add_listener(FINISHED_CHANNEL, lambda *_: heard.append(1))
        yield heard
    finally:
        await conn.close()


FINISHED_INDEX = (
    "CREATE INDEX koyojobs_jobs_finished_idx ON koyojobs_jobs (finished_at) "
    "WHERE status IN ('done', 'failed', 'cancelled')"
)


async def run_once(admin_dsn: str, variant: str, n: int, slots: int) -> tuple[float, float, int]:
    QUERIES["finish_and_claim"] = WITHOUT_NOTIFY if variant == "no notify" else SHIPPED
    job = noop_hooked if variant == "hook" else scaling.noop
    middleware = [_pass_through] if variant == "middleware" else None
    if variant == "otel":
        koyojobs.otel.instrument(tracer_provider=TracerProvider(), meter_provider=MeterProvider())
    try:
        async with (
            scaling.fresh_database(admin_dsn) as dsn,
            Database(dsn) as db,
            Broker(db, middleware=middleware) as broker,
            _listener(dsn, variant == "all waited") as heard,
        ):
            if variant == "finished index":
                await broker.pool.execute(FINISHED_INDEX)
            calls: Iterator[Any] = (job(i) for i in range(n))
            enqueued = await scaling.enqueue(broker, calls, chunk=5_000)
            if variant == "all waited":
                await broker.pool.execute("UPDATE koyojobs_jobs SET waited = true")
                await broker.pool.execute("VACUUM koyojobs_jobs")
            drained = await scaling.drain(broker, n, ["default"], slots)
            return enqueued, drained, len(heard)
    finally:
        QUERIES["finish_and_claim"] = SHIPPED
        koyojobs.otel.uninstrument()


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


async def measure(args: argparse.Namespace, admin_dsn: str) -> None:
    variants = args.variant or VARIANTS
    results: dict[str, list[tuple[float, float, int]]] = {v: [] for v in variants}
    for number in range(args.rounds):
        for variant in variants:
            results[variant].append(await run_once(admin_dsn, variant, args.jobs, args.slots))
            enq, drn, heard = results[variant][-1]
            print(
                f"round {number + 1} {variant:18} enqueue {enq:8,.0f}/s drain {drn:7,.0f}/s"
                f"{f'  notifications heard {heard:,}' if heard else ''}",
                file=sys.stderr,
            )
    print(
        f"\n{args.jobs:,} no-op jobs, {args.slots} slots, {args.rounds} rounds alternating; "
        "median (min-max), jobs/s\n"
    )
    print(f"| variant | enqueue | drain | drain vs {variants[0]} |")
    print("|---|---|---|---|")
    base = statistics.median(r[1] for r in results[variants[0]])
    for variant in variants:
        runs = results[variant]
        drain = statistics.median(r[1] for r in runs)
        print(
            f"| {variant} | {_spread([r[0] for r in runs])} | {_spread([r[1] for r in runs])} "
            f"| {100 * (drain / base - 1):+.1f}% |"
        )
    heard = [r[2] for r in results.get("all waited", [])]
    if heard:
        print(f"\nnotifications heard per drain of {args.jobs:,} jobs: {_spread(heard)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an admin DSN (default: a throwaway cluster)")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--variant", action="append", choices=VARIANTS, help="only these (repeatable)"
    )
    args = parser.parse_args()
    if args.dsn:
        asyncio.run(measure(args, args.dsn))
        return
    with TemporaryPostgres() as server:
        asyncio.run(measure(args, server.dsn))


if __name__ == "__main__":
    main()
