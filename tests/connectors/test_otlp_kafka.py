"""OTLP on Kafka through the main job: the same KPIs as native events.

Three services report the same requests and metrics: one as native events,
one as OTLP protobuf, one as OTLP/JSON, each on its own topics, all encoded
by the OpenTelemetry Python SDK's OTLP encoder where OTLP is used.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from bytewax.testing import run_main
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

from connectors.kafka import consume_all, produce_all
from connectors.messages import OutMessage
from foreshock.config import Settings
from foreshock.jobs import kafka_flow
from tests.connectors.test_otlp import NS, TEN, otlp_json, sdk_metrics
from tests.kafka_helpers import TopicFactory

pytestmark = pytest.mark.kafka

MINUTES = 3
MS = 1_000_000


def _requests() -> list[tuple[int, int, int]]:
    """(start ns, duration ns, HTTP status): 5 a minute, one 503 at 10:01."""
    out = []
    for minute in range(MINUTES):
        for i in range(5):
            start = TEN + minute * 60 * NS + i * 10 * NS
            status = 503 if (minute, i) == (1, 4) else 200
            out.append((start, (50 + 10 * i + minute) * MS, status))
    return out


def _spans(service: str) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.http")
    for start, duration, status in _requests():
        span = tracer.start_span(
            "GET /cart",
            kind=SpanKind.SERVER,
            start_time=start,
            attributes={"http.route": "/cart", "http.response.status_code": status},
        )
        span.end(end_time=start + duration)
    return list(exporter.get_finished_spans())


def _native(spans_topic: str, metrics_topic: str, service: str) -> list[OutMessage]:
    """The same telemetry as native events, split over two topics as OTLP is."""
    docs: list[dict[str, Any]] = []
    for start, duration, status in _requests():
        payload = {
            "kind": "http_request",
            "route": "/cart",
            "status": status,
            "duration_ms": duration / MS,
        }
        docs.append({"time": (start + duration) / NS, "payload": payload})
    metrics: list[dict[str, Any]] = []
    # The counter's series starts at 10:00 and reads 10, 40, 90 a minute apart.
    for minute in range(MINUTES + 1):
        time_s = (TEN + minute * 60 * NS) / NS
        counter = {
            "kind": "metric_sample",
            "name": "http.server.requests",
            "type": "counter",
            "value": 10.0 * minute * minute,
            "labels": {"http.route": "/cart"},
        }
        metrics.append({"time": time_s, "payload": counter})
        if minute:
            gauge = {
                "kind": "metric_sample",
                "name": "queue.depth",
                "value": 3.0 + minute,
            }
            metrics.append({"time": time_s, "payload": gauge})
    return _messages(spans_topic, service, docs) + _messages(
        metrics_topic, service, metrics
    )


def _messages(topic: str, service: str, docs: list[dict[str, Any]]) -> list[OutMessage]:
    return [
        OutMessage(
            topic,
            service.encode(),
            json.dumps({**d, "layer": "api", "service": service}).encode(),
        )
        # A producer sends as things happen: in event-time order.
        for d in sorted(docs, key=lambda d: d["time"])
    ]


def _otlp(
    metrics_topic: str, spans_topic: str, service: str, *, json_: bool
) -> list[OutMessage]:
    requests = [encode_metrics(m) for m in sdk_metrics(service, TEN, MINUTES)]
    requests.append(encode_spans(_spans(service)))
    topics = [metrics_topic] * MINUTES + [spans_topic]
    return [
        OutMessage(topic, None, otlp_json(r) if json_ else r.SerializeToString())
        for topic, r in zip(topics, requests, strict=True)
    ]


def test_otlp_proto_and_json_make_the_same_kpis_as_native_events(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    names = kafka_topics(
        "native-spans",
        "native-metrics",
        "m-proto",
        "s-proto",
        "m-json",
        "s-json",
        "kpis",
        "anomalies",
        "incidents",
        "warnings",
        "dead",
        "late",
    )
    inputs, outputs = names[:6], names[6:]
    native_spans, native_metrics, m_proto, s_proto, m_json, s_json = inputs
    settings = Settings(
        kafka={
            "bootstrap_servers": kafka_bootstrap,
            "input_topics": inputs,
            "group_id": native_spans,
            "formats": {
                m_proto: "otlp_proto",
                s_proto: "otlp_proto",
                m_json: "otlp_json",
                s_json: "otlp_json",
            },
        },
        otlp={"signals": {m_proto: "metrics", s_proto: "traces"}},
        topics=dict(
            zip(
                [
                    "kpis",
                    "anomalies",
                    "incidents",
                    "early_warnings",
                    "dead_letters",
                    "late_events",
                ],
                outputs,
                strict=True,
            )
        ),
    )
    produce_all(
        kafka_bootstrap,
        _native(native_spans, native_metrics, "native-api")
        + _otlp(m_proto, s_proto, "proto-api", json_=False)
        + _otlp(m_json, s_json, "json-api", json_=True)
        + [OutMessage(m_proto, None, b"\x00not protobuf")],
    )

    run_main(kafka_flow(settings, until_end=True))  # type: ignore[no-untyped-call]

    records = [
        json.loads(m.value)["kpi"] for m in consume_all(kafka_bootstrap, outputs[0])
    ]
    dead = [json.loads(m.value) for m in consume_all(kafka_bootstrap, outputs[4])]

    def kpis(service: str, only: set[str] | None = None) -> set[tuple[Any, ...]]:
        return {
            (r["layer"], r["kpi"], r["window_start"], r["value"], r["state"])
            for r in records
            if r["service"] == service and (only is None or r["kpi"] in only)
        }

    shared = {
        "requests_per_s",
        "error_rate",
        "availability",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "http.server.requests",
        "queue.depth",
    }
    assert kpis("proto-api") == kpis("json-api")
    assert kpis("proto-api", shared) == kpis("native-api", shared)
    assert ("api", "error_rate", "2025-03-04T10:01:00Z", 0.2, "ok") in kpis("json-api")
    assert ("api", "http.server.requests", "2025-03-04T10:02:00Z", 0.5, "ok") in kpis(
        "proto-api"
    )
    assert {r["kpi"] for r in records if r["service"] == "json-api"} >= {
        "http.server.duration.p99",
        "http.server.duration.count",
    }
    assert [(d["reason"], d["topic"]) for d in dead] == [("otlp_decode_error", m_proto)]
