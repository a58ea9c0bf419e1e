"""OpenTelemetry for koyojobs: spans per enqueue and per attempt, and metrics.

Needs the extra ``otel`` (``pip install 'koyojobs[otel]'``, which brings
``opentelemetry-api``); configure an SDK and exporters as for any other
library. After :func:`instrument`:

- every enqueue (``await job(...)``, ``enqueue``, ``enqueue_many``) makes a
  PRODUCER span ``send <queue>``, and stores its W3C trace context with the
  job (the global propagator's carrier, in the column ``trace_context``);
- every attempt a worker runs makes a CONSUMER span ``process <queue>``
  whose parent is that stored context: the attempt shows in the trace of the
  request that enqueued it. The job's own spans nest under it;
- three metrics: ``koyojobs.attempts`` (counter, by ``koyojobs.outcome``:
  ``done``, ``retried`` or ``failed``), ``messaging.process.duration`` (how
  long attempts ran, in seconds) and ``koyojobs.queue.wait`` (seconds from
  when a job was due to when its attempt began).

Attributes follow OpenTelemetry's messaging conventions where they fit
(``messaging.system`` = ``koyojobs``, ``messaging.destination.name`` = the
queue, ``messaging.message.id``, ``messaging.operation.type``), with
``koyojobs.job.name`` and ``koyojobs.job.attempt`` for the rest.

Example:
    >>> import koyojobs.otel
    >>> koyojobs.otel.instrument()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.trace import SpanKind, StatusCode
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("koyojobs.otel needs OpenTelemetry: pip install 'koyojobs[otel]'") from exc

from . import instrumentation
from .models import Status

if TYPE_CHECKING:
    from asyncpg import Record

    from .jobs import JobCall
    from .outcomes import Decision

__all__ = ["instrument", "uninstrument"]

_SCOPE = "koyojobs"
_OUTCOMES = {Status.DONE: "done", Status.READY: "retried", Status.FAILED: "failed"}


class _Observer:
    def __init__(
        self, tracer_provider: trace.TracerProvider | None, meter_provider: Any | None
    ) -> None:
        from importlib.metadata import version

        self._tracer = trace.get_tracer(
            _SCOPE, version("koyojobs"), tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(_SCOPE, version("koyojobs"), meter_provider=meter_provider)
        self._attempts = meter.create_counter(
            "koyojobs.attempts", unit="{attempt}", description="Attempts finished, by outcome"
        )
        self._duration = meter.create_histogram(
            "messaging.process.duration", unit="s", description="How long attempts ran"
        )
        self._waited = meter.create_histogram(
            "koyojobs.queue.wait",
            unit="s",
            description="Time from when a job was due to when its attempt began",
        )

    @contextlib.contextmanager
    def enqueue(
        self, calls: Sequence[JobCall[Any]]
    ) -> Iterator[tuple[str, Callable[[Sequence[int]], None]]]:
        queues = {c.definition.queue for c in calls}
        names = {c.definition.name for c in calls}
        queue = queues.pop() if len(queues) == 1 else None
        attributes: dict[str, Any] = {
            "messaging.system": "koyojobs",
            "messaging.operation.type": "send",
            "messaging.operation.name": "enqueue",
        }
        if queue is not None:
            attributes["messaging.destination.name"] = queue
        if len(names) == 1:
            attributes["koyojobs.job.name"] = next(iter(names))
        if len(calls) > 1:
            attributes["messaging.batch.message_count"] = len(calls)
        with self._tracer.start_as_current_span(
            f"send {queue or 'koyojobs'}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)

            def inserted(ids: Sequence[int]) -> None:
                if len(ids) == 1:
                    span.set_attribute("messaging.message.id", str(ids[0]))

            yield json.dumps(carrier, separators=(",", ":")), inserted

    @contextlib.contextmanager
    def attempt(self, row: Record) -> Iterator[Callable[[Decision], None]]:
        parent = None
        stored = row["trace_context"]
        if stored:
            with contextlib.suppress(ValueError, TypeError):
                parent = propagate.extract(json.loads(stored))
        queue: str = row["queue"]
        name: str = row["name"]
        common = {"messaging.destination.name": queue, "koyojobs.job.name": name}
        scheduled: datetime = row["scheduled_at"]
        self._waited.record(max(0.0, datetime.now(UTC).timestamp() - scheduled.timestamp()), common)
        started = time.monotonic()
        token = otel_context.attach(parent) if parent is not None else None
        try:
            with self._tracer.start_as_current_span(
                f"process {queue}",
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "koyojobs",
                    "messaging.operation.type": "process",
                    "messaging.operation.name": "run",
                    "messaging.message.id": str(row["id"]),
                    "koyojobs.job.attempt": row["attempts"],
                    "koyojobs.job.max_attempts": row["max_attempts"],
                    **common,
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as span:

                def finished(decision: Decision) -> None:
                    outcome = (
                        "snoozed"
                        if decision.snoozed
                        else _OUTCOMES.get(decision.status, decision.status.value)
                    )
                    span.set_attribute("koyojobs.outcome", outcome)
                    # A snooze is the job's own choice, not an error.
                    if decision.status is not Status.DONE and not decision.snoozed:
                        span.set_status(StatusCode.ERROR, decision.error)
                        if decision.error:
                            span.add_event(
                                "exception",
                                {
                                    "exception.message": decision.error,
                                    "exception.stacktrace": decision.traceback or "",
                                },
                            )
                    attributes = {**common, "koyojobs.outcome": outcome}
                    self._attempts.add(1, attributes)
                    self._duration.record(time.monotonic() - started, attributes)

                yield finished
        finally:
            if token is not None:
                otel_context.detach(token)


def instrument(
    *, tracer_provider: trace.TracerProvider | None = None, meter_provider: Any | None = None
) -> None:
    """Turn on spans and metrics for this process's enqueues and attempts.

    The global providers are used unless given. Call it once at start-up,
    in the processes that enqueue and in the workers; calling it again
    replaces the providers.

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider  # doctest: +SKIP
        >>> koyojobs.otel.instrument(tracer_provider=TracerProvider())  # doctest: +SKIP
    """
    instrumentation.observer = _Observer(tracer_provider, meter_provider)


def uninstrument() -> None:
    """Turn spans and metrics off again; enqueues store no trace context from now on.

    Example:
        >>> from koyojobs.otel import uninstrument
        >>> uninstrument()
    """
    instrumentation.observer = None
