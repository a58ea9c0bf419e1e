"""koyojobs adapter for the peer job-queue benchmark (../shared/bench/peers/).

Same flags, same JSON lines, same ``@@BENCH`` worker protocol and the same five
workloads (enqueue_bulk, enqueue_single, drain, latency, enqueue_concurrent) as the
peers' ``bench_*.py``
scripts, so ``run_all.sh`` can put koyojobs in the same table. The script is
self-contained: the harness logic is re-implemented here, nothing is imported from
the shared directory. Run it with the Python that has koyojobs installed:

    python benchmarks/bench_koyojobs.py --dsn postgresql://root@127.0.0.1:5432/bench_x

Settings (koyojobs' public API, library defaults unless listed):
- job: ``@define_job(name="bench_koyojobs.noop")``, an ``async def`` that only counts
  the hit or records its latency. ``name=`` is given because the script runs as
  ``__main__`` (the spec requires it there); queue "default", priority 50,
  max_attempts 3, no timeout, default backoff.
- worker process: ``Database(dsn)`` (asyncpg pool, min_size=1, max_size=10,
  statement_cache_size=100), ``Broker(db)`` (no secret, migrate on start, LISTEN on
  the same DSN) and ``Worker(broker, queue="default", pool_size=C)``. The only
  changed setting is ``pool_size=C`` (default 8), the harness's concurrency;
  lease=30 s, poll_interval=5 s and shutdown_grace=10 s stay at their defaults.
- schema: created by ``Broker.start()`` (the library's own migration).
- producer: ``Database(dsn)`` + ``Broker(db)`` with defaults, made current with
  ``set_current_broker``. Bulk = one ``broker.enqueue_many(calls)`` call (one unnest
  INSERT, the job calls built inside the timed region); single = ``await noop(i, t)``,
  one awaited job call at a time.
- concurrent producer (enqueue_concurrent): the same ``Database(dsn)`` (asyncpg pool
  1..10) + ``Broker(db)``, shared by ``--producers`` tasks, each ``await noop(i, t)``
  one call at a time; calls awaited at once coalesce (koyojobs.enqueuer).
- no ``KOYOJOBS_SECRET`` expected; the settings line says whether one was set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from importlib import metadata
from typing import Any, TypeVar

import asyncpg

from koyojobs import Broker, Database, Worker, define_job, set_current_broker

SYSTEM = "koyojobs"
JOB_NAME = "bench_koyojobs.noop"
QUEUE = "default"
TAG = "@@BENCH"
WORKLOADS = ("enqueue_bulk", "enqueue_single", "drain", "latency", "enqueue_concurrent")

UNFINISHED_SQL = "SELECT count(*) FROM koyojobs_jobs WHERE status IN ('ready', 'running')"
SUCCEEDED_SQL = "SELECT count(*) FROM koyojobs_jobs WHERE status = 'done'"
TOTAL_SQL = "SELECT count(*) FROM koyojobs_jobs"
RESET_SQL = "TRUNCATE koyojobs_jobs"

T = TypeVar("T")

SCRIPT = os.path.abspath(__file__)  # the worker process is this script, re-executed

now = time.monotonic  # CLOCK_MONOTONIC: comparable between the producer and the worker


# ----------------------------------------------------------------------------- output


def emit(workload: str, value: Any, unit: str, **extra: Any) -> None:
    """One JSON result line on stdout, in the harness's format."""
    record: dict[str, Any] = {"system": SYSTEM, "workload": workload, "value": value, "unit": unit}
    record.update(extra)
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def signal_parent(message: str) -> None:
    """One protocol line from the worker process to the producer."""
    sys.stdout.write(f"{TAG} {message}\n")
    sys.stdout.flush()


