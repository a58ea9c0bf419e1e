"""Prometheus metrics (the optional extra ``metrics``, with ``prometheus_client``).

Two sources, each what only it can see:

- The dashboard's ``GET {mount}/metrics``: the jobs table, per queue —
  ``koyojobs_jobs{queue,status}`` (a gauge: how many jobs have each status
  now) and ``koyojobs_oldest_ready_seconds{queue}`` (how long the oldest due
  job has waited).
- ``koyojobs worker --metrics-port N``: the worker process's own attempts —
  ``koyojobs_attempts_total{queue,name,outcome}`` (outcome: done, retried,
  snoozed, failed, cancelled) and ``koyojobs_attempt_duration_seconds``
  (a histogram, by queue and name), beside prometheus_client's process
  metrics.

Example:
    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> registry = CollectorRegistry()
    >>> attempts = WorkerMetrics(registry)
    >>> b"koyojobs_attempts_total" in generate_latest(registry)
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import instrumentation
from .models import Status

if TYPE_CHECKING:
    from asyncpg import Record

    from .broker import Broker
    from .dashboard.data import QueueRow
    from .jobs import JobCall
    from .outcomes import Decision

__all__ = ["CONTENT_TYPE", "WorkerMetrics", "install", "queue_exposition", "serve"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The exposition format's media type."""

_NO_BOUND = 2**62
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class _QueueSnapshot(Collector):
    def __init__(self, queues: Sequence[QueueRow]) -> None:
        self.queues = queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily(
            "koyojobs_jobs", "Jobs in the table, by queue and status.", labels=["queue", "status"]
        )
        oldest = GaugeMetricFamily(
            "koyojobs_oldest_ready_seconds",
            "Seconds the oldest due ready job of the queue has waited (0: none waits).",
            labels=["queue"],
        )
        for q in self.queues:
            # Ready jobs are due ones and scheduled ones; without 0006's
            # indexes the finished counts are not read (None), nor served.
            counts = {
                Status.READY: q.ready + q.scheduled,
                Status.RUNNING: q.running,
                Status.DONE: q.done,
                Status.FAILED: q.failed,
                Status.CANCELLED: q.cancelled,
            }
            for status, count in counts.items():
                if count is not None:
                    jobs.add_metric([q.queue, status.value], count)
            oldest.add_metric([q.queue], q.oldest_wait or 0.0)
        yield jobs
        yield oldest


async def queue_exposition(broker: Broker) -> bytes:
    """The dashboard's metrics, in the exposition format, from one look at the table.

    The dashboard's statement of its queues page with no bound on its counts:
    every count read from its partial index (the finished ones from 0006's),
    so a scrape costs a read of those index entries, never of the table.
    """
    from .dashboard import data  # the dashboard's extra: only where it serves this

    rows = await data.queue_rows(broker, indexed=await data.indexed(broker), bound=_NO_BOUND)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_QueueSnapshot(rows))
    return generate_latest(registry)


def _outcome(decision: Decision) -> str:
    if decision.status is Status.READY:
        return "snoozed" if decision.snoozed else "retried"
    return decision.status.value


class WorkerMetrics:
    """The attempts of this process's workers, counted and timed (an instrumentation observer)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.attempts = Counter(
            "koyojobs_attempts",
            "Attempts finished by this process's workers, by queue, job and outcome.",
            ["queue", "name", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "koyojobs_attempt_duration_seconds",
            "How long attempts ran, by queue and job.",
            ["queue", "name"],
            buckets=_BUCKETS,
            registry=registry,
        )

    @contextmanager
    def enqueue(
        self, calls: Sequence[JobCall[Any]]
    ) -> Iterator[tuple[str | None, Callable[[Sequence[int]], None]]]:
        yield None, lambda ids: None

    @contextmanager
    def attempt(self, row: Record) -> Iterator[Callable[[Decision], None]]:
        started = time.perf_counter()

        def finished(decision: Decision) -> None:
            queue, name = row["queue"], row["name"]
            self.attempts.labels(queue, name, _outcome(decision)).inc()
            self.duration.labels(queue, name).observe(time.perf_counter() - started)

        yield finished


def install(registry: CollectorRegistry = REGISTRY) -> WorkerMetrics:
    """Count and time every attempt this process runs, into ``registry``."""
    metrics = WorkerMetrics(registry)
    instrumentation.add(metrics)
    return metrics


def serve(port: int, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY) -> Any:
    """Serve ``registry`` at ``http://host:port/metrics`` on a thread; returns the server."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
