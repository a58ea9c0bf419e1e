"""How koyojobs' cost grows: drain rate against backlog, concurrency, queues and
payload size, and the table's size after a million jobs and after pruning; and
the drain of jobs that each write a row through the broker's pool, beside the
no-op drain of the same run (--only dbjobs).

Each measurement runs in a fresh database on the server given by --dsn (a
database the script may CREATE DATABASE from). The worker runs in this process
with its defaults except pool_size; the job is an async no-op that counts itself.
In the dbjobs table the pool is sized as ``koyojobs worker`` sizes it
(koyojobs.cli.default_pool_size), and each job INSERTs one row through
``current_broker().pool``, in a transaction of its own, as the docs' FastAPI
example's job does.

    python3 benchmarks/scaling.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
    python3 benchmarks/scaling.py --quick          # smaller sizes, for a smoke run
    python3 benchmarks/scaling.py --only dbjobs    # one table

Prints markdown tables, writes JSON lines to --out, and with matplotlib
installed (the 'bench' extra) draws --chart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from koyojobs import Broker, Database, JobCall, Worker, current_broker, define_job
from koyojobs.cli import default_pool_size

_count = 0
_target = 0
_all_ran: asyncio.Event | None = None
_names = itertools.count()

ROWS_TABLE = """
CREATE TABLE IF NOT EXISTS scaling_rows (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job integer NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
)
"""


def _ran() -> None:
    global _count
    _count += 1
    if _count == _target and _all_ran is not None:
        _all_ran.set()


@define_job(name="scaling.noop")
async def noop(payload: bytes | int) -> None:
    _ran()


@define_job(name="scaling.write_row")
async def write_row(n: int) -> None:
    broker = current_broker()  # inside a job: the broker of the worker running it
    assert broker is not None
    await broker.pool.execute("INSERT INTO scaling_rows (job) VALUES ($1)", n)
    _ran()


def _dsn_for(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


@contextlib.asynccontextmanager
async def fresh_database(admin_dsn: str) -> AsyncIterator[str]:
    name = f"koyojobs_scaling_{os.getpid()}_{next(_names)}"
    conn = await asyncpg.connect(admin_dsn)
    try:
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


async def enqueue(broker: Broker, calls: Iterable[JobCall[Any]], chunk: int = 20_000) -> float:
    """Enqueue in chunks of one statement each; returns jobs per second."""
    started, total, batch = time.perf_counter(), 0, []
    for call in calls:
        batch.append(call)
        if len(batch) == chunk:
            await broker.enqueue_many(batch)
            total, batch = total + len(batch), []
    if batch:
        await broker.enqueue_many(batch)
        total += len(batch)
    return total / (time.perf_counter() - started)


async def drain(broker: Broker, n: int, queues: list[str], pool_size: int) -> float:
    """Start one worker per queue and time until all n bodies ran and the table is settled."""
    global _count, _target, _all_ran
    await broker.pool.execute("ANALYZE koyojobs_jobs")
    _count, _target, _all_ran = 0, n, asyncio.Event()
    workers = [Worker(broker, queue=q, pool_size=pool_size) for q in queues]
    started = time.perf_counter()
    for worker in workers:
        await worker.start()
    await _all_ran.wait()
    while await broker.pool.fetchval(
        "SELECT count(*) FROM koyojobs_jobs WHERE status IN ('ready', 'running')"
    ):
        await asyncio.sleep(0.01)  # the benchmark polls the table, as the peer harness does
    elapsed = time.perf_counter() - started
    for worker in workers:
        await worker.stop()
    return n / elapsed


async def sizes(broker: Broker) -> dict[str, int]:
    row = await broker.pool.fetchrow(
        "SELECT pg_table_size('koyojobs_jobs') AS table_bytes, "
        "pg_indexes_size('koyojobs_jobs') AS index_bytes, "
        "(SELECT count(*) FROM koyojobs_jobs) AS rows"
    )
    return dict(row)


def _noops(n: int, queues: list[str], payload: bytes | None = None) -> Iterable[JobCall[Any]]:
    for i in range(n):
        call = noop(payload if payload is not None else i)
        if queues != ["default"]:
            call.definition = _per_queue(queues[i % len(queues)])
        yield call


_definitions: dict[str, Any] = {}


def _per_queue(queue: str) -> Any:
    # The same function under one name per queue, so each worker has its own.
    if queue not in _definitions:
        _definitions[queue] = define_job(name=f"scaling.noop.{queue}", queue=queue)(noop.fn)
    return _definitions[queue]


class _Calls:
    """A re-iterable batch of no-op calls (each repetition enqueues it again)."""

    def __init__(self, n: int, queues: list[str], payload: bytes | None = None) -> None:
        self.n, self.queues, self.payload = n, queues, payload

    def __call__(self) -> Iterable[JobCall[Any]]:
        return _noops(self.n, self.queues, self.payload)


class _RowWrites(_Calls):
    """A re-iterable batch of jobs that each write one row through the broker's pool."""

    def __init__(self, n: int) -> None:
        super().__init__(n, ["default"])

    def __call__(self) -> Iterable[JobCall[Any]]:
        return (write_row(i) for i in range(self.n))