def percentile(values: list[float], p: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


# ----------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--dsn", default=os.environ.get("BENCH_DSN", "postgresql://root@127.0.0.1:5432/bench")
    )
    parser.add_argument("--n", type=int, default=20000, help="jobs for enqueue_bulk and drain")
    parser.add_argument(
        "--n-single", type=int, default=2000, help="jobs for enqueue_single, enqueue_concurrent"
    )
    parser.add_argument(
        "--producers", type=int, default=64, help="producer tasks for enqueue_concurrent"
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="worker concurrency (drain, latency)"
    )
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--latency-interval-ms", type=float, default=20.0)
    parser.add_argument("--workload", default="all", choices=["all", *WORKLOADS])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per workload")
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--log-level", default="WARNING")
    # Worker-process mode: this script re-executed by the producer.
    parser.add_argument(
        "--role", default="bench", choices=["bench", "worker"], help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--worker-mode", default="drain", choices=["drain", "latency"], help=argparse.SUPPRESS
    )
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- the job


class HitCounter:
    """Worker-process side: every job body reports here, and nothing else."""

    def __init__(self) -> None:
        self.mode = "drain"
        self.expected = 0
        self.count = 0
        self.seen_first = False

    def hit(self, seq: int, t_enq: float) -> None:
        t = now()
        if not self.seen_first:
            self.seen_first = True
            signal_parent(f"FIRST {t!r}")
        if self.mode == "latency":
            # seq < 0 is the warm-up job; the others carry their enqueue time.
            signal_parent("WARM" if seq < 0 else f"LAT {seq} {(t - t_enq) * 1000.0:.4f}")
            return
        self.count += 1
        if self.count == self.expected:
            signal_parent(f"DONE {t!r}")


HITS = HitCounter()


@define_job(name=JOB_NAME)
async def noop(seq: int, t_enq: float) -> None:
    """The benchmark's no-op job."""
    HITS.hit(seq, t_enq)


# ----------------------------------------------------------------------------- koyojobs side


