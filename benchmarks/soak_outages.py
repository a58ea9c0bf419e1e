"""Soak through outages: kills, graceful stops, killed connections, pooler and database restarts.

Runs 3 `koyojobs worker` processes (the first through a real PgBouncer in
transaction mode, with its LISTEN straight to PostgreSQL) on a throwaway
cluster for --seconds, while a producer enqueues a mix continuously: short
async jobs, `def` and async jobs longer than the grace and often than the
lease (lease 6 s, grace 2 s, jobs of 3-10 s), a job with `concurrency=2` per
key, a rate-limited job, unique jobs, a periodic job (every second), snoozes
and retries (benchmarks/soak_jobs.py). At random intervals it injects one
fault: SIGKILL of a worker, SIGTERM of a worker (both restarted, as any
worker that exits is, like a supervisor would), `pg_terminate_backend` of
every connection but the producer's, a PgBouncer restart, or a PostgreSQL
restart down for up to 9 s. Then faults and enqueuing stop, the backlog
drains, the workers stop, and the script judges from the jobs' own logs and
the table:

- lost: an enqueued job not finished (done or failed) after the drain;
- stuck: a job still ready or running, due or lapsed for long, that nobody moves;
- double runs: two runs of one job whose [first sign, last sign] overlap;
- limit: more than `concurrency` runs of one key alive at once, by the logs;
- rate: more than `count` claims of the rate-limited job in any window of
  `seconds`, by every claim's `started_at` (a trigger keeps each claim's);
- unique: two runs of one unique key, of different jobs, alive at once (the
  unique index forbids two ready or running rows; also sampled);
- ticks: a periodic tick enqueued twice; and how long after each database
  outage the first tick came.

It prints a summary table, writes JSON (--json) and exits 1 on any violation.

    PYTHONPATH=$PWD python3 benchmarks/soak_outages.py --seconds 600
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: benchmarks.* and tests.pooler

from benchmarks import soak_jobs as jobs  # noqa: E402
from koyojobs import Broker  # noqa: E402
from koyojobs.testing import TemporaryPostgres  # noqa: E402
from tests.pooler import PgBouncer  # noqa: E402

LEASE, GRACE, POLL = 6.0, 2.0, 1.0
FAULTS = ("sigkill", "sigterm", "terminate_backends", "pgbouncer_restart", "postgres_restart")
PRODUCER = "soak-producer"
CLAIMS_TABLE = """
CREATE TABLE soak_claims (job_id bigint, attempt int, started_at timestamptz);
CREATE FUNCTION soak_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO soak_claims VALUES (NEW.id, NEW.attempts, NEW.started_at);
    RETURN NEW;
END $$;
CREATE TRIGGER soak_claim AFTER UPDATE OF started_at ON koyojobs_jobs FOR EACH ROW
    WHEN (NEW.name = 'soak.rated' AND NEW.started_at IS DISTINCT FROM OLD.started_at)
    EXECUTE FUNCTION soak_claim();
"""


@dataclass
class Slot:
    """One worker of the three, restarted whenever its process ends (as a supervisor would)."""

    index: int
    dsn: str
    listen_dsn: str | None
    logdir: Path
    process: asyncio.subprocess.Process | None = None
    planned: str | None = None
    """The signal the soak sent, so that the exit is told apart from the worker's own."""
    exits: list[tuple[str, int]] = field(default_factory=list)
    started: int = 0

    async def start(self) -> None:
        self.started += 1
        log = open(self.logdir / f"worker{self.index}-{self.started}.log", "wb")  # noqa: ASYNC230, SIM115
        extra = ["--listen-dsn", self.listen_dsn] if self.listen_dsn else []
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from koyojobs.cli import run; run()",
            "--log-level",
            "INFO",
            "worker",
            "benchmarks.soak_jobs",
            "--queue",
            jobs.QUEUE,
            "--queue",
            jobs.PERIODIC_QUEUE,
            "--dsn",
            self.dsn,
            *extra,
            "--concurrency",
            "12",
            "--lease",
            str(LEASE),
            "--shutdown-grace",
            str(GRACE),
            "--poll-interval",
            str(POLL),
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
        log.close()

    def signal(self, sig: signal.Signals) -> bool:
        if self.process is None or self.process.returncode is not None:
            return False
        self.planned = sig.name
        self.process.send_signal(sig)
        return True

    async def supervise(self, stopping: asyncio.Event) -> None:
        while True:
            await self.start()
            assert self.process is not None
            code = await self.process.wait()
            self.exits.append((self.planned or "own", code))
            self.planned = None
            if stopping.is_set():
                return
            await asyncio.sleep(0.5 if code in (0, -9) else 1.0)  # a supervisor's pause


