"""Flow control on a real PostgreSQL with in-process workers: unique jobs,
concurrency and rate limits, pause and resume, snooze, why a job waits."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest

from koyojobs import Broker, JobDefinitionError, Status, define_job
from koyojobs.outcomes import as_columns
from koyojobs.sql import QUERIES
from tests import flow_jobs
from tests.conftest import insert_raw_job, wait_for_status
from tests.faults.conftest import until
from tests.integration.conftest import StartWorker


def read_log(path: Path) -> list[tuple[str, int, str, int, float]]:
    """The (event, job id, key, pid, time) lines the flow jobs wrote, in time order."""
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines()]
    events = [(e, int(i), k, int(p), float(t)) for e, i, k, p, t in lines]
    return sorted(events, key=lambda e: (e[4], e[0] == "start"))


def most_at_once(events: list[tuple[str, int, str, int, float]]) -> dict[str, int]:
    """Per key (and "*" for all), the most runs between their start and end lines at once."""
    now: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)
    for event, _, key, _, _ in events:
        step = 1 if event == "start" else -1
        for k in (key, "*"):
            now[k] += step
            most[k] = max(most[k], now[k])
    return dict(most)


async def _all_done(broker: Broker, ids: list[int], timeout: float = 30) -> None:
    for job_id in ids:
        await wait_for_status(broker, job_id, Status.DONE, timeout=timeout)


# -- unique -----------------------------------------------------------------


async def test_a_unique_job_is_enqueued_once_while_ready_and_again_once_done(
    broker: Broker, start_worker: StartWorker
) -> None:
    first = await flow_jobs.unique(7)
    assert await flow_jobs.unique(7) == first
    assert await flow_jobs.unique(user_id=7, note="") == first  # equal arguments, passed otherwise
    other = await flow_jobs.unique(8)
    assert other != first
    count = await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs")
    assert count == 2

    await start_worker(queue=flow_jobs.QUEUE)
    await _all_done(broker, [first, other])
    again = await flow_jobs.unique(7)
    assert again not in (first, other)


async def test_enqueue_many_leaves_one_job_per_key_and_returns_the_ids_in_order(
    broker: Broker,
) -> None:
    ids = await broker.enqueue_many(
        [
            flow_jobs.unique_by_user(1, "a"),
            flow_jobs.free(1),
            flow_jobs.unique_by_user(2, "b"),
            flow_jobs.unique_by_user(1, "c"),  # the same key as the first
            flow_jobs.free(2),
        ]
    )
    assert ids is not None
    assert ids[0] == ids[3]
    assert len(set(ids)) == 4
    assert ids[1] < ids[4]  # plain calls keep their order
    again = await broker.enqueue_many(
        [flow_jobs.unique_by_user(2, "x"), flow_jobs.unique_by_user(3, "y")]
    )
    assert again is not None and again[0] == ids[2]
    rows = await broker.pool.fetch(
        "SELECT id, args FROM koyojobs_jobs WHERE name = 'flow.unique_by_user' ORDER BY id"
    )
    assert [r["id"] for r in rows] == sorted({ids[0], ids[2], again[1]})
    # The first call of a key is the one kept: its note is "a", not "c".
    args = await broker.pool.fetchval("SELECT args FROM koyojobs_jobs WHERE id = $1", ids[0])
    assert broker.serializer.load_arguments(args, "flow.unique_by_user") == ((1, "a"), {})


async def test_unique_true_keys_dataclasses_and_sets_by_value(broker: Broker) -> None:
    point = flow_jobs.Point(1, 2)
    first = await flow_jobs.unique_point(point, frozenset({"a", "b"}))
    same = await flow_jobs.unique_point(flow_jobs.Point(1, 2), frozenset({"b", "a"}))
    other = await flow_jobs.unique_point(flow_jobs.Point(1, 3), frozenset({"a", "b"}))
    assert first == same != other


async def test_bad_unique_keys_are_errors_at_the_call_site_naming_the_job(
    broker: Broker,
) -> None:
    @define_job(name="flow.test.raising_key", unique=lambda x: {}[x])
    async def raising(x: int) -> None: ...

    @define_job(name="flow.test.int_key", unique=lambda x: x)
    async def int_key(x: int) -> None: ...

    @define_job(name="flow.test.unkeyable", unique=True)
    async def unkeyable(handler: object) -> None: ...

    with pytest.raises(
        ValueError, match=r"job 'flow.test.raising_key': its unique= function raised KeyError"
    ):
        raising(1)
    with pytest.raises(
        TypeError, match=r"job 'flow.test.int_key': its unique= function returned int 1, not a str"
    ):
        int_key(1)
    with pytest.raises(
        TypeError, match=r"job 'flow.test.unkeyable': unique=True cannot key argument 'handler'"
    ):
        unkeyable(object())

    @define_job(name="flow.test.nul_key", unique=lambda x: f"a\x00{x}")
    async def nul_key(x: int) -> None: ...

    with pytest.raises(ValueError, match=r"job 'flow.test.nul_key'.*cannot store"):
        nul_key(1)
    with pytest.raises(JobDefinitionError, match=r"holds a control or invisible character"):
        define_job(name="flow.test\x1fsep", concurrency=1)(lambda: None)
    assert await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs") == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency=0 is invalid: an int >= 1"),
        ({"concurrency": True}, "concurrency=True is invalid"),
        ({"rate_limit": (0, 1)}, r"rate_limit=\(0, 1\) is invalid"),
        ({"rate_limit": (5, 0)}, r"rate_limit=\(5, 0\) is invalid"),
        ({"rate_limit": 5}, "rate_limit=5 is invalid"),
        ({"limit_key": lambda: "k"}, "limit_key= needs a limit to key"),
        ({"unique": "yes"}, "unique='yes' is invalid"),
        ({"concurrency": 2**31}, "concurrency=2147483648 is invalid"),
        ({"rate_limit": (2**31, 1)}, r"rate_limit=\(2147483648, 1\) is invalid"),
        (
            {"unique": True, "every": timedelta(seconds=5)},
            "unique= does not apply to a periodic job",
        ),
    ],
)
def test_bad_flow_control_options_are_one_line_errors_naming_the_job(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(JobDefinitionError, match=message) as caught:
        define_job(name="flow.test.bad", **options)(lambda: None)  # type: ignore[call-overload]
    assert "flow.test.bad" in str(caught.value) and "\n" not in str(caught.value)


async def test_an_operator_retry_does_not_break_uniqueness(
    broker: Broker,
) -> None:
    first = await flow_jobs.unique(1)
    await broker.pool.execute("UPDATE koyojobs_jobs SET status = 'failed' WHERE id = $1", first)
    second = await flow_jobs.unique(1)
    assert second != first
    assert not await broker.retry_job(first)
    assert await broker.unique_holder(first) == second
    assert await broker.cancel(second)
    assert await broker.retry_job(first)


async def test_a_retry_racing_an_enqueue_of_its_key_says_no_instead_of_raising(
    broker: Broker,
) -> None:
    first = await flow_jobs.unique(2)
    await broker.pool.execute("UPDATE koyojobs_jobs SET status = 'failed' WHERE id = $1", first)
    async with broker.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        second = await broker.enqueue(flow_jobs.unique(2), connection=conn)
        # The retry sees no holder in its snapshot; the index waits for this
        # transaction, then refuses.
        retried = asyncio.create_task(broker.retry_job(first))
        await until(lambda: _waits_on_a_lock(broker), what="the retry waiting on the enqueue's key")
        await tx.commit()
    assert await retried is False
    assert await broker.unique_holder(first) == second


async def _waits_on_a_lock(broker: Broker) -> bool:
    waiting: int = await broker.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query LIKE '%unique_key = j.unique_key%'"
    )
    return waiting > 0


async def test_a_lowered_rate_limit_holds_its_key_back_and_nothing_behind_it(
    broker: Broker,
) -> None:
    declare = QUERIES["register_limits"]
    await broker.pool.execute(declare, ["flow.test.rated"], [None], [5], [60.0], [])
    await broker.pool.execute(
        "INSERT INTO koyojobs_rate_windows (limit_key, starts, rate_count, rate_seconds)"
        " VALUES ('flow.test.rated', ARRAY[now() - interval '1 second',"
        " now() - interval '1 second'], 5, 60)"
    )
    # A deploy lowers the limit to 2 a minute: the window is full now.
    await broker.pool.execute(declare, ["flow.test.rated"], [None], [2], [60.0], [])
    blocked = await broker.pool.fetchval("SELECT blocked_until > now() FROM koyojobs_rate_windows")
    assert blocked
    held = await insert_raw_job(broker, "flow.test.rated", b"x", 3)
    free = await insert_raw_job(broker, "flow.free", b"x", 3)
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET queue = 'lowered',"
        " limit_key = CASE WHEN id = $1 THEN 'flow.test.rated' END",
        held,
    )
    rows = await broker.pool.fetch(
        QUERIES["finish_and_claim_limited"], "lowered", 4, 30.0, "w", *as_columns([])
    )
    assert [r["id"] for r in rows] == [free]
    # Nothing due but the held-back job: the worker sleeps until the window frees.
    due = await broker.pool.fetchval(QUERIES["next_due_limited"], "lowered", ["flow.test.rated"])
    assert due > 50
    # The limit removed: its windows go with it.
    await broker.pool.execute(declare, [], [], [], [], ["flow.test.rated"])
    assert await broker.pool.fetchval("SELECT count(*) FROM koyojobs_rate_windows") == 0


async def test_drain_of_a_limited_queue_lets_a_job_that_always_snoozes_go(
    broker: Broker, tmp_path: Path
) -> None:
    from koyojobs.testing import drain

    log = tmp_path / "runs.log"
    await broker.enqueue_many([flow_jobs.limited(str(log), 0) for _ in range(5)])
    await flow_jobs.always_snoozes()
    counts = await asyncio.wait_for(drain(broker, queue=flow_jobs.QUEUE), 30)
    # Its snoozes are due at once, and a round that writes other outcomes
    # may run it again; the drain ends all the same.
    assert counts["done"] == 5 and 1 <= counts["ready"] <= 3, counts
    job = (await broker.list_jobs(status="ready"))[0]
    assert (job.name, job.attempts, job.snoozes) == ("flow.always_snoozes", 0, counts["ready"])
    # It declared the queue's limits, as a worker does, to claim within them.
    declared = await broker.pool.fetchval(
        "SELECT concurrency FROM koyojobs_limited_jobs WHERE name = 'flow.limited'"
    )
    assert declared == 3


# -- concurrency ---------------------------------------------------------------


async def test_concurrency_holds_and_a_held_back_job_blocks_none_behind_it(
    broker: Broker, start_worker: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    limited = await broker.enqueue_many([flow_jobs.limited(str(log), 0.5) for _ in range(9)])
    free = await broker.enqueue_many([flow_jobs.free(n) for n in range(5)])
    assert limited is not None and free is not None
    await start_worker(queue=flow_jobs.QUEUE, pool_size=8)
    # The free jobs, behind nine limited ones, finish while limited jobs still wait.
    await _all_done(broker, free)
    waiting = await broker.pool.fetchval(
        "SELECT count(*) FROM koyojobs_jobs WHERE id = ANY($1) AND status = 'ready'", limited
    )
    assert waiting >= 3
    await _all_done(broker, limited)
    assert most_at_once(read_log(log))["*"] == 3


async def test_concurrency_per_key_and_the_queue_order_among_jobs_that_may_start(
    broker: Broker, start_worker: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    calls = [flow_jobs.per_tenant(str(log), f"t{n % 3}", 0.2) for n in range(18)]
    ids = await broker.enqueue_many(calls)
    assert ids is not None
    await start_worker(queue=flow_jobs.QUEUE, pool_size=8)
    await _all_done(broker, ids)
    events = read_log(log)
    most = most_at_once(events)
    assert {k: v for k, v in most.items() if k != "*"} == {"t0": 2, "t1": 2, "t2": 2}
    # Per key, jobs start in the order they were enqueued.
    for key in ("t0", "t1", "t2"):
        started = [job_id for e, job_id, k, _, _ in events if e == "start" and k == key]
        assert started == sorted(started)


async def test_why_a_due_job_waits(
    broker: Broker, start_worker: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    running = await broker.enqueue_many(
        [flow_jobs.per_tenant(str(log), "acme", 30) for _ in range(3)]
    )
    assert running is not None
    await start_worker(queue=flow_jobs.QUEUE, pool_size=4, lease=60)
    for job_id in running[:2]:
        await wait_for_status(broker, job_id, Status.RUNNING)
    [held] = await broker.list_jobs(status="ready")
    assert held.id == running[2]
    assert held.waiting == "concurrency limit: 2 of 2 running for key 'acme'"

    await broker.pause(flow_jobs.QUEUE)
    [held] = await broker.list_jobs(status="ready")
    assert held.waiting == "queue paused"
    [queue] = await broker.queue_status()
    assert queue.paused


async def test_rate_limits_hold_in_any_window_per_job_and_per_key(
    broker: Broker, start_worker: StartWorker
) -> None:
    rated = await broker.enqueue_many([flow_jobs.rated(n) for n in range(10)])
    keyed = await broker.enqueue_many(
        [flow_jobs.rated_per_key(k, n) for n in range(4) for k in ("a", "b")]
    )
    assert rated is not None and keyed is not None
    await start_worker(queue=flow_jobs.QUEUE, pool_size=8)
    await _all_done(broker, rated + keyed, timeout=20)
    rows = await broker.pool.fetch(
        "SELECT name, limit_key, started_at FROM koyojobs_jobs ORDER BY started_at"
    )
    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        groups[row["limit_key"]].append(row["started_at"].timestamp())
    for key, count in (
        ("flow.rated", 4),
        ("flow.rated_per_key\x1fa", 2),
        ("flow.rated_per_key\x1fb", 2),
    ):
        starts = groups[key]
        # Any count + 1 starts in a row span at least the window.
        spans = [starts[i + count] - starts[i] for i in range(len(starts) - count)]
        assert spans and min(spans) >= 1.0 - 1e-6, (key, spans)


async def test_a_rate_limited_job_is_said_to_wait_for_its_window(
    broker: Broker, start_worker: StartWorker
) -> None:
    ids = await broker.enqueue_many([flow_jobs.rated_per_key("k", n) for n in range(3)])
    assert ids is not None
    worker = await start_worker(queue=flow_jobs.QUEUE, pool_size=4, poll_interval=30)
    for job_id in ids[:2]:
        await wait_for_status(broker, job_id, Status.DONE)
    [held] = await broker.list_jobs(status="ready")
    assert held.waiting is not None
    assert held.waiting.startswith("rate limit: 2 starts in 1s for key 'k', next start at ")
    # The worker sleeps until the window frees, not until its 30 s poll.
    await wait_for_status(broker, ids[2], Status.DONE, timeout=5)
    assert worker.limited


# -- pause and resume ------------------------------------------------------------


async def test_a_paused_queue_claims_nothing_keeps_enqueueing_and_resumes_on_a_notification(
    broker: Broker, start_worker: StartWorker
) -> None:
    await broker.pause(flow_jobs.QUEUE)
    assert list(await broker.paused_queues()) == [flow_jobs.QUEUE]
    worker = await start_worker(queue=flow_jobs.QUEUE, poll_interval=30)
    [lane] = worker._lanes
    rounds = 0
    exchange = lane._exchange

    async def counted(free: int) -> int:
        nonlocal rounds
        rounds += 1
        return await exchange(free)

    lane._exchange = counted  # type: ignore[method-assign]
    lane.wake()
    await until(lambda: rounds >= 1, what="a claim round before the enqueue")
    rounds = 0  # from here on, only a notification wakes the worker (its poll is 30 s)
    job_id = await flow_jobs.free(1)
    # The insert's notification wakes the worker for a claim round, which
    # claims nothing: the queue is paused.
    await until(lambda: rounds >= 1, what="a claim round after the enqueue")
    other = await flow_jobs.free(2)
    await until(lambda: rounds >= 2, what="a claim round after the second enqueue")
    for waiting in (job_id, other):
        job = await broker.get_job(waiting)
        assert job is not None and job.status is Status.READY and job.attempts == 0

    await broker.resume(flow_jobs.QUEUE)
    # Within the 30 s poll: only the resume's notification can wake the worker.
    await wait_for_status(broker, job_id, Status.DONE, timeout=5)
    assert await broker.paused_queues() == {}


async def test_pause_outlives_the_broker_and_shows_with_no_jobs(dsn: str) -> None:
    async with Broker(dsn) as broker:
        await broker.pause("emails")
        await broker.pause("emails")  # twice is once
    async with Broker(dsn) as broker:
        [queue] = await broker.queue_status()
        assert (queue.queue, queue.paused, queue.ready) == ("emails", True, 0)
        with pytest.raises(ValueError, match="pause\\(\\) needs a queue name"):
            await broker.pause("")


# -- snooze ---------------------------------------------------------------------


async def test_snooze_runs_the_job_again_without_spending_an_attempt(
    broker: Broker, start_worker: StartWorker
) -> None:
    job_id = await flow_jobs.snoozer(3)  # max_attempts=2: three snoozes spend none
    await start_worker(queue=flow_jobs.QUEUE)
    job = await wait_for_status(broker, job_id, Status.DONE)
    assert (job.attempts, job.snoozes, job.result) == (1, 3, 1)


def test_snooze_outside_a_job_is_an_error() -> None:
    from koyojobs import snooze

    with pytest.raises(RuntimeError, match="outside a running job"):
        snooze(1)


async def test_a_periodic_jobs_ticks_carry_its_limit(
    broker: Broker, start_worker: StartWorker
) -> None:
    worker = await start_worker(queue="flow-periodic")
    assert worker.limited

    async def ticked() -> int:
        found: int = await broker.pool.fetchval(
            "SELECT count(*) FROM koyojobs_jobs WHERE name = 'flow.periodic_limited'"
            " AND limit_key = 'flow.periodic_limited' AND status = 'done'"
        )
        return found

    await until(ticked, timeout=10, what="a tick of the periodic job, run")


async def test_a_queue_without_limited_jobs_keeps_the_one_statement_claim(
    broker: Broker, start_worker: StartWorker
) -> None:
    plain = await start_worker(queue="default")
    limited = await start_worker(queue=flow_jobs.QUEUE)
    assert (plain.limited, limited.limited) == (False, True)


async def test_the_pruner_deletes_rate_windows_none_of_whose_starts_counts(
    broker: Broker,
) -> None:
    from koyojobs.retention import Pruner

    await broker.pool.execute(
        "INSERT INTO koyojobs_rate_windows (limit_key, starts, rate_count, rate_seconds) VALUES"
        " ('spent', ARRAY[now() - interval '2 minutes'], 5, 60),"
        " ('counting', ARRAY[now() - interval '2 minutes', now() - interval '5 seconds'], 5, 60)"
    )
    pruner = Pruner(broker, every=3600)
    pruner.start()

    async def only_the_counting_one_left() -> bool:
        rows = await broker.pool.fetch("SELECT limit_key FROM koyojobs_rate_windows")
        return [r["limit_key"] for r in rows] == ["counting"]

    try:
        await until(only_the_counting_one_left, what="the spent window pruned")
    finally:
        await pruner.stop()
