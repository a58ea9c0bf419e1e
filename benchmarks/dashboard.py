"""The dashboard's server time per page, on a table of a million finished jobs.

    createdb -h 127.0.0.1 -U postgres kj_dash        # or let --dsn name a database to make
    python3 benchmarks/dashboard.py --dsn postgresql://postgres@127.0.0.1:5432/kj_dash
    python3 benchmarks/dashboard.py --keep --without-indexes   # the same, then without 0006's
    python3 benchmarks/dashboard.py --write-cost 3   # what 0006's indexes cost a drain
    python3 benchmarks/dashboard.py --keep --backlog 1000000   # and a paused queue's backlog
    python3 benchmarks/dashboard.py --jobs 10000000 --backlog 1000000   # the console's target
    python3 benchmarks/dashboard.py --bulk-beside-drain 2   # a bulk retry of 100,000 beside a drain

Fills the database (dropping its jobs first unless --keep) with --jobs finished
jobs in one INSERT ... SELECT generate_series: 97% done, 2% failed (with a
traceback), 1% cancelled, over four queues and twenty names, finished over the
last 24 hours (the default retention of done jobs), plus 10,000 ready jobs (a
fifth of them scheduled later), 50 running ones and three periodic jobs. Then
VACUUM ANALYZE, as autovacuum would after such a load, and the per-minute rollup
the workers' heartbeats keep (the charts read it), with four live workers.
Each page is requested
--requests times in-process (httpx over ASGI: the dashboard's own time, with
the database's, without a network), after a warm-up, and the table gives p50,
p95 and the maximum in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import scaling
from scaling import _noops, drain, enqueue, fresh_database

from koyojobs import Broker, Worker, define_job
from koyojobs.dashboard import Dashboard
from koyojobs.rollup import roll_up

FILL = """
INSERT INTO koyojobs_jobs (name, queue, priority, status, args, result, attempts, max_attempts,
                           scheduled_at, created_at, started_at, finished_at,
                           last_error, last_traceback)
SELECT 'app.jobs.task_' || (g % 20),
       (ARRAY['default', 'emails', 'reports', 'webhooks'])[1 + g % 4],
       50,
       s.status,
       '\\x8004'::bytea,
       CASE WHEN s.status = 'done' THEN '\\x8004'::bytea END,
       CASE WHEN s.status = 'failed' THEN 3 ELSE 1 END,
       3,
       f.at - interval '2 seconds', f.at - interval '2 seconds', f.at - interval '1 second', f.at,
       CASE WHEN s.status = 'failed' THEN 'ConnectionError: upstream ' || g || ' refused' END,
       CASE WHEN s.status = 'failed'
            THEN E'Traceback (most recent call last):\\n  File "app/jobs.py", line 12\\n'
                 || 'ConnectionError: upstream refused' END
  FROM generate_series(1, $1) AS g
 CROSS JOIN LATERAL (SELECT CASE WHEN g % 100 < 2 THEN 'failed'
                                 WHEN g % 100 = 2 THEN 'cancelled'
                                 ELSE 'done' END AS status) AS s
 CROSS JOIN LATERAL (SELECT now() - interval '24 hours' * (1 - g::float8 / $1) AS at) AS f
"""
READY = """
INSERT INTO koyojobs_jobs (name, queue, args, scheduled_at)
SELECT 'app.jobs.task_' || (g % 20), (ARRAY['default', 'emails', 'reports', 'webhooks'])[1 + g % 4],
       '\\x8004'::bytea,
       CASE WHEN g % 5 = 0 THEN now() + interval '1 hour' ELSE now() - g * interval '10 ms' END
  FROM generate_series(1, 10000) AS g
"""
BACKLOG = """
INSERT INTO koyojobs_jobs (name, queue, priority, args, scheduled_at)
SELECT 'app.jobs.task_' || (g % 20), 'backlog', (g % 3) * 25, '\\x8004'::bytea,
       now() - g * interval '1 ms'
  FROM generate_series(1, $1) AS g