@dataclass
class Soak:
    args: argparse.Namespace
    pg: TemporaryPostgres
    bouncer: PgBouncer
    logdir: Path
    slots: list[Slot] = field(default_factory=list)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    outages: list[dict[str, float]] = field(default_factory=list)
    """PostgreSQL restarts: wall clock when stopped, back, seconds down."""
    enqueued: set[int] = field(default_factory=set)
    enqueue_errors: int = 0
    unique_reused: int = 0
    unique_samples: int = 0
    unique_sampled_violations: int = 0

    async def produce(self, broker: Broker, until: float) -> None:
        rng, n = random.Random(self.args.seed), 0
        while time.time() < until:
            calls: list[Any] = [jobs.quick(rng.uniform(0, 0.05)) for _ in range(3)]
            calls.append(jobs.rated(n))
            if rng.random() < 0.12:
                calls.append(jobs.long_def(rng.uniform(3, 10)))
            if rng.random() < 0.12:
                calls.append(jobs.long_async(rng.uniform(3, 10)))
            if rng.random() < 0.35:  # some outlive the grace
                calls.append(jobs.limited(f"k{rng.randrange(3)}", rng.uniform(0.2, 4)))
            if rng.random() < 0.3:
                calls.append(jobs.snoozer(0.5))
            if rng.random() < 0.2:
                calls.append(jobs.flaky())
            n += 1
            try:
                ids = await broker.enqueue_many(calls)
                if rng.random() < 0.5:
                    key = f"u{rng.randrange(5)}"
                    job_id = await broker.enqueue(jobs.unique(key, rng.uniform(0.3, 3)))
                    self.unique_reused += job_id in self.enqueued
                    ids = [*ids, job_id]
            except Exception:
                # An enqueue that raised may have committed (see docs/reliability.md):
                # such a job is not counted as enqueued, and is not judged lost.
                self.enqueue_errors += 1
                await asyncio.sleep(0.2)  # the producer's pace while the database is away
                continue
            self.enqueued.update(ids)
            await asyncio.sleep(self.args.pause)  # the producer's pace

    async def sample_unique(self, broker: Broker, until: float) -> None:
        while time.time() < until:
            await asyncio.sleep(2)  # a sample every 2 s, not a wait for a state
            try:
                self.unique_sampled_violations += await broker.pool.fetchval(
                    "SELECT count(*) FROM (SELECT unique_key FROM koyojobs_jobs"
                    " WHERE status IN ('ready', 'running') AND unique_key IS NOT NULL"
                    " GROUP BY unique_key HAVING count(*) > 1) AS d"
                )
                self.unique_samples += 1
            except Exception:
                continue  # the database is away: the next sample

    async def inject(self, until: float) -> None:
        rng = random.Random(self.args.seed + 1)
        while True:
            pause = rng.uniform(0.5, 1.5) * self.args.fault_every
            if time.time() + pause >= until:
                return
            await asyncio.sleep(pause)  # the fault schedule: random intervals
            fault = rng.choice(FAULTS)
            self.faults[fault] += 1
            print(f"{time.strftime('%H:%M:%S')} {fault}", flush=True)
            try:
                await self.one_fault(fault, rng)
            except Exception as exc:  # a fault that could not be injected (the database is away)
                self.faults[fault + "_failed"] += 1
                print(f"  {fault} failed: {exc!r}", flush=True)

    async def one_fault(self, fault: str, rng: random.Random) -> None:
        if fault in ("sigkill", "sigterm"):
            sig = signal.SIGKILL if fault == "sigkill" else signal.SIGTERM
            if not rng.choice(self.slots).signal(sig):
                self.faults[fault + "_missed"] += 1  # that worker was between lives
        elif fault == "terminate_backends":
            await self.terminate_backends()
        elif fault == "pgbouncer_restart":
            await asyncio.to_thread(self.bouncer.stop)
            await asyncio.sleep(rng.uniform(0, 3))  # the pooler's own outage
            await asyncio.to_thread(self.bouncer.start)
        else:
            down = rng.uniform(1, 9)
            stopped = time.time()
            mode = rng.choice(("fast", "immediate"))
            await asyncio.to_thread(self.pg.restart, mode, down)
            self.outages.append({"stopped": stopped, "back": time.time(), "down_for": down})

    async def terminate_backends(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.pg.dsn, server_settings={"application_name": PRODUCER})
        try:
            self.faults["backends_terminated"] += await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                "   AND application_name <> $1",
                PRODUCER,
            )
        finally:
            await conn.close()

    async def drain(self, broker: Broker) -> float:
        started = time.monotonic()
        while time.monotonic() - started < self.args.settle:
            try:
                left = await broker.pool.fetchval(
                    "SELECT count(*) FROM koyojobs_jobs"
                    " WHERE id = ANY($1::bigint[]) AND status IN ('ready', 'running')",
                    list(self.enqueued),
                )
            except Exception:
                left = -1
            if left == 0:
                break
            await asyncio.sleep(0.5)  # polling the table while the workers drain it
        return time.monotonic() - started

    async def run(self) -> dict[str, Any]:
        direct = self.pg.dsn
        producer_dsn = f"{direct}?application_name={PRODUCER}"
        async with Broker(producer_dsn) as broker:
            await broker.pool.execute(CLAIMS_TABLE)
            pooled = self.bouncer.dsn_for("postgres") + "?statement_cache_size=0"
            self.slots = [
                Slot(0, pooled, direct, self.logdir),
                Slot(1, direct, None, self.logdir),
                Slot(2, direct, None, self.logdir),
            ]
            stopping = asyncio.Event()
            supervisors = [asyncio.create_task(s.supervise(stopping)) for s in self.slots]
            try:
                return await self.soak(broker, stopping, supervisors)
            finally:
                stopping.set()  # interrupted (Ctrl-C): no worker outlives the soak
                for slot in self.slots:
                    if slot.process is not None and slot.process.returncode is None:
                        slot.process.kill()

    async def soak(
        self, broker: Broker, stopping: asyncio.Event, supervisors: list[asyncio.Task[None]]
    ) -> dict[str, Any]:
        began = time.time()
        until = began + self.args.seconds
        await asyncio.gather(
            self.produce(broker, until), self.inject(until), self.sample_unique(broker, until)
        )
        print(f"{time.strftime('%H:%M:%S')} faults stopped; draining", flush=True)
        drained = await self.drain(broker)
        stuck = await broker.pool.fetch(
            "SELECT id, name, status FROM koyojobs_jobs"
            " WHERE (status = 'ready' AND scheduled_at < now() - make_interval(secs => $1))"
            "    OR (status = 'running'"
            "        AND lease_expires_at < now() - make_interval(secs => $1))",
            LEASE + POLL + 5,
        )
        stopping.set()
        for slot in self.slots:
            slot.signal(signal.SIGTERM)
        await asyncio.gather(*supervisors)
        return await self.judge(broker, began, drained, [dict(r) for r in stuck])

    async def judge(
        self, broker: Broker, began: float, drained: float, stuck: list[dict[str, Any]]
    ) -> dict[str, Any]:
        rows = await broker.pool.fetch(
            "SELECT id, name, status, attempts, last_error FROM koyojobs_jobs"
        )
        by_id = {r["id"]: r for r in rows}
        statuses = collections.Counter(
            by_id[i]["status"] if i in by_id else "missing" for i in self.enqueued
        )
        failed_errors = collections.Counter(
            (by_id[i]["name"], by_id[i]["last_error"])
            for i in self.enqueued
            if i in by_id and by_id[i]["status"] == "failed"
        )
        claims = [
            r["started_at"].timestamp()
            for r in await broker.pool.fetch("SELECT started_at FROM soak_claims")
        ]
        ticks = await broker.pool.fetch(
            "SELECT scheduled_at, created_at FROM koyojobs_jobs WHERE name = 'soak.tick'"
            " ORDER BY created_at"
        )
        index_valid = await broker.pool.fetchval(
            "SELECT indisvalid AND indisunique FROM pg_index"
            " WHERE indexrelid = 'koyojobs_jobs_unique_idx'::regclass"
        )
        runs = read_lifelog(self.logdir / "life.log")
        lines = worker_lines(self.logdir)
        tick_moments = [r["scheduled_at"] for r in ticks]
        gaps = []
        created = [r["created_at"].timestamp() for r in ticks]
        for outage in self.outages:
            first = min((t for t in created if t > outage["back"]), default=None)
            gaps.append(None if first is None else round(first - outage["back"], 3))
        exits = collections.Counter(f"{why}:{code}" for s in self.slots for why, code in s.exits)
        unique_overlaps = overlaps_across_jobs(runs, "unique")
        return {
            "seconds": self.args.seconds,
            "wall_seconds": round(time.time() - began, 1),
            "drain_seconds": round(drained, 1),
            "enqueued": len(self.enqueued),
            "enqueue_errors": self.enqueue_errors,
            "statuses": dict(statuses),
            "failed_by_error": {f"{n}: {e}": c for (n, e), c in failed_errors.items()},
            "lost": sum(c for s, c in statuses.items() if s not in ("done", "failed")),
            "stuck": len(stuck),
            "stuck_jobs": stuck[:20],
            "runs": len(runs),
            "double_runs": double_runs(runs),
            "limit_violations": limit_violations(runs),
            "rate_claims": len(claims),
            "rate_violations": rate_violations(claims, *jobs.RATE),
            "unique_enqueues_reusing_a_job": self.unique_reused,
            "unique_index_valid": bool(index_valid),
            "unique_sampled_violations": self.unique_sampled_violations,
            "unique_samples": self.unique_samples,
            "unique_overlaps": len(unique_overlaps),
            "ticks": len(ticks),
            "tick_duplicates": len(tick_moments) - len(set(tick_moments)),
            "tick_gaps_after_outages": gaps,
            "faults": dict(self.faults),
            "outages": [{k: round(v, 3) for k, v in o.items()} for o in self.outages],
            "worker_starts": sum(s.started for s in self.slots),
            "exits": dict(exits),
            "log_lines": lines,
        }


