"""Bulk enqueue by COPY (koyojobs.bulk), on a real PostgreSQL: ids in order, rows
as the INSERT writes them, the same NOTIFY, and the INSERT kept where it must be."""

from __future__ import annotations

import asyncio

import asyncpg
import pendulum

from koyojobs import Broker, schedule_at
from koyojobs.bulk import COPY_FROM
from tests import jobs
from tests.integration.test_coalesced_enqueue import once

SIZE = COPY_FROM + 500


async def _record_statements(broker: Broker) -> None:
    """Each statement that inserts jobs leaves its text (COPY or INSERT) in test_statements."""
    await broker.pool.execute(
        """
        CREATE TABLE test_statements (query text NOT NULL);
        CREATE FUNCTION test_record() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO test_statements VALUES (current_query());
            RETURN NULL;
        END $$;
        CREATE TRIGGER test_record AFTER INSERT ON koyojobs_jobs
            FOR EACH STATEMENT EXECUTE FUNCTION test_record();
        """
    )


async def _statements(broker: Broker) -> list[str]:
    rows = await broker.pool.fetch("SELECT query FROM test_statements")
    return [r["query"].lstrip().split()[0] for r in rows]


async def _stored(broker: Broker) -> list[asyncpg.Record]:
    return await broker.pool.fetch(
        "SELECT id, name, queue, priority, max_attempts, status, args, scheduled_at, created_at,"
        " limit_key, trace_context FROM koyojobs_jobs ORDER BY id"
    )


async def test_a_large_batch_goes_by_copy_with_its_ids_in_order(broker: Broker) -> None:
    heard: list[str] = []
    notified = asyncio.Event()
    listener = await asyncpg.connect(broker.database.dsn)

    def hear(*args: object) -> None:
        heard.append(str(args[3]))
        notified.set()

    await listener.add_listener("koyojobs", hear)
    later = pendulum.now("UTC").add(hours=1)
    await _record_statements(broker)
    calls = [schedule_at(later, jobs.echo(n)) if n == 5 else jobs.echo(n) for n in range(SIZE)]
    ids = await broker.enqueue_many(calls)
    assert await _statements(broker) == ["COPY"]
    try:
        rows = await _stored(broker)
        assert ids == [r["id"] for r in rows]
        assert len(set(ids)) == SIZE
        values = [broker.serializer.load_arguments(r["args"], r["name"])[0][0] for r in rows]
        assert values == list(range(SIZE))
        first = rows[0]
        assert (first["name"], first["queue"], first["priority"], first["max_attempts"]) == (
            "tests.jobs.echo",
            "default",
            50,
            3,
        )
        assert {r["status"] for r in rows} == {"ready"}
        # Scheduled "now" is the transaction's now(), as the INSERT's coalesce() gives.
        assert all(r["scheduled_at"] == r["created_at"] for i, r in enumerate(rows) if i != 5)
        assert rows[5]["scheduled_at"] == later
        # The statement trigger's one NOTIFY for the queue.
        await asyncio.wait_for(notified.wait(), 5)
        await listener.execute("SELECT 1")  # any later notification has arrived by now
        assert heard == ["default"]
    finally:
        await listener.close()


async def test_ids_drawn_by_others_in_between_are_not_taken_for_the_batchs(
    broker: Broker,
) -> None:
    # A row trigger that draws sequence values of its own, as another session
    # inserting at the same moment would: the ids are no longer a plain range.
    await broker.pool.execute(
        """
        CREATE FUNCTION test_draw() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.priority = 50 AND random() < 0.5 THEN
                PERFORM nextval('koyojobs_jobs_id_seq');
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_draw BEFORE INSERT ON koyojobs_jobs
            FOR EACH ROW EXECUTE FUNCTION test_draw();
        """
    )
    ids = await broker.enqueue_many(jobs.echo(n) for n in range(SIZE))
    rows = await _stored(broker)
    assert ids == [r["id"] for r in rows]
    assert ids[-1] - ids[0] > SIZE  # there were gaps
    values = [broker.serializer.load_arguments(r["args"], r["name"])[0][0] for r in rows]
    assert values == list(range(SIZE))


async def test_unique_calls_small_batches_and_the_callers_transaction_keep_the_insert(
    broker: Broker,
) -> None:
    await _record_statements(broker)
    async with broker.pool.acquire() as conn, conn.transaction():
        ids = await broker.enqueue_many((jobs.echo(n) for n in range(SIZE)), connection=conn)
    assert len(ids) == SIZE and ids == sorted(ids)
    calls = [once("k") if n == 100 else jobs.echo(n) for n in range(SIZE)]
    mixed = await broker.enqueue_many(calls)
    assert len(set(mixed)) == SIZE
    small = await broker.enqueue_many(jobs.echo(n) for n in range(COPY_FROM - 1))
    assert len(small) == COPY_FROM - 1
    # The unique batch goes through koyojobs_insert_unique, an INSERT inside a function.
    assert await _statements(broker) == ["INSERT", "SELECT", "INSERT"]
    assert await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs") == 3 * SIZE - 501
