"""What the interoperability tests send: fixed telemetry through the real SDK.

The OpenTelemetry Python SDK records it and its OTLP exporters send it, so
the Collector receives exactly what an instrumented service would send.
Every value is fixed here, so that tests can work out by hand what Foreshock
must make of it.

Metrics of `checkout-api`, collected twice with cumulative temporality:

====================================  ==========  ==========================
instrument                            collection  value after the collection
====================================  ==========  ==========================
counter ``orders_total``              1, 2        5, then 5 + 3 = 8
gauge ``queue_depth``                 1, 2        7, then 9
histogram ``checkout_latency`` (ms)   1, 2        20, 40, 40, 300 (cumulative,
                                                  so sent twice unchanged)
====================================  ==========  ==========================

Spans of `checkout-api`, two traces at fixed times from `TRACE_START`, each
a server span `POST /cart` with a child client span `SELECT orders` to the
PostgreSQL database at `orders-db`:

=====  ==============================  ======================================
trace  server span                     client span (database)
=====  ==============================  ======================================
1      0 to 120 ms, status 200         10 to 40 ms, 1 row returned
2      1000 to 1080 ms, 503, Error     1020 to 1070 ms, status Error
=====  ==============================  ======================================
"""

from __future__ import annotations

from datetime import UTC, datetime

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode, Tracer, set_span_in_context

__all__ = [
    "HISTOGRAM_BOUNDS_MS",
    "SERVICE",
    "TRACE_START",
    "export_counter",
    "send_metrics",
    "send_spans",
]

SERVICE = "checkout-api"
TRACE_START = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
HISTOGRAM_BOUNDS_MS = (0.0, 50.0, 100.0, 250.0, 500.0)

_MS = 1_000_000
_EXPORT_TIMEOUT_S = 30.0
_RESOURCE = Resource.create(
    {"service.name": SERVICE, "deployment.environment.name": "test"}
)


def send_metrics(grpc_endpoint: str) -> None:
    """Record the metrics, then export two collections over OTLP/gRPC.

    Each export returns only once the Collector has answered; the
    configuration under test answers after Kafka has acknowledged.
    """
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=_RESOURCE)
    meter = provider.get_meter("foreshock.tests.interop")
    orders = meter.create_counter("orders_total", unit="{order}")
    depth = meter.create_gauge("queue_depth", unit="{item}")
    latency = meter.create_histogram(
        "checkout_latency",
        unit="ms",
        explicit_bucket_boundaries_advisory=HISTOGRAM_BOUNDS_MS,
    )
    exporter = OTLPMetricExporter(
        endpoint=grpc_endpoint, insecure=True, timeout=_EXPORT_TIMEOUT_S
    )

    orders.add(5)
    depth.set(7)
    for value in (20.0, 40.0, 40.0, 300.0):
        latency.record(value)
    _export_metrics(reader, exporter)

    orders.add(3)
    depth.set(9)
    _export_metrics(reader, exporter)

    exporter.shutdown()
    provider.shutdown()


def export_counter(grpc_endpoint: str, timeout_s: float) -> MetricExportResult:
    """Export one counter point over OTLP/gRPC; the SDK's result, not checked."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=_RESOURCE)
    provider.get_meter("foreshock.tests.interop").create_counter("orders_total").add(1)
    exporter = OTLPMetricExporter(
        endpoint=grpc_endpoint, insecure=True, timeout=timeout_s
    )
    collected = reader.get_metrics_data()
    assert collected is not None, "the SDK collected no metrics"

    result = exporter.export(collected)

    exporter.shutdown()
    provider.shutdown()
    return result


def send_spans(http_endpoint: str) -> list[str]:
    """Record both traces, export their spans over OTLP/HTTP in one request.

    Returns the hex trace ids, trace 1 first.
    """
    recorded = InMemorySpanExporter()
    provider = TracerProvider(resource=_RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    tracer = provider.get_tracer("foreshock.tests.interop")
    start = int(TRACE_START.timestamp()) * 1_000_000_000

    first = _checkout(tracer, start, server_ms=(0, 120), query_ms=(10, 40), status=200)
    second = _checkout(
        tracer, start, server_ms=(1000, 1080), query_ms=(1020, 1070), status=503
    )

    _export_spans(recorded.get_finished_spans(), http_endpoint)
    provider.shutdown()
    return [f"{first:032x}", f"{second:032x}"]


def _checkout(
    tracer: Tracer,
    start_ns: int,
    *,
    server_ms: tuple[int, int],
    query_ms: tuple[int, int],
    status: int,
) -> int:
    """One `POST /cart` that queries the orders table; returns its trace id.

    A 5xx answer marks both spans as errors, as the HTTP and database
    semantic conventions ask.
    """
    failed = status >= 500
    server = tracer.start_span(
        "POST /cart",
        kind=SpanKind.SERVER,
        start_time=start_ns + server_ms[0] * _MS,
        attributes={
            "http.request.method": "POST",
            "http.route": "/cart",
            "http.response.status_code": status,
        },
    )
    query = tracer.start_span(
        "SELECT orders",
        context=set_span_in_context(server),
        kind=SpanKind.CLIENT,
        start_time=start_ns + query_ms[0] * _MS,
        attributes={
            "db.system.name": "postgresql",
            "server.address": "orders-db",
            "db.operation.name": "SELECT",
            "db.collection.name": "orders",
            "db.query.text": "SELECT * FROM orders WHERE id = ?",
        },
    )
    if failed:
        query.set_status(StatusCode.ERROR)
        server.set_status(StatusCode.ERROR)
    else:
        query.set_attribute("db.response.returned_rows", 1)
    query.end(end_time=start_ns + query_ms[1] * _MS)
    server.end(end_time=start_ns + server_ms[1] * _MS)
    trace_id: int = server.get_span_context().trace_id
    return trace_id


def _export_metrics(reader: InMemoryMetricReader, exporter: OTLPMetricExporter) -> None:
    collected = reader.get_metrics_data()
    assert collected is not None, "the SDK collected no metrics"
    result = exporter.export(collected, timeout_millis=_EXPORT_TIMEOUT_S * 1000)
    assert result is MetricExportResult.SUCCESS, f"OTLP/gRPC export gave {result}"


def _export_spans(spans: tuple[ReadableSpan, ...], http_endpoint: str) -> None:
    exporter = OTLPSpanExporter(
        endpoint=f"{http_endpoint}/v1/traces", timeout=_EXPORT_TIMEOUT_S
    )
    result = exporter.export(spans)
    exporter.shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK
    assert result is SpanExportResult.SUCCESS, f"OTLP/HTTP export gave {result}"