async def bare_inserts(admin_dsn: str, times: int, n: int, tasks: int, pool: int) -> dict[str, Any]:
    """The same row writes without koyojobs: ``tasks`` loops INSERT ``n`` rows through a pool.

    What the server and this machine allow for such writes at all, as a
    ceiling for the row-writing drain.
    """
    rates = []
    for _ in range(times):
        async with fresh_database(admin_dsn) as dsn, Database(dsn, max_size=pool) as db:
            await db.pool.execute(ROWS_TABLE)
            numbers = iter(range(n))
            started = time.perf_counter()
            await asyncio.gather(*(_write_rows(db, numbers) for _ in range(tasks)))
            rates.append(n / (time.perf_counter() - started))
    return _spread(rates)


async def _write_rows(db: Database, numbers: Iterator[int]) -> None:
    for i in numbers:  # shared with the other writers: each number once
        await db.pool.execute("INSERT INTO scaling_rows (job) VALUES ($1)", i)


def _spread(rates: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(rates)),
        "min": round(min(rates)),
        "max": round(max(rates)),
    }


async def _cell(
    admin_dsn: str,
    times: int,
    calls: _Calls,
    queues: list[str],
    pool_size: int,
    chunk: int = 20_000,
    max_connections: int = 10,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Enqueue then drain ``times`` times, each in a fresh database; medians and ranges.

    ``max_connections`` is the pool's max_size (the Database default unless given).
    """
    ins, outs = [], []
    for _ in range(times):
        async with (
            fresh_database(admin_dsn) as dsn,
            Database(dsn, max_size=max_connections) as db,
            Broker(db) as broker,
        ):
            await broker.pool.execute(ROWS_TABLE)
            ins.append(await enqueue(broker, calls(), chunk=chunk))
            outs.append(await drain(broker, calls.n, queues, pool_size))
            if isinstance(calls, _RowWrites):
                written = await broker.pool.fetchval("SELECT count(*) FROM scaling_rows")
                assert written == calls.n, (written, calls.n)
    return _spread(ins), _spread(outs)


def _fmt(spread: dict[str, Any]) -> str:
    if spread["min"] == spread["max"]:
        return f"{spread['median']:,}"
    return f"{spread['median']:,} ({spread['min']:,}-{spread['max']:,})"


async def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []

    def record(table: str, **fields: Any) -> None:
        results.append({"table": table, **fields})
        print(json.dumps(results[-1]), flush=True)

    quick, repeat = args.quick, args.repeat
    backlogs = [2_000, 20_000] if quick else [20_000, 200_000, 1_000_000]
    only = set(args.only or ["backlog", "concurrency", "queues", "payload", "dbjobs"])
    for n in backlogs if "backlog" in only else []:
        times = 1 if n >= 1_000_000 else repeat  # the million runs once: minutes each
        if n != backlogs[-1]:
            rate_in, rate = await _cell(args.dsn, times, _Calls(n, ["default"]), ["default"], 16)
            record(
                "backlog",
                backlog=n,
                runs=times,
                enqueue_per_s=_fmt(rate_in),
                drain_per_s=_fmt(rate),
                drain_median=rate["median"],
            )
            continue
        async with fresh_database(args.dsn) as dsn, Database(dsn) as db, Broker(db) as broker:
            rate_in = await enqueue(broker, _noops(n, ["default"]))
            rate = await drain(broker, n, ["default"], 16)
            record(
                "backlog",
                backlog=n,
                runs=1,
                enqueue_per_s=f"{round(rate_in):,}",
                drain_per_s=f"{round(rate):,}",
                drain_median=round(rate),
            )
            record("size", when=f"after {n:,} jobs done", **await sizes(broker))
            await broker.prune(0)
            record("size", when="after prune", **await sizes(broker))
            await broker.pool.execute("VACUUM koyojobs_jobs")
            record("size", when="after prune and VACUUM", **await sizes(broker))
    n = 5_000 if quick else 20_000
    for concurrency in (1, 4, 16, 64) if "concurrency" in only else ():
        _, rate = await _cell(args.dsn, repeat, _Calls(n, ["default"]), ["default"], concurrency)
        record(
            "concurrency",
            concurrency=concurrency,
            jobs=n,
            runs=repeat,
            drain_per_s=_fmt(rate),
            drain_median=rate["median"],
        )
    for count in (1, 50) if "queues" in only else ():
        # 8 slots a worker: one claim loop, so 50 workers hold 50 connections
        # (16 slots would be two loops each, past a default max_connections).
        queues = ["default"] if count == 1 else [f"q{i}" for i in range(count)]
        _, rate = await _cell(args.dsn, repeat, _Calls(n, queues), queues, 8)
        record(
            "queues",
            queues=count,
            workers=count,
            slots_each=8,
            jobs=n,
            runs=repeat,
            drain_per_s=_fmt(rate),
        )
    payloads = ((1024, 1_000 if quick else 20_000), (100 * 1024, 200 if quick else 2_000))
    for size, jobs in payloads if "payload" in only else ():
        payload = os.urandom(size)
        rate_in, rate = await _cell(
            args.dsn, repeat, _Calls(jobs, ["default"], payload), ["default"], 16, chunk=500
        )
        record(
            "payload",
            argument_bytes=size,
            jobs=jobs,
            runs=repeat,
            enqueue_per_s=_fmt(rate_in),
            drain_per_s=_fmt(rate),
        )
    for concurrency in (16, 64) if "dbjobs" in only else ():
        # Both with the pool koyojobs worker would have: one connection per
        # running job and the worker's own.
        pool = default_pool_size(concurrency)
        _, noops = await _cell(
            args.dsn, repeat, _Calls(n, ["default"]), ["default"], concurrency,
            max_connections=pool,
        )  # fmt: skip
        _, rows = await _cell(
            args.dsn, repeat, _RowWrites(n), ["default"], concurrency, max_connections=pool
        )
        bare = await bare_inserts(args.dsn, repeat, n, concurrency, pool)
        record(
            "dbjobs",
            concurrency=concurrency,
            pool_max_size=pool,
            jobs=n,
            runs=repeat,
            noop_drain_per_s=_fmt(noops),
            row_writing_drain_per_s=_fmt(rows),
            ratio=round(rows["median"] / noops["median"], 2),
            bare_inserts_per_s=_fmt(bare),
        )
    return results


def print_tables(results: list[dict[str, Any]]) -> None:
    for table in ("backlog", "concurrency", "queues", "payload", "dbjobs", "size"):
        rows = [
            {k: v for k, v in r.items() if k not in ("table", "drain_median")}
            for r in results
            if r["table"] == table
        ]
        if not rows:
            continue
        keys = list(rows[0])
        print(f"\n### {table}\n")
        print("| " + " | ".join(keys) + " |")
        print("|" + "---|" * len(keys))
        for row in rows:
            cells = [f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()]
            print("| " + " | ".join(cells) + " |")


def chart(results: list[dict[str, Any]], path: str) -> None:
    backlog = [r for r in results if r["table"] == "backlog"]
    concurrency = [r for r in results if r["table"] == "concurrency"]
    if not backlog or not concurrency:
        print("the chart needs the backlog and concurrency tables: no chart")
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot([r["backlog"] for r in backlog], [r["drain_median"] for r in backlog], marker="o")
    left.set_xscale("log")
    left.set_xlabel("backlog (jobs)")
    left.set_ylabel("drain (jobs/s)")
    left.set_ylim(bottom=0)
    left.set_title("drain rate vs backlog (concurrency 16)")
    right.plot(
        [r["concurrency"] for r in concurrency],
        [r["drain_median"] for r in concurrency],
        marker="o",
    )
    right.set_xscale("log", base=2)
    right.set_xlabel("worker concurrency (pool_size)")
    right.set_ylim(bottom=0)
    right.set_title("drain rate vs concurrency")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"chart written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--repeat",
        type=lambda v: max(1, int(v)),
        default=3,
        help="runs per cell (the 1M backlog runs once)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=["backlog", "concurrency", "queues", "payload", "dbjobs"],
        help="run only these tables (repeatable; default: all)",
    )
    parser.add_argument("--out", default="benchmarks/results/scaling.jsonl")
    parser.add_argument("--chart", default="docs/scaling.png")
    args = parser.parse_args()
    results = asyncio.run(measure(args))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as out:
        out.writelines(json.dumps(r) + "\n" for r in results)
    print_tables(results)
    chart(results, args.chart)


if __name__ == "__main__":
    main()
