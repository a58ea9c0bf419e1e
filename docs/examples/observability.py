"""OpenTelemetry: the trace of a request that enqueues a job, and the attempt's metrics."""

from collections.abc import Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import koyojobs.otel
from koyojobs import Broker, Worker, define_job, set_current_broker

# In an app: an SDK with real exporters (OTLP...), set as the global providers
# (trace.set_tracer_provider, metrics.set_meter_provider); instrument() then
# needs no arguments. Here everything stays in memory, to print it.
spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
metric_reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[metric_reader])
tracer = tracer_provider.get_tracer("shop")


@define_job(name="docs.send_receipt", queue="emails")
async def send_receipt(order_id: int) -> None:
    with tracer.start_as_current_span("render receipt"):  # nests under the attempt's span
        pass


async def main(dsn: str) -> None:
    koyojobs.otel.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        async with Broker(dsn) as broker:
            set_current_broker(broker)
            with tracer.start_as_current_span("POST /orders"):
                job_id = await send_receipt(42)
            assert job_id is not None
            async with Worker(broker, queue="emails"):
                await broker.wait(job_id, timeout=30)
            set_current_broker(None)
    finally:
        koyojobs.otel.uninstrument()
    print_trace(spans.get_finished_spans())
    print_metrics()


_SHOWN = ("messaging.destination.name", "messaging.message.id", "koyojobs.outcome")


def print_trace(finished: Sequence[ReadableSpan]) -> None:
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(finished, key=lambda s: s.start_time or 0):
        by_parent.setdefault(span.parent.span_id if span.parent else None, []).append(span)
    traces = {span.context.trace_id for span in finished if span.context}
    print(f"{len(traces)} trace, {len(finished)} spans")

    def show(span: ReadableSpan, depth: int) -> None:
        attributes = span.attributes or {}
        shown = " ".join(f"{k}={attributes[k]!s}" for k in _SHOWN if k in attributes)
        print(f"{'  ' * depth}{span.name} [{span.kind.name}] {shown}".rstrip())
        assert span.context is not None
        for child in by_parent.get(span.context.span_id, []):
            show(child, depth + 1)

    for root in by_parent.get(None, []):
        show(root, 0)


def print_metrics() -> None:
    data = metric_reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = sorted((point.attributes or {}).items())
                    labels = ", ".join(f"{k}={v!s}" for k, v in attributes)
                    if isinstance(point, NumberDataPoint):  # a counter's or a gauge's value
                        shown = f"= {point.value}"
                    else:  # a histogram's
                        shown = f"count {point.count}"
                    print(f"{metric.name}{{{labels}}} {shown}")