class KoyojobsBench:
    """Schema, producer and worker, through koyojobs' public API only."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.database: Database | None = None
        self.broker: Broker | None = None

    def settings(self) -> dict[str, Any]:
        return {
            "version": metadata.version("koyojobs"),
            "driver": "asyncpg pool (Database defaults: min_size=1, max_size=10, "
            "statement_cache_size=100)",
            "worker": {
                "api": "Worker(broker, queue='default', pool_size=C)",
                "pool_size": self.args.concurrency,
                "other": "defaults (lease=30s, poll_interval=5s, shutdown_grace=10s)",
                "changed": "pool_size=C (default 8)",
            },
            "job": f"async def, define_job(name={JOB_NAME!r}), other options default",
            "schema": "Broker.start() migration",
            "bulk": "Broker.enqueue_many(calls) single call",
            "single": "await noop(i, t) on set_current_broker(broker)",
            "secret": bool(os.environ.get("KOYOJOBS_SECRET")),
            "loop": self.args.loop,
        }

    async def install(self) -> None:
        async with Broker(self.args.dsn):  # creates or upgrades the schema
            pass

    async def open_producer(self) -> None:
        self.database = Database(self.args.dsn)
        self.broker = Broker(self.database)
        await self.database.start()
        await self.broker.start()
        set_current_broker(self.broker)

    async def close_producer(self) -> None:
        set_current_broker(None)
        if self.broker is not None:
            await self.broker.stop()
        if self.database is not None:
            await self.database.stop()
        self.broker = self.database = None

    async def enqueue_bulk(self, items: list[tuple[int, float]]) -> None:
        assert self.broker is not None
        await self.broker.enqueue_many([noop(seq, t) for seq, t in items])

    async def enqueue_one(self, seq: int, t_enq: float) -> None:
        await noop(seq, t_enq)

    def concurrent_settings(self) -> dict[str, Any]:
        return {
            "driver": "Broker(Database(dsn)): asyncpg pool min_size=1, max_size=10",
            "calls": "await noop(i, t) from every task, on set_current_broker(broker)",
        }

    async def open_concurrent_producer(self) -> None:
        await self.open_producer()  # one broker for every task: what a web app has

    async def close_concurrent_producer(self) -> None:
        await self.close_producer()

    async def enqueue_one_concurrent(self, seq: int, t_enq: float) -> None:
        await noop(seq, t_enq)

    async def run_worker(
        self, concurrency: int, ready: Callable[[], None], stop: asyncio.Event
    ) -> None:
        """Worker process: announce READY right before the worker starts, run until stop."""
        database = Database(self.args.dsn)
        broker = Broker(database)
        worker = Worker(broker, queue=QUEUE, pool_size=concurrency)
        async with database, broker:
            ready()
            await worker.start()
            try:
                await stop.wait()
            finally:
                await worker.stop()


# ----------------------------------------------------------------------------- database helpers


async def sql_value(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def sql_run(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


# ----------------------------------------------------------------------------- worker process


class WorkerProcess:
    """Producer side: this script re-run with ``--role worker``, read over stdout lines."""

    def __init__(self, args: argparse.Namespace, mode: str, expect: int) -> None:
        loop = asyncio.get_running_loop()
        self.args, self.mode, self.expect = args, mode, expect
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: asyncio.Future[float] = loop.create_future()
        self.warm: asyncio.Future[bool] = loop.create_future()
        self.done: asyncio.Future[float] = loop.create_future()
        self.first: float | None = None
        self.latencies: dict[int, float] = {}
        self.all_latencies = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        a = self.args
        command = [
            sys.executable,
            SCRIPT,
            "--role",
            "worker",
            "--worker-mode",
            self.mode,
            "--expect",
            str(self.expect),
            "--concurrency",
            str(a.concurrency),
            "--dsn",
            a.dsn,
            "--loop",
            a.loop,
            "--log-level",
            a.log_level,
        ]
        self.proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            limit=1 << 20,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode(errors="replace").rstrip("\n")
            if not text.startswith(TAG):
                sys.stderr.write(f"[worker stdout] {text}\n")
                continue
            kind, *rest = text.split()[1:]
            if kind == "READY" and not self.ready.done():
                self.ready.set_result(float(rest[0]))
            elif kind == "FIRST":
                self.first = float(rest[0])
            elif kind == "WARM" and not self.warm.done():
                self.warm.set_result(True)
            elif kind == "DONE" and not self.done.done():
                self.done.set_result(float(rest[0]))
            elif kind == "LAT":
                self.latencies[int(rest[0])] = float(rest[1])
                if len(self.latencies) >= self.expect:
                    self.all_latencies.set()
        code = await self.proc.wait()
        for future in (self.ready, self.warm, self.done):
            if not future.done():
                future.set_exception(RuntimeError(f"worker process exited early (rc={code})"))
                future.exception()  # retrieved here, so no "never retrieved" warning

    async def wait(self, future: asyncio.Future[T], timeout: float, what: str) -> T:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}") from None

    async def stop(self, grace: float = 20.0) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.write(b"stop\n")
                await proc.stdin.drain()
                proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            sys.stderr.write("worker did not stop in time; killing\n")
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=5)


# ----------------------------------------------------------------------------- workloads


async def enqueue_bulk(bench: KoyojobsBench) -> None:
    a = bench.args
    await sql_run(a.dsn, RESET_SQL)
    items = [(i, 0.0) for i in range(a.n)]
    await bench.open_producer()
    try:
        t0 = now()
        await bench.enqueue_bulk(items)
        elapsed = now() - t0
    finally:
        await bench.close_producer()
    found = await sql_value(a.dsn, TOTAL_SQL)
    if found != a.n:
        raise RuntimeError(f"expected {a.n} jobs in table after bulk enqueue, found {found}")
    emit("enqueue_bulk", round(a.n / elapsed, 1), "jobs/s", n=a.n, seconds=round(elapsed, 4))


async def enqueue_single(bench: KoyojobsBench) -> None:
    a = bench.args
    await sql_run(a.dsn, RESET_SQL)
    calls: list[float] = []
    await bench.open_producer()
    try:
        t0 = now()
        for i in range(a.n_single):
            c0 = now()
            await bench.enqueue_one(i, 0.0)
            calls.append(now() - c0)
        elapsed = now() - t0
    finally:
        await bench.close_producer()
    found = await sql_value(a.dsn, TOTAL_SQL)
    if found != a.n_single:
        raise RuntimeError(f"expected {a.n_single} jobs after single enqueue, found {found}")
    emit(
        "enqueue_single",
        round(a.n_single / elapsed, 1),
        "jobs/s",
        n=a.n_single,
        seconds=round(elapsed, 4),
        call_p50_ms=round(percentile(calls, 50) * 1000, 3),
        call_p99_ms=round(percentile(calls, 99) * 1000, 3),
    )


async def enqueue_concurrent(bench: KoyojobsBench) -> None:
    """P producer tasks share N_SINGLE single-job calls, one awaited call at a time each.

    As the peers' harness does: each task makes one untimed call first (the pool
    has grown as far as P callers make it), the table is reset, then the clock runs.
    """
    a = bench.args
    n, p = a.n_single, max(1, a.producers)
    await sql_run(a.dsn, RESET_SQL)
    calls: list[float] = []
    await bench.open_concurrent_producer()
    try:
        await asyncio.gather(*(bench.enqueue_one_concurrent(-1 - k, 0.0) for k in range(p)))
        await sql_run(a.dsn, RESET_SQL)
        taken = 0

        async def producer() -> None:
            nonlocal taken
            while taken < n:
                i = taken
                taken += 1
                c0 = now()
                await bench.enqueue_one_concurrent(i, 0.0)
                calls.append(now() - c0)

        t0 = now()
        await asyncio.gather(*(producer() for _ in range(p)))
        elapsed = now() - t0
    finally:
        await bench.close_concurrent_producer()
    found = await sql_value(a.dsn, TOTAL_SQL)
    if found != n:
        raise RuntimeError(f"expected {n} jobs after concurrent enqueue, found {found}")
    emit(
        "enqueue_concurrent",
        round(n / elapsed, 1),
        "jobs/s",
        n=n,
        producers=p,
        seconds=round(elapsed, 4),
        call_p50_ms=round(percentile(calls, 50) * 1000, 3),
        call_p99_ms=round(percentile(calls, 99) * 1000, 3),
        producer=bench.concurrent_settings(),
    )


async def drain(bench: KoyojobsBench, deadline: float) -> None:
    a = bench.args
    await sql_run(a.dsn, RESET_SQL)
    await bench.open_producer()
    try:
        await bench.enqueue_bulk([(i, 0.0) for i in range(a.n)])  # prefill, not timed
    finally:
        await bench.close_producer()
    queued = await sql_value(a.dsn, UNFINISHED_SQL)
    if queued != a.n:
        raise RuntimeError(f"prefill: expected {a.n} queued jobs, found {queued}")
    await sql_run(a.dsn, "ANALYZE")  # same planner statistics as the peers get

    worker = WorkerProcess(a, "drain", a.n)
    poll = await asyncpg.connect(a.dsn)
    try:
        await worker.start()
        t_start = await worker.wait(worker.ready, 60, "worker READY")
        try:
            t_bodies = await worker.wait(
                worker.done, max(1.0, deadline - now()), f"{a.n} job bodies to run"
            )
        except RuntimeError as exc:
            finished = await poll.fetchval(SUCCEEDED_SQL)
            raise RuntimeError(f"{exc} ({finished} finished in the table so far)") from None
        # Every body ran; the table must agree too (outcomes flushed), polled every 10 ms.
        while (left := await poll.fetchval(UNFINISHED_SQL)) != 0:
            if now() > deadline:
                raise RuntimeError(f"timed out: {left} jobs still unfinished in the table")
            await asyncio.sleep(0.01)
        t_table = now()
        succeeded = await poll.fetchval(SUCCEEDED_SQL)
    finally:
        await poll.close()
        await worker.stop()
    elapsed = t_table - t_start
    emit(
        "drain",
        round(a.n / elapsed, 1),
        "jobs/s",
        n=a.n,
        concurrency=a.concurrency,
        seconds=round(elapsed, 4),
        bodies_done_s=round(t_bodies - t_start, 4),
        first_job_s=round((worker.first or t_start) - t_start, 4),
        succeeded=succeeded,
    )
    if succeeded != a.n:
        sys.stderr.write(f"WARNING {SYSTEM} drain: {succeeded} succeeded of {a.n}\n")


async def latency(bench: KoyojobsBench, deadline: float) -> None:
    a = bench.args
    jobs = a.latency_jobs
    interval = a.latency_interval_ms / 1000.0
    await sql_run(a.dsn, RESET_SQL)
    worker = WorkerProcess(a, "latency", jobs)
    await bench.open_producer()
    try:
        await worker.start()
        await worker.wait(worker.ready, 60, "worker READY")
        await bench.enqueue_one(-1, now())  # warm-up: proves the worker consumes
        await worker.wait(worker.warm, 60, "warm-up job")
        await asyncio.sleep(1.0)  # let the worker go idle, waiting on LISTEN
        start = now()
        for i in range(jobs):
            pause = start + i * interval - now()
            if pause > 0:
                await asyncio.sleep(pause)
            await bench.enqueue_one(i, now())
        with contextlib.suppress(TimeoutError):  # missing samples are reported below
            await asyncio.wait_for(worker.all_latencies.wait(), max(1.0, deadline - now()))
    finally:
        await bench.close_producer()
        await worker.stop()
    samples = list(worker.latencies.values())
    if not samples:
        raise RuntimeError("no latency samples received")
    extra: dict[str, Any] = {"samples": len(samples), "interval_ms": a.latency_interval_ms}
    if len(samples) < jobs:
        extra["error"] = f"only {len(samples)}/{jobs} jobs started before timeout"
    for p in (50, 95, 99):
        emit(f"latency_p{p}", round(percentile(samples, p), 3), "ms", **extra)
    emit("latency_max", round(max(samples), 3), "ms", **extra)


# ----------------------------------------------------------------------------- entry points


async def producer_main(args: argparse.Namespace) -> int:
    bench = KoyojobsBench(args)
    emit("settings", bench.settings(), "")
    try:
        await asyncio.wait_for(bench.install(), 60)
    except Exception as exc:
        traceback.print_exc()
        emit("install", None, "", error=f"{type(exc).__name__}: {exc}")
        return 1
    code = 0
    for workload in WORKLOADS if args.workload == "all" else (args.workload,):
        deadline = now() + args.timeout
        run: Awaitable[None]
        if workload == "enqueue_bulk":
            run = enqueue_bulk(bench)
        elif workload == "enqueue_single":
            run = enqueue_single(bench)
        elif workload == "enqueue_concurrent":
            run = enqueue_concurrent(bench)
        elif workload == "drain":
            run = drain(bench, deadline)
        else:
            run = latency(bench, deadline)
        try:
            # The workloads' own deadlines fire first; this is the backstop.
            await asyncio.wait_for(run, args.timeout + 30)
        except Exception as exc:
            traceback.print_exc()
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            names = [f"latency_p{p}" for p in (50, 95, 99)] if workload == "latency" else [workload]
            for name in names:
                emit(name, None, "", error=message)
            code = 1
    return code


async def worker_main(args: argparse.Namespace) -> int:
    HITS.mode, HITS.expected = args.worker_mode, args.expect
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def wait_for_stop_line() -> None:
        sys.stdin.readline()  # a line, or EOF when the producer died: either way, stop
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_stop_line, daemon=True).start()
    await KoyojobsBench(args).run_worker(
        args.concurrency, lambda: signal_parent(f"READY {now()!r}"), stop
    )
    signal_parent("STOPPED")
    return 0


def main() -> None:
    args = parse_args()
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        stream=sys.stderr,
        format=f"%(asctime)s {args.role} %(name)s %(levelname)s %(message)s",
    )
    entry = worker_main if args.role == "worker" else producer_main
    coro: Coroutine[Any, Any, int] = entry(args)
    if args.loop == "uvloop":
        uvloop: Any = importlib.import_module("uvloop")  # optional: only for --loop uvloop
        code = uvloop.run(coro)
    else:
        code = asyncio.run(coro)
    sys.exit(code)


if __name__ == "__main__":
    main()