def read_lifelog(path: Path) -> dict[str, dict[str, Any]]:
    """Per run token: job, kind, key, first and last sign of life, outcome."""
    runs: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return runs
    with open(path) as lines:
        for line in lines:
            event, token, job_id, attempt, pid, moment, kind, key, outcome = line.split()
            t = float(moment)
            run = runs.setdefault(
                token,
                {"job": int(job_id), "attempt": int(attempt), "pid": int(pid), "kind": kind,
                 "key": key, "first": t, "last": t, "outcome": None},
            )  # fmt: skip
            run["first"], run["last"] = min(run["first"], t), max(run["last"], t)
            if event == "end":
                run["outcome"] = outcome
    return runs


def _overlapping(spans: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs (an earlier run, a later one) where the later began before the earlier's last sign."""
    found = []
    ordered = sorted(spans, key=lambda r: r["first"])
    latest: dict[str, Any] | None = None
    for run in ordered:
        if latest is not None and run["first"] <= latest["last"]:
            found.append((latest, run))
        if latest is None or run["last"] > latest["last"]:
            latest = run
    return found


def double_runs(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    by_job: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for run in runs.values():
        by_job[run["job"]].append(run)
    return [
        {"job": a["job"], "kind": a["kind"], "overlap": round(a["last"] - b["first"], 3),
         "first": [a["pid"], a["attempt"]], "second": [b["pid"], b["attempt"]]}
        for spans in by_job.values()
        for a, b in _overlapping(spans)
    ]  # fmt: skip


def overlaps_across_jobs(runs: dict[str, dict[str, Any]], kind: str) -> list[tuple[Any, Any]]:
    by_key: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for run in runs.values():
        if run["kind"] == kind:
            by_key[run["key"]].append(run)
    return [
        (a, b) for spans in by_key.values() for a, b in _overlapping(spans) if a["job"] != b["job"]
    ]


def limit_violations(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Moments when more than ``LIMIT`` runs of one key were alive, by their own logs."""
    events: dict[str, list[tuple[float, int, int]]] = collections.defaultdict(list)
    for run in runs.values():
        if run["kind"] == "limited":
            events[run["key"]] += [(run["first"], 1, run["job"]), (run["last"], -1, run["job"])]
    found = []
    for key, moments in events.items():
        alive = 0
        for t, change, _ in sorted(moments, key=lambda e: (e[0], e[1])):  # ends first at a tie
            alive += change
            if alive > jobs.LIMIT:
                found.append({"key": key, "at": t, "alive": alive})
    return found


def rate_violations(starts: list[float], count: int, seconds: float) -> int:
    """Claims that were the (count+1)th within less than ``seconds``."""
    ordered = sorted(starts)
    return sum(1 for i in range(len(ordered) - count) if ordered[i + count] - ordered[i] < seconds)


def worker_lines(logdir: Path) -> dict[str, int]:
    wanted = (
        "lease not renewed",
        "exiting before the lease lapses",
        "job no longer held",
        "lease lapsed before the job began",
        "def jobs still running past the grace",
        "exiting with job threads still running",
        "enqueuing periodic jobs again",
        "claiming again",
        "Traceback",
    )
    counts = dict.fromkeys(wanted, 0)
    for path in logdir.glob("worker*.log"):
        text = path.read_text(errors="replace")
        for phrase in wanted:
            counts[phrase] += text.count(phrase)
    return counts


VIOLATIONS = ("lost", "stuck", "double_runs", "limit_violations", "rate_violations",
              "unique_sampled_violations", "unique_overlaps", "tick_duplicates")  # fmt: skip


def violations(result: dict[str, Any]) -> dict[str, int]:
    found = {}
    for key in VIOLATIONS:
        value = result[key]
        found[key] = len(value) if isinstance(value, list) else int(value)
    found["unique_index_invalid"] = int(not result["unique_index_valid"])
    return found


def print_summary(result: dict[str, Any]) -> None:
    rows = [
        ("seconds of faults (wall, drain)",
         f"{result['seconds']:.0f} ({result['wall_seconds']}, {result['drain_seconds']})"),
        ("enqueued (enqueue errors)", f"{result['enqueued']} ({result['enqueue_errors']})"),
        ("statuses", json.dumps(result["statuses"])),
        ("runs logged", result["runs"]),
        *((f"VIOLATIONS {k}", v) for k, v in violations(result).items()),
        ("rate-limited claims", result["rate_claims"]),
        ("unique samples / reused ids",
         f"{result['unique_samples']} / {result['unique_enqueues_reusing_a_job']}"),
        ("ticks", result["ticks"]),
        ("tick gaps after outages (s)", result["tick_gaps_after_outages"]),
        ("faults", json.dumps(result["faults"])),
        ("worker starts", result["worker_starts"]),
        ("exits (cause:status)", json.dumps(result["exits"])),
        *((f"log: {k}", v) for k, v in result["log_lines"].items()),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:>{width}}  {value}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    logdir = Path(args.logdir or tempfile.mkdtemp(prefix="koyojobs-soak-"))
    logdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before anything runs
    os.environ[jobs.LIFELOG_ENV] = str(logdir / "life.log")
    print(f"logs in {logdir}", flush=True)
    pg = TemporaryPostgres()
    await asyncio.to_thread(pg.start)
    bouncer = PgBouncer(pg.dsn, pool_size=60)
    try:
        await asyncio.to_thread(bouncer.start)
        return await Soak(args, pg, bouncer, logdir).run()
    finally:
        await asyncio.to_thread(bouncer.stop)
        await asyncio.to_thread(pg.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600, help="of faults and enqueuing")
    parser.add_argument("--fault-every", type=float, default=12, help="mean seconds between faults")
    parser.add_argument("--pause", type=float, default=0.25, help="between producer rounds")
    parser.add_argument("--settle", type=float, default=240, help="most seconds to drain")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--logdir", help="where the logs go (default: a new temporary folder)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/soak_outages.json"))
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print_summary(result)
    sys.exit(1 if any(violations(result).values()) else 0)


if __name__ == "__main__":
    main()
