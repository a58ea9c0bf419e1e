"""Soak test: worker processes SIGKILLed and restarted at random while jobs flow.

Runs --workers `koyojobs worker` processes for --seconds while this process
enqueues continuously; every --kill-every seconds one worker, chosen at random,
is killed with SIGKILL and a new one started. Each job body records its run in
a table. At the end enqueuing stops, the workers finish the backlog, and it
prints what was enqueued, done and failed, how many jobs were lost (not
finished: 0 expected) and the duplicate runs (runs beyond the job's attempts,
which a lost run already counts: 0 expected).

    python3 benchmarks/soak.py --seconds 600            # a throwaway cluster
    python3 benchmarks/soak.py --dsn postgresql://...   # an existing, empty database
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from koyojobs import Broker, current_broker, current_job, define_job, set_current_broker
from koyojobs.testing import TemporaryPostgres

ROOT = Path(__file__).resolve().parents[1]


@define_job(name="soak.work", max_attempts=20, backoff=lambda attempt: 0.1)
async def work(n: int, seconds: float) -> int:
    job, broker = current_job(), current_broker()
    assert job is not None
    assert broker is not None
    await broker.pool.execute(
        "INSERT INTO soak_runs (job_id, attempt) VALUES ($1, $2)", job.id, job.attempt
    )
    await asyncio.sleep(seconds)  # the job's work: long enough to be killed in the middle
    return n


def start_worker(dsn: str, concurrency: int) -> asyncio.subprocess.Process:
    return asyncio.create_subprocess_exec(  # type: ignore[return-value]
        sys.executable,
        "-m",
        "koyojobs",
        "--log-level",
        "ERROR",
        "worker",
        "benchmarks.soak",
        "--dsn",
        dsn,
        "--concurrency",
        str(concurrency),
        "--lease",
        "2",
        "--poll-interval",
        "0.5",
        "--shutdown-grace",
        "5",
        cwd=ROOT,
    )


async def soak(args: argparse.Namespace, dsn: str) -> dict[str, int | float]:
    async with Broker(dsn) as broker:
        set_current_broker(broker)
        await broker.pool.execute(
            "CREATE TABLE IF NOT EXISTS soak_runs (job_id bigint NOT NULL, attempt int NOT NULL)"
        )
        workers = [await start_worker(dsn, args.concurrency) for _ in range(args.workers)]
        enqueued: list[int] = []
        kills = 0
        started = time.monotonic()
        next_kill = started + args.kill_every
        n = 0
        while time.monotonic() - started < args.seconds:
            calls = [work(n + i, random.uniform(0, 0.05)) for i in range(args.batch)]
            n += args.batch
            ids = await broker.enqueue_many(calls)
            assert ids is not None
            enqueued.extend(ids)
            if time.monotonic() >= next_kill:
                victim = random.randrange(len(workers))
                workers[victim].send_signal(signal.SIGKILL)
                await workers[victim].wait()
                workers[victim] = await start_worker(dsn, args.concurrency)
                kills += 1
                next_kill = time.monotonic() + args.kill_every
            await asyncio.sleep(args.pause)  # the producer's pace
        # Let the workers finish the backlog (rescues included), then stop them gracefully.
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline and await broker.pool.fetchval(
            "SELECT count(*) FROM koyojobs_jobs WHERE status IN ('ready', 'running')"
        ):
            await asyncio.sleep(0.2)
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            await process.wait()
        row = await broker.pool.fetchrow(
            """
            WITH runs AS (SELECT job_id, count(*) AS runs FROM soak_runs GROUP BY job_id)
            SELECT count(*) FILTER (WHERE j.status = 'done') AS done,
                   count(*) FILTER (WHERE j.status = 'failed') AS failed,
                   count(*) FILTER (WHERE j.status IN ('ready', 'running')) AS unfinished,
                   coalesce(sum(greatest(coalesce(r.runs, 0) - j.attempts, 0)), 0) AS duplicates,
                   coalesce(sum(j.attempts - 1), 0) AS retried_attempts
              FROM koyojobs_jobs j LEFT JOIN runs r ON r.job_id = j.id
             WHERE j.id = ANY($1::bigint[])
            """,
            enqueued,
        )
        set_current_broker(None)
        return {
            "seconds": args.seconds,
            "workers": args.workers,
            "kills": kills,
            "enqueued": len(enqueued),
            "done": row["done"],
            "failed": row["failed"],
            "lost": row["unfinished"]
            + len(enqueued)
            - (row["done"] + row["failed"] + row["unfinished"]),
            "unfinished": row["unfinished"],
            "duplicates": int(row["duplicates"]),
            "extra_attempts": int(row["retried_attempts"]),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing database (default: a throwaway cluster)")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kill-every", type=float, default=5)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.05)
    parser.add_argument("--settle", type=float, default=120)
    args = parser.parse_args()
    with ExitStack() as stack:
        dsn = args.dsn or stack.enter_context(TemporaryPostgres()).dsn
        result = asyncio.run(soak(args, dsn))
    print(json.dumps(result))
    for key, value in result.items():
        print(f"{key:>15}: {value}")
    sys.exit(0 if result["lost"] == 0 and result["duplicates"] == 0 else 1)


if __name__ == "__main__":
    main()