"""
RUNNING = """
INSERT INTO koyojobs_jobs (name, queue, args, status, attempts, started_at, lease_expires_at,
                           worker_id)
SELECT 'app.jobs.task_' || (g % 20), (ARRAY['default', 'emails', 'reports', 'webhooks'])[1 + g % 4],
       '\\x8004'::bytea, 'running', 1, now(), now() + interval '1 hour', 'bench'
  FROM generate_series(1, 50) AS g
"""
INDEXES = {
    "koyojobs_jobs_finished_queue_idx": "(queue, status, finished_at) "
    "WHERE status IN ('done', 'failed', 'cancelled')",
    "koyojobs_jobs_failed_idx": "(status, id) WHERE status IN ('failed', 'cancelled')",
}


@define_job(name="bench.dashboard.nightly", cron="0 3 * * *", timezone="Europe/Amsterdam")
async def nightly() -> None:
    return None


@define_job(name="bench.dashboard.sample", queue="metrics", every=timedelta(seconds=30))
async def sample() -> None:
    return None


@define_job(name="bench.dashboard.hourly", cron="@hourly")
async def hourly() -> None:
    return None


@define_job(name="app.jobs.task_7", label="Send the invoice")
async def task_7() -> None:
    return None


WORKERS = """
INSERT INTO koyojobs_workers (id, host, pid, queues, concurrency, running, interval_s)
SELECT 'bench:' || g, 'worker-' || g, 1000 + g, ARRAY['default', 'emails'], 16, g, 3600
  FROM generate_series(1, 4) AS g
