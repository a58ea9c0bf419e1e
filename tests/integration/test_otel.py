"""koyojobs.otel: spans per enqueue and per attempt in one trace, and metrics, across a worker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import koyojobs.otel
from koyojobs import Broker, Status, Workflow, sync
from tests import jobs
from tests import workflow_jobs as wj
from tests.integration.conftest import StartWorker


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    koyojobs.otel.instrument(tracer_provider=t.tracer_provider, meter_provider=t.meter_provider)
    try:
        yield t
    finally:
        koyojobs.otel.uninstrument()
        t.tracer_provider.shutdown()
        t.meter_provider.shutdown()


async def test_the_attempt_joins_the_enqueuing_trace(
    broker: Broker, start_worker: StartWorker, telemetry: Telemetry
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /signup") as request:
        job_id = await jobs.echo("hi")
    assert job_id is not None
    await start_worker()
    job = await broker.wait(job_id, timeout=10)
    assert job.status is Status.DONE
    spans = {span.name: span for span in telemetry.finished()}
    send, process = spans["send default"], spans["process default"]
    trace_id = request.get_span_context().trace_id
    assert send.context is not None and process.context is not None
    assert send.context.trace_id == trace_id == process.context.trace_id
    assert send.parent is not None and send.parent.span_id == request.get_span_context().span_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert dict(send.attributes or {}) == {
        "messaging.system": "koyojobs",
        "messaging.operation.type": "send",
        "messaging.operation.name": "enqueue",
        "messaging.destination.name": "default",
        "koyojobs.job.name": "tests.jobs.echo",
        "messaging.message.id": str(job_id),
    }
    assert dict(process.attributes or {}) == {
        "messaging.system": "koyojobs",
        "messaging.operation.type": "process",
        "messaging.operation.name": "run",
        "messaging.message.id": str(job_id),
        "messaging.destination.name": "default",
        "koyojobs.job.name": "tests.jobs.echo",
        "koyojobs.job.attempt": 1,
        "koyojobs.job.max_attempts": 3,
        "koyojobs.outcome": "done",
    }
    stored = await broker.pool.fetchval(
        "SELECT trace_context FROM koyojobs_jobs WHERE id = $1", job_id
    )
    assert json.loads(stored)["traceparent"].split("-")[1] == f"{trace_id:032x}"


async def test_failed_attempts_are_errors_and_metrics_count_outcomes(
    broker: Broker, start_worker: StartWorker, telemetry: Telemetry
) -> None:
    ids = await broker.enqueue_many([jobs.always_fails(), jobs.echo(1), jobs.echo(2)])
    assert ids is not None
    await start_worker()
    for job_id in ids:
        await broker.wait(job_id, timeout=10)
    sends = [s for s in telemetry.finished() if s.kind is SpanKind.PRODUCER]
    assert len(sends) == 1  # one statement, one span
    assert (sends[0].attributes or {})["messaging.batch.message_count"] == 3
    processes = [s for s in telemetry.finished() if s.kind is SpanKind.CONSUMER]
    assert len(processes) == 4  # always_fails twice, echo twice
    assert all(
        p.context is not None and p.context.trace_id == sends[0].context.trace_id for p in processes
    )
    failed = [p for p in processes if (p.attributes or {})["koyojobs.outcome"] != "done"]
    assert sorted(str((p.attributes or {})["koyojobs.outcome"]) for p in failed) == [
        "failed",
        "retried",
    ]
    assert all(p.status.status_code is StatusCode.ERROR for p in failed)
    assert all(p.status.description == "ValueError: always" for p in failed)
    counts = {
        (dict(p.attributes)["koyojobs.job.name"], dict(p.attributes)["koyojobs.outcome"]): p.value
        for p in telemetry.points("koyojobs.attempts")
    }
    assert counts == {
        ("tests.jobs.always_fails", "retried"): 1,
        ("tests.jobs.always_fails", "failed"): 1,
        ("tests.jobs.echo", "done"): 2,
    }
    durations = telemetry.points("messaging.process.duration")
    assert sum(p.count for p in durations) == 4
    waits = telemetry.points("koyojobs.queue.wait")
    assert sum(p.count for p in waits) == 4 and all(p.min >= 0 for p in waits)


async def test_without_instrumentation_nothing_is_stored(broker: Broker) -> None:
    job_id = await jobs.echo(1)
    ids = await broker.enqueue_many([jobs.echo(2), jobs.echo(3)])
    assert ids is not None
    stored = await broker.pool.fetch(
        "SELECT trace_context FROM koyojobs_jobs WHERE id = ANY($1)", [job_id, *ids]
    )
    assert [row[0] for row in stored] == [None, None, None]


def test_importing_koyojobs_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, koyojobs, koyojobs.testing, koyojobs.cli\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_a_snooze_is_its_own_outcome_not_an_error(
    broker: Broker, start_worker: StartWorker, telemetry: Telemetry
) -> None:
    from tests import flow_jobs

    job_id = await flow_jobs.snoozer(1)
    await start_worker(queue=flow_jobs.QUEUE)
    await broker.wait(job_id, timeout=10)
    processes = [s for s in telemetry.finished() if s.kind is SpanKind.CONSUMER]
    outcomes = [(p.attributes or {})["koyojobs.outcome"] for p in processes]
    assert outcomes == ["snoozed", "done"]
    assert all(p.status.status_code is not StatusCode.ERROR for p in processes)


def _fan_out() -> Workflow:
    wf = Workflow("traced")
    fetch = wf.add(wj.step("fetch"), name="fetch")
    sizes = [wf.add(wj.step(f"resize-{n}"), after=fetch, name=f"resize-{n}") for n in (64, 256)]
    wf.add(wj.collect("notify"), after=sizes, name="notify")
    return wf


async def _stored_trace_ids(broker: Broker, workflow_id: int) -> list[str]:
    rows = await broker.pool.fetch(
        "SELECT trace_context FROM koyojobs_jobs WHERE workflow_id = $1 ORDER BY id", workflow_id
    )
    return [json.loads(row[0])["traceparent"].split("-")[1] if row[0] else "" for row in rows]


async def test_each_step_of_a_workflow_joins_the_trace_that_enqueued_it(
    broker: Broker, start_worker: StartWorker, telemetry: Telemetry
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /signup") as request:
        run = await _fan_out().enqueue()
    trace_id = request.get_span_context().trace_id
    assert await _stored_trace_ids(broker, run.id) == [f"{trace_id:032x}"] * 4
    await start_worker()
    for job_id in run.job_ids.values():
        assert (await broker.wait(job_id, timeout=10)).status is Status.DONE
    sends = [s for s in telemetry.finished() if s.kind is SpanKind.PRODUCER]
    assert len(sends) == 1  # one statement for every step, one span
    send = sends[0]
    assert send.name == "send default" and send.context is not None
    assert send.parent is not None and send.parent.span_id == request.get_span_context().span_id
    assert (send.attributes or {})["messaging.batch.message_count"] == 4
    processes = {
        int(str((s.attributes or {})["messaging.message.id"])): s
        for s in telemetry.finished()
        if s.kind is SpanKind.CONSUMER
    }
    # Each step's attempt, released by its upstream steps' outcomes, is in the request's trace.
    assert set(processes) == set(run.job_ids.values())
    for process in processes.values():
        assert process.context is not None and process.context.trace_id == trace_id
        assert process.parent is not None and process.parent.span_id == send.context.span_id
        assert (process.attributes or {})["koyojobs.outcome"] == "done"


async def test_a_workflow_enqueued_from_sync_code_stores_the_callers_trace(
    broker: Broker, dsn: str, telemetry: Telemetry
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")

    def enqueue() -> int:  # in a thread, in a psycopg transaction, under a span of its own
        with tracer.start_as_current_span("manage.py import"), psycopg.connect(dsn) as conn:
            return sync.enqueue(_fan_out(), connection=conn).id

    workflow_id = await asyncio.to_thread(enqueue)
    spans = {span.name: span for span in telemetry.finished()}
    caller, send = spans["manage.py import"], spans["send default"]
    assert caller.context is not None and send.context is not None
    assert send.parent is not None and send.parent.span_id == caller.context.span_id
    trace_id = f"{caller.context.trace_id:032x}"
    assert await _stored_trace_ids(broker, workflow_id) == [trace_id] * 4


async def test_without_instrumentation_steps_store_no_trace(broker: Broker) -> None:
    run = await _fan_out().enqueue()
    assert await _stored_trace_ids(broker, run.id) == [""] * 4


async def test_a_job_enqueued_from_sync_code_stores_the_callers_trace(
    broker: Broker, dsn: str, telemetry: Telemetry
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")

    def enqueue() -> list[int]:  # a view's thread: one job in its transaction, one on its own
        with tracer.start_as_current_span("POST /orders"):
            with psycopg.connect(dsn) as conn:
                inside = sync.enqueue(jobs.echo("in the transaction"), connection=conn)
            return [inside, sync.enqueue(jobs.echo("on its own"))]

    sync.configure(dsn=dsn)
    try:
        ids = await asyncio.to_thread(enqueue)
    finally:
        sync.configure()
    request = next(s for s in telemetry.finished() if s.name == "POST /orders")
    sends = [s for s in telemetry.finished() if s.name == "send default"]
    assert request.context is not None and len(sends) == 2
    assert all(s.parent is not None and s.parent.span_id == request.context.span_id for s in sends)
    rows = await broker.pool.fetch(
        "SELECT trace_context FROM koyojobs_jobs WHERE id = ANY($1::bigint[])", ids
    )
    trace_id = f"{request.context.trace_id:032x}"
    assert [json.loads(r[0])["traceparent"].split("-")[1] for r in rows] == [trace_id] * 2
