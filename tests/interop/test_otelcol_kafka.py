"""The real OpenTelemetry Collector in front of Foreshock, through real Kafka.

The OpenTelemetry SDK sends fixed metrics and spans (tests/interop/telemetry.py)
over OTLP to the Collector built from deploy/otelcol-builder.yaml, running
with deploy/otelcol-foreshock.yaml; its Kafka exporter writes them to the
test's topics, once as `otlp_proto` and once as `otlp_json`. Foreshock reads
the topics with its own Kafka source, decodes each message with the format
named after the Collector's encoding, as the flow does (one decoder per
partition, messages in offset order), and closes one window of KPIs.

Every expected value below is worked out from what telemetry.py sends.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import MetricExportResult

from connectors.kafka import consume_all
from foreshock.decode import Rejection, decoder_for
from foreshock.records import KpiRecord
from foreshock.schema import Event
from foreshock.windows import WindowSpec, WindowStore
from tests.interop.collector import Collector, running_collector
from tests.interop.telemetry import (
    SERVICE,
    TRACE_START,
    export_counter,
    send_metrics,
    send_spans,
)

pytestmark = [pytest.mark.collector, pytest.mark.kafka]

_WINDOW_S = 60.0

# (metric, type, value, labels) of every sample, in the order of the two
# collections. Counters carry running totals of their increases, starting
# from a 0 baseline. orders_total is cumulative and young, so its first
# point counts whole: +5, then 8 - 5 = +3. The histogram's 20, 40 and 40 fall
# in (0, 50], its 300 in (250, 500]: count 4, sum 400, mean 400 / 4 = 100.
# Percentile ranks are ceil(q/100 * 4): p50 is rank 2 of the 3 in (0, 50],
# interpolated to 50 * 2/3, a bucket holding at least half of all counts;
# p95 and p99 are rank 4, the single count of (250, 500], at 250 + 250 * 1/1.
# The second collection repeats the cumulative histogram: +0, no mean and no
# percentiles.
_SAMPLES = [
    ("orders_total", "counter", 0.0, {}),
    ("orders_total", "counter", 5.0, {}),
    ("queue_depth", "gauge", 7.0, {}),
    ("checkout_latency.count", "counter", 0.0, {}),
    ("checkout_latency.count", "counter", 4.0, {}),
    ("checkout_latency.mean", "gauge", 100.0, {}),
    ("checkout_latency.p50", "gauge", 100 / 3, {"estimate": "bucket_bound"}),
    ("checkout_latency.p95", "gauge", 500.0, {"estimate": "interpolated"}),
    ("checkout_latency.p99", "gauge", 500.0, {"estimate": "interpolated"}),
    ("orders_total", "counter", 8.0, {}),
    ("queue_depth", "gauge", 9.0, {}),
    ("checkout_latency.count", "counter", 4.0, {}),
]
_FIRST_COLLECTION = 9

# One 60 s window holds both collections: orders_total rose by 5 + 3, the
# histogram counted 4, the queue depth averaged (7 + 9) / 2.
_METRIC_KPIS = {
    "orders_total": 8 / _WINDOW_S,
    "queue_depth": 8.0,
    "checkout_latency.count": 4 / _WINDOW_S,
    "checkout_latency.mean": 100.0,
    "checkout_latency.p50": 100 / 3,
    "checkout_latency.p95": 500.0,
    "checkout_latency.p99": 500.0,
}

# The window 10:00 to 10:01 of both traces. checkout-api served 2 requests,
# one a 503: error rate and unavailability 1/2; latencies 80 and 120 ms, so
# nearest-rank p50 is rank 1 (80) and p95, p99 rank 2 (120). orders-db ran 2
# queries, one failed, of 30 and 50 ms.
_SPAN_KPIS = {
    ("api", SERVICE, "requests_per_s"): 2 / _WINDOW_S,
    ("api", SERVICE, "availability"): 0.5,
    ("api", SERVICE, "error_rate"): 0.5,
    ("api", SERVICE, "latency_p50_ms"): 80.0,
    ("api", SERVICE, "latency_p95_ms"): 120.0,
    ("api", SERVICE, "latency_p99_ms"): 120.0,
    ("database", "orders-db", "queries_per_s"): 2 / _WINDOW_S,
    ("database", "orders-db", "query_error_rate"): 0.5,
    ("database", "orders-db", "query_time_p50_ms"): 30.0,
    ("database", "orders-db", "query_time_p95_ms"): 50.0,
    ("database", "orders-db", "query_time_p99_ms"): 50.0,
}


def test_metrics_become_metric_kpis(
    otel_collector: Collector, kafka_bootstrap: str
) -> None:
    sent_from = datetime.now(UTC)
    send_metrics(otel_collector.grpc_endpoint)
    sent_until = datetime.now(UTC)

    events, rejections = _decode(kafka_bootstrap, otel_collector, "metrics")
    kpis = _kpis(events, WindowSpec(_WINDOW_S, align_to=events[0].time))

    assert rejections == []
    assert [_sample(event) for event in events] == [
        (name, kind, pytest.approx(value), labels)
        for name, kind, value, labels in _SAMPLES
    ]
    assert {(e.layer, e.service) for e in events} == {("api", SERVICE)}
    assert {e.attributes["environment"] for e in events} == {"test"}
    first, second = (
        {e.time for e in events[:_FIRST_COLLECTION]},
        {e.time for e in events[_FIRST_COLLECTION:]},
    )
    assert len(first) == len(second) == 1
    assert sent_from <= min(first) < min(second) <= sent_until
    assert kpis == pytest.approx(
        {("api", SERVICE, name): value for name, value in _METRIC_KPIS.items()}
    )


def test_spans_become_request_and_query_kpis(
    otel_collector: Collector, kafka_bootstrap: str
) -> None:
    first_trace, second_trace = send_spans(otel_collector.http_endpoint)

    events, rejections = _decode(kafka_bootstrap, otel_collector, "traces")
    kpis = _kpis(events, WindowSpec(_WINDOW_S))

    assert rejections == []
    assert [_request(event) for event in sorted(events, key=_time)] == [
        (40, "database", "orders-db", first_trace, _query(30.0, rows=1)),
        (120, "api", SERVICE, first_trace, _served(200, 120.0)),
        (1070, "database", "orders-db", second_trace, _query(50.0, error=True)),
        (1080, "api", SERVICE, second_trace, _served(503, 80.0)),
    ]
    assert {e.attributes.get("caller") for e in events if e.layer == "database"} == {
        SERVICE
    }
    assert kpis == pytest.approx(_SPAN_KPIS)


def test_a_delivery_kafka_refuses_fails_the_senders_export(
    otelcol_binary: Path, kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Topics that do not exist, which the configuration forbids creating: the
    # Collector keeps retrying, so the SDK's export ends at its own deadline.
    missing = (f"missing-{uuid.uuid4().hex}", f"missing-{uuid.uuid4().hex}")
    log = tmp_path / "otelcol.log"

    with running_collector(
        otelcol_binary, kafka_bootstrap, missing, "otlp_proto", log
    ) as collector:
        result = export_counter(collector.grpc_endpoint, timeout_s=3.0)

    assert result is MetricExportResult.FAILURE
    assert "UNKNOWN_TOPIC_OR_PARTITION" in log.read_text()


def _decode(
    bootstrap: str, collector: Collector, signal: str
) -> tuple[list[Event], list[Rejection]]:
    topic = collector.metrics_topic if signal == "metrics" else collector.spans_topic
    decode = decoder_for(f"{collector.encoding}_{signal}")
    events: list[Event] = []
    rejections: list[Rejection] = []
    for message in consume_all(bootstrap, topic):
        assert message.value is not None, "the Collector wrote a tombstone"
        found, refused = decode(message.value)
        events.extend(found)
        rejections.extend(refused)
    return events, rejections


def _kpis(events: list[Event], spec: WindowSpec) -> dict[tuple[str, str, str], Any]:
    store = WindowStore(spec)
    for event in events:
        assert store.add(event) is None, f"late: {event!r}"
    records: list[KpiRecord] = store.close_all()
    assert {r.window_start for r in records} == {spec.start(spec.index(events[0].time))}
    return {(r.layer.value, r.service, r.kpi): r.value for r in records}


def _sample(event: Event) -> tuple[Any, ...]:
    p = event.payload
    return (p.name, p.type, p.value, p.labels)  # type: ignore[union-attr]


def _time(event: Event) -> datetime:
    return event.time


def _request(event: Event) -> tuple[Any, ...]:
    since_start_ms = (event.time - TRACE_START) / timedelta(milliseconds=1)
    return (
        since_start_ms,
        event.layer.value,
        event.service,
        event.attributes["trace_id"],
        event.payload.model_dump(),
    )


def _served(status: int, duration_ms: float) -> dict[str, Any]:
    return {
        "kind": "http_request",
        "route": "/cart",
        "method": "POST",
        "status": status,
        "duration_ms": duration_ms,
    }


def _query(
    duration_ms: float, *, rows: int | None = None, error: bool = False
) -> dict[str, Any]:
    return {
        "kind": "db_query",
        "fingerprint": "SELECT orders",
        "duration_ms": duration_ms,
        "rows": rows,
        "error": error,
    }