"""


async def fill(broker: Broker, jobs: int) -> None:
    pool = broker.pool
    started = time.perf_counter()
    await pool.execute("TRUNCATE koyojobs_jobs, koyojobs_schedules")
    await pool.execute(FILL, jobs, timeout=3600)
    await pool.execute(READY)
    await pool.execute(RUNNING)
    await pool.execute(
        "INSERT INTO koyojobs_schedules (name, last_tick, last_enqueued_tick, last_job_id) "
        "SELECT name, now() - interval '5 minutes', now() - interval '5 minutes', "
        "(SELECT max(id) FROM koyojobs_jobs WHERE status = 'done') "
        "FROM unnest($1::text[]) AS name",
        [nightly.name, sample.name, hourly.name],
    )
    await pool.execute("VACUUM ANALYZE koyojobs_jobs", timeout=1800)
    print(f"filled {jobs:,} finished jobs in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    await pool.execute("TRUNCATE koyojobs_minutes, koyojobs_workers")
    await pool.execute("UPDATE koyojobs_rollup SET rolled_until = now() - interval '1 day'")
    while await roll_up(broker):
        pass
    await pool.execute(WORKERS)
    print(f"rolled up a day of minutes in {time.perf_counter() - started:.1f} s", flush=True)


async def pages(broker: Broker) -> dict[str, str]:
    pool = broker.pool
    failed = await pool.fetchval("SELECT max(id) FROM koyojobs_jobs WHERE status = 'failed'")
    middle = await pool.fetchval("SELECT max(id) / 2 FROM koyojobs_jobs")
    return {
        "queues": "/",
        "queues, live counts (JSON)": "/api/queues",
        "jobs, newest": "/jobs",
        "jobs, a page in the middle": f"/jobs?before={middle}",
        "jobs, done": "/jobs?status=done",
        "jobs, done in one queue": "/jobs?status=done&queue=reports",
        "jobs, failed": "/jobs?status=failed",
        "jobs, failed in one queue": "/jobs?status=failed&queue=emails",
        "jobs, ready": "/jobs?status=ready",
        "jobs, ready in the backlog": "/jobs?status=ready&queue=backlog",
        "jobs, one queue": "/jobs?queue=emails",
        "jobs, one name": "/jobs?name=app.jobs.task_7",
        "jobs, a name prefix": "/jobs?name=app.jobs.task_1",
        "jobs, a label": "/jobs?label=Send the",
        "jobs, failed, name and queue": "/jobs?status=failed&queue=emails&name=app.jobs.task_1",
        "jobs, a name that matches nothing": "/jobs?name=app.jobs.nothing",
        "one failed job": f"/jobs/{failed}",
        "periodic": "/periodic",
        "workers": "/workers",
        "charts, last hour": "/charts",
        "charts, last day": "/charts?span=day",
        "metrics (Prometheus)": "/metrics",
    }


async def measure(
    broker: Broker, requests: int, *, as_if_indexed: bool = False
) -> list[tuple[str, float, float, float]]:
    app = Dashboard(broker, can_act=lambda request: True)
    if as_if_indexed:
        app._indexed = True  # the statements it sends with the indexes, without them
    table = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for label, path in (await pages(broker)).items():
            for _ in range(max(5, requests // 10)):  # warm-up: statements prepared, caches hot
                assert (await client.get(path)).status_code == 200, path
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                response = await client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (path, response.text[:200])
            times.sort()
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            table.append((label, statistics.median(times), p95, times[-1]))
    return table


def show(title: str, table: list[tuple[str, float, float, float]]) -> None:
    print(f"\n{title}\n")
    print(f"| {'page':<36} | {'p50 ms':>7} | {'p95 ms':>7} | {'max ms':>7} |")
    print(f"|{'-' * 38}|{'-' * 8}:|{'-' * 8}:|{'-' * 8}:|")
    for label, p50, p95, worst in table:
        print(f"| {label:<36} | {p50:7.1f} | {p95:7.1f} | {worst:7.1f} |", flush=True)


async def bulk_beside_drain(
    admin_dsn: str, pairs: int, failed: int = 100_000, jobs: int = 20_000
) -> None:
    """A drain of ``jobs`` no-op jobs, alone and beside a bulk retry of ``failed`` jobs.

    The failed jobs are in another queue, which no worker serves: the retry
    competes with the drain for the table, not for the workers. ABBA order.
    """
    rates: dict[bool, list[float]] = {True: [], False: []}
    for i in range(pairs * 2):
        beside = i % 4 in (0, 3)
        async with fresh_database(admin_dsn) as dsn, Broker(dsn) as broker:
            await broker.pool.execute(
                "INSERT INTO koyojobs_jobs (name, queue, status, args, finished_at, last_error)"
                " SELECT 'scaling.noop', 'outage', 'failed', '\\x8004'::bytea, now(),"
                " 'ConnectionError: refused' FROM generate_series(1, $1)",
                failed,
            )
            await broker.pool.execute("VACUUM ANALYZE koyojobs_jobs")
            await enqueue(broker, _noops(jobs, ["default"]))
            scaling._count, scaling._target, scaling._all_ran = 0, jobs, asyncio.Event()
            worker = Worker(broker, queue="default", pool_size=16)
            started = time.perf_counter()
            await worker.start()
            bulk = None
            if beside:
                bulk = asyncio.create_task(_timed(broker.retry_many(queue="outage")))
            await scaling._all_ran.wait()
            rate = jobs / (time.perf_counter() - started)
            await worker.stop()
            note = ""
            if bulk is not None:
                retried, seconds = await bulk
                assert retried == failed, retried
                note = f"; retried {retried:,} in {seconds:.1f} s ({retried / seconds:,.0f}/s)"
        rates[beside].append(rate)
        print(f"drain {'beside the bulk retry' if beside else 'alone'}: {rate:,.0f} jobs/s{note}")
    for side in (False, True):
        print(
            f"{'beside' if side else 'alone'}: median {statistics.median(rates[side]):,.0f} "
            f"jobs/s of {[round(r) for r in rates[side]]}"
        )


async def _timed(work: Any) -> tuple[int, float]:
    started = time.perf_counter()
    done: int = await work
    return done, time.perf_counter() - started


CONSOLE_INDEXES = ["koyojobs_jobs_finished_filter_idx", "koyojobs_jobs_ready_filter_idx"]


async def write_cost(
    admin_dsn: str, pairs: int, jobs: int = 20_000, indexes: list[str] | None = None
) -> None:
    rates: dict[bool, list[float]] = {True: [], False: []}
    entered: dict[bool, list[float]] = {True: [], False: []}
    for i in range(pairs * 2):
        with_indexes = i % 4 in (0, 3)  # ABBA: neither side always goes first
        async with fresh_database(admin_dsn) as dsn, Broker(dsn) as broker:
            if not with_indexes:
                for name in indexes or list(INDEXES):
                    await broker.pool.execute(f"DROP INDEX {name}")
            enqueued = await enqueue(broker, _noops(jobs, ["default"]))
            rate = await drain(broker, jobs, ["default"], 16)
        rates[with_indexes].append(rate)
        entered[with_indexes].append(enqueued)
        print(
            f"{'with' if with_indexes else 'without'} the indexes: enqueue {enqueued:,.0f} "
            f"jobs/s, drain {rate:,.0f} jobs/s",
            flush=True,
        )
    for side in (True, False):
        print(
            f"{'with' if side else 'without'}: drain median {statistics.median(rates[side]):,.0f} "
            f"jobs/s of {[round(r) for r in rates[side]]}; enqueue median "
            f"{statistics.median(entered[side]):,.0f} of {[round(r) for r in entered[side]]}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/kj_dash")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="reuse the jobs already there")
    parser.add_argument(
        "--without-indexes",
        action="store_true",
        help="also time the pages without 0006's indexes (dropped, then built again)",
    )
    parser.add_argument("--write-cost", type=int, metavar="PAIRS", default=0)
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        metavar="JOBS",
        help="add this many ready jobs to a paused queue (an incident's backlog) first",
    )
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--bulk-beside-drain", type=int, metavar="PAIRS", default=0)
    parser.add_argument(
        "--write-cost-console",
        type=int,
        metavar="PAIRS",
        default=0,
        help="what 0009's filter indexes cost a drain",
    )
    options = parser.parse_args()
    if options.write_cost_console:
        await write_cost(options.admin_dsn, options.write_cost_console, indexes=CONSOLE_INDEXES)
        return
    if options.bulk_beside_drain:
        await bulk_beside_drain(options.admin_dsn, options.bulk_beside_drain)
        return
    if options.write_cost:
        await write_cost(options.admin_dsn, options.write_cost)
        return
    async with Broker(options.dsn) as broker:
        if not options.keep:
            await fill(broker, options.jobs)
        if options.backlog:
            await broker.pool.execute(BACKLOG, options.backlog, timeout=1800)
            await broker.pause("backlog")
            await broker.pool.execute("VACUUM ANALYZE koyojobs_jobs", timeout=600)
        rows = await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs")
        version = await broker.pool.fetchval("SHOW server_version")
        print(f"PostgreSQL {version}, {rows:,} jobs in the table")
        show("With the indexes of 0006_dashboard", await measure(broker, options.requests))
        if options.without_indexes:
            for name in INDEXES:
                await broker.pool.execute(f"DROP INDEX IF EXISTS {name}")
            try:
                show(
                    "Without them: what the dashboard does (leaves out the finished counts)",
                    await measure(broker, max(20, options.requests // 10)),
                )
                show(
                    "Without them, the statements it sends when they exist",
                    await measure(broker, 10, as_if_indexed=True),
                )
            finally:
                for name, columns in INDEXES.items():
                    await broker.pool.execute(
                        f"CREATE INDEX {name} ON koyojobs_jobs {columns}", timeout=600
                    )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except asyncpg.InvalidCatalogNameError as exc:
        raise SystemExit(f"{exc}: createdb -h 127.0.0.1 -U postgres kj_dash") from None
