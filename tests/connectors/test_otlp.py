"""OTLP metrics and traces into events: the shared cases C08, C09, C20, and
payloads encoded by the OpenTelemetry Python SDK's own OTLP encoder, checked
in both encodings the Collector's kafka exporter writes."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from pydantic import ValidationError

from connectors.otlp import OtlpDecoder, OtlpSettings, decode_otlp, parse
from connectors.otlp.series import CumulativeSeries, Increase
from foreshock.config import Settings, load_settings
from foreshock.layers import Layer
from foreshock.schema import Event, MetricSample
from foreshock.windows import WindowSpec, WindowStore
from tests.cases import CASES

T0 = datetime(2025, 3, 4, tzinfo=UTC)
NS = 1_000_000_000
# 2025-03-04T10:00:00Z in Unix nanoseconds.
TEN = 1741082400 * NS


def _lines(name: str) -> list[bytes]:
    return (CASES / name).read_bytes().splitlines()


def _by_window(events: Sequence[Event], spec: WindowSpec) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for event in events:
        start = spec.start(spec.index(event.time)).strftime("%H:%M")
        out.setdefault(start, []).append(event)
    return out


def _kpis(events: Sequence[Event], kpi: str) -> dict[str, float | None]:
    store = WindowStore(spec=WindowSpec(60.0, 30.0, T0))
    for event in events:
        assert store.add(event) is None
    return {
        r.window_start.strftime("%H:%M"): r.value
        for r in store.close_all()
        if r.kpi == kpi and r.state == "ok"
    }


# --- C08: OTLP/JSON as the specification writes it ------------------------


def test_c08_int64_as_string_or_number_and_enum_as_name_or_number_agree() -> None:
    first, second = _lines("C08-otlp-json-int64-encoding.otlp.jsonl")[:2]

    as_strings = parse(first, "metrics", "json")
    as_numbers = parse(second, "metrics", "json")
    events_1, rejected_1 = decode_otlp(first, "metrics", "json")
    events_2, rejected_2 = decode_otlp(second, "metrics", "json")

    assert as_strings == as_numbers
    assert events_1 == events_2
    assert rejected_1 == rejected_2 == []
    point = as_strings.resource_metrics[0].scope_metrics[0].metrics[0].sum
    assert point.aggregation_temporality == 2 and point.is_monotonic
    [sample] = point.data_points
    assert (sample.start_time_unix_nano, sample.time_unix_nano) == (TEN - 120 * NS, TEN)
    # A series that started 2 minutes before its first point: all 42 count.
    assert [e.payload.value for e in events_1] == [0.0, 42.0]  # type: ignore[union-attr]
    assert events_1[1].payload == MetricSample(
        name="http.server.request.count",
        type="counter",
        value=42.0,
        unit="{request}",
        labels={"http.response.status_code": "200", "http.route": "/api/cart"},
    )
    assert events_1[1].time == datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    assert (events_1[1].layer, events_1[1].service) == (Layer.API, "checkout-api")


def test_c08_nanosecond_timestamp_is_exact() -> None:
    line = _lines("C08-otlp-json-int64-encoding.otlp.jsonl")[2]

    request = parse(line, "metrics", "json")
    [event], rejected = decode_otlp(line, "metrics", "json")

    point = request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0]
    assert point.time_unix_nano == 1741082400123456789
    assert event.time == datetime(2025, 3, 4, 10, 0, 0, 123456, tzinfo=UTC)
    assert event.payload == MetricSample(
        name="db.client.connection.count",
        value=17.0,
        unit="{connection}",
        labels={"state": "used"},
    )
    assert (event.layer, event.service) == (Layer.DATABASE, "orders-db")
    assert rejected == []


def test_c08_span_hex_ids_duration_and_error() -> None:
    line = _lines("C08-otlp-json-int64-encoding.otlp.jsonl")[3]

    request = parse(line, "traces", "json")
    [event], rejected = decode_otlp(line, "traces", "json")

    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.span_id.hex() == "eee19b7ec3c1b174"
    assert event.attributes["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert event.payload.kind == "http_request"
    assert event.payload.status == 503  # type: ignore[union-attr]
    assert event.payload.duration_ms == 1250.0  # type: ignore[union-attr]
    assert _kpis([event], "error_rate") == {"10:00": 1.0}
    assert rejected == []


# --- C09: cumulative counters with resets ---------------------------------


def test_c09_throughput_per_minute_never_negative_nor_invented() -> None:
    decoder = OtlpDecoder()
    events: list[Event] = []
    for line in _lines("C09-cumulative-counter-reset.otlp.jsonl"):
        decoded, rejected = decoder.decode(line, "metrics", "json")
        assert rejected == []
        events.extend(decoded)

    per_s = _kpis(events, "http.server.request.count")

    # 10:00 is instance-1's baseline (its series started 3 days earlier);
    # 10:03 is instance-1's 25 since its restart plus instance-2's first 40.
    assert {w: round(v * 60, 9) for w, v in per_s.items() if v is not None} == {
        "10:01": 60,
        "10:02": 70,
        "10:03": 65,
        "10:04": 130,
    }
    assert "10:00" not in per_s


def test_cumulative_series_rules() -> None:
    series = CumulativeSeries(new_series_max_age_ns=60 * NS, max_series=10)

    old = series.increase("a", TEN - 3600 * NS, TEN, (100.0,))
    step = series.increase("a", TEN - 3600 * NS, TEN + 60 * NS, (130.0,))
    repeat = series.increase("a", TEN - 3600 * NS, TEN + 60 * NS, (130.0,))
    unreported_reset = series.increase("a", TEN - 3600 * NS, TEN + 120 * NS, (7.0,))
    start_moved_back = series.increase("a", TEN - 7200 * NS, TEN + 180 * NS, (9.0,))
    fresh = series.increase("b", TEN - 30 * NS, TEN, (5.0,), 1.5)

    assert old is None
    assert step == Increase((30.0,), 0.0)
    assert repeat is None
    assert unreported_reset == Increase((7.0,), 0.0)
    assert start_moved_back is None
    assert fresh == Increase((5.0,), 1.5)


def test_least_recently_seen_series_is_forgotten() -> None:
    series = CumulativeSeries(new_series_max_age_ns=0, max_series=1)

    series.increase("a", 1, TEN, (1.0,))
    series.increase("b", 1, TEN, (1.0,))
    again = series.increase("a", 1, TEN + NS, (3.0,))

    assert len(series) == 1
    assert again is None  # "a" was forgotten: its next point is a baseline


# --- C20: percentiles from explicit buckets -------------------------------


def test_c20_percentiles_say_when_buckets_only_bound_them() -> None:
    events: list[Event] = []
    for line in _lines("C20-histogram-percentile-artefacts.otlp.jsonl"):
        decoded, rejected = decode_otlp(line, "metrics", "json")
        assert rejected == []
        events.extend(decoded)
    spec = WindowSpec(60.0, 30.0, T0)

    windows = _by_window(events, spec)
    first = {e.payload.name: e.payload for e in windows["10:00"]}  # type: ignore[union-attr]
    second = {e.payload.name: e.payload for e in windows["10:01"]}  # type: ignore[union-attr]

    name = "http.server.request.duration"
    assert first[f"{name}.mean"].value == pytest.approx(0.012)
    # 990 of 1000 requests in (0, 0.1]: interpolation only, p99 <= 0.1 s.
    assert first[f"{name}.p50"].value == pytest.approx(0.0505, abs=1e-4)
    assert first[f"{name}.p99"].value == pytest.approx(0.1)
    assert {first[f"{name}.p{q}"].labels["estimate"] for q in (50, 95, 99)} == {
        "bucket_bound"
    }
    assert second[f"{name}.p95"].value == pytest.approx(0.25)
    assert second[f"{name}.p95"].labels["estimate"] == "interpolated"
    # Rank 990 is in (2.5, +inf): only the recorded max 7.8 s bounds it.
    assert second[f"{name}.p99"].value == 7.8
    assert second[f"{name}.p99"].labels == {"estimate": "overflow", "above": "2.5"}
    assert _kpis(events, f"{name}.p99") == {"10:00": pytest.approx(0.1), "10:01": 7.8}
    assert _kpis(events, f"{name}.count") == {"10:00": 1000 / 60, "10:01": 1000 / 60}


def test_exponential_histogram_and_summary_percentiles() -> None:
    document = _metrics_json(
        {
            "name": "rpc.duration",
            "exponentialHistogram": {
                "aggregationTemporality": 1,
                "dataPoints": [
                    {
                        "startTimeUnixNano": str(TEN),
                        "timeUnixNano": str(TEN + 60 * NS),
                        "count": "4",
                        "sum": 14.0,
                        "scale": 0,
                        "positive": {"offset": 0, "bucketCounts": ["1", "2", "1"]},
                    }
                ],
            },
        },
        {
            "name": "queue.wait",
            "summary": {
                "dataPoints": [
                    {
                        "startTimeUnixNano": str(TEN - 10 * NS),
                        "timeUnixNano": str(TEN),
                        "count": "10",
                        "sum": 2.0,
                        "quantileValues": [
                            {"quantile": 0.5, "value": 0.1},
                            {"quantile": 0.99, "value": 0.9},
                        ],
                    }
                ]
            },
        },
    )

    events, rejected = decode_otlp(document, "metrics", "json")

    got = {
        e.payload.name: (e.payload.value, e.payload.labels.get("estimate"))  # type: ignore[union-attr]
        for e in events
        if e.payload.type == "gauge"  # type: ignore[union-attr]
    }
    # Buckets (1,2]:1, (2,4]:2, (4,8]:1. p50: rank 2, half-way up (2,4],
    # which holds half of all values; p95 and p99: rank 4, the top of (4,8].
    # The summary reports no p95, so none is made up.
    assert got == {
        "rpc.duration.mean": (3.5, None),
        "rpc.duration.p50": (3.0, "bucket_bound"),
        "rpc.duration.p95": (8.0, "interpolated"),
        "rpc.duration.p99": (8.0, "interpolated"),
        "queue.wait.mean": (0.2, None),
        "queue.wait.p50": (0.1, "reported"),
        "queue.wait.p99": (0.9, "reported"),
    }
    assert rejected == []


# --- Payloads from the SDK's own OTLP encoder, in both encodings ------------


def otlp_json(message: Message) -> bytes:
    """OTLP/JSON as the specification writes it: canonical JSON, hex ids."""
    document = json_format.MessageToDict(message)
    _ids_to_hex(document)
    return json.dumps(document).encode()


def _ids_to_hex(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _ids_to_hex(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and value:
                node[key] = base64.b64decode(value).hex()
            else:
                _ids_to_hex(value)


def _metrics_json(*metrics: dict[str, Any]) -> bytes:
    resource = {
        "attributes": [{"key": "service.name", "value": {"stringValue": "rpc-api"}}]
    }
    scope = {"scope": {"name": "test"}, "metrics": list(metrics)}
    document = {"resourceMetrics": [{"resource": resource, "scopeMetrics": [scope]}]}
    return json.dumps(document).encode()


def sdk_metrics(service: str, start_ns: int, minutes: int) -> list[MetricsData]:
    """One export per minute: a request counter, a queue gauge, a histogram."""
    resource = Resource.create({"service.name": service, "host.name": "node-1"})
    scope = InstrumentationScope("shop.instrumentation", "1.0")
    exports = []
    for minute in range(1, minutes + 1):
        time_ns = start_ns + minute * 60 * NS
        attributes = {"http.route": "/cart"}
        requests = Sum(
            [NumberDataPoint(attributes, start_ns, time_ns, 10 * minute * minute)],
            AggregationTemporality.CUMULATIVE,
            is_monotonic=True,
        )
        queue = Gauge([NumberDataPoint({}, 0, time_ns, 3.0 + minute)])
        durations = Histogram(
            [
                HistogramDataPoint(
                    attributes,
                    time_ns - 60 * NS,
                    time_ns,
                    count=4,
                    sum=3243.0,
                    bucket_counts=[1, 0, 1, 1, 1],
                    explicit_bounds=[5.0, 25.0, 50.0, 250.0],
                    min=3.0,
                    max=3000.0,
                )
            ],
            AggregationTemporality.DELTA,
        )
        metrics = [
            Metric("http.server.requests", None, "{request}", requests),
            Metric("queue.depth", None, "{item}", queue),
            Metric("http.server.duration", None, "ms", durations),
        ]
        exports.append(
            MetricsData(
                [ResourceMetrics(resource, [ScopeMetrics(scope, metrics, "")], "")]
            )
        )
    return exports


def test_sdk_encoded_metrics_decode_alike_in_proto_and_json() -> None:
    exports = [encode_metrics(m) for m in sdk_metrics("cart-api", TEN, minutes=2)]
    proto, json_ = OtlpDecoder(), OtlpDecoder()

    from_proto = [
        proto.decode(m.SerializeToString(), "metrics", "proto") for m in exports
    ]
    from_json = [json_.decode(otlp_json(m), "metrics", "json") for m in exports]

    assert from_proto == from_json
    events = [e for decoded, rejected in from_proto for e in decoded]
    assert all(rejected == [] for _, rejected in from_proto)
    # The counter reads 10 then 40; its series started with the first export.
    assert _kpis(events, "http.server.requests") == {"10:01": 10 / 60, "10:02": 30 / 60}
    assert _kpis(events, "queue.depth") == {"10:01": 4.0, "10:02": 5.0}
    # Buckets (-inf,5]:1 (25,50]:1 (50,250]:1 (250,+inf):1, max 3000 ms.
    assert _kpis(events, "http.server.duration.p50") == {"10:00": 50.0, "10:01": 50.0}
    assert _kpis(events, "http.server.duration.p99") == {
        "10:00": 3000.0,
        "10:01": 3000.0,
    }
    assert _kpis(events, "http.server.duration.mean") == {
        "10:00": 810.75,
        "10:01": 810.75,
    }
    assert {(e.layer, e.service) for e in events} == {(Layer.API, "cart-api")}


def sdk_spans(base_ns: int) -> list[ReadableSpan]:
    """A web request through shop-api: its database, a provider, a service."""
    exporter = InMemorySpanExporter()
    shop = _tracer(exporter, "shop-api")
    inventory = _tracer(exporter, "inventory")

    server = shop.start_span(
        "GET /cart",
        kind=SpanKind.SERVER,
        start_time=base_ns,
        attributes={"http.route": "/cart", "http.response.status_code": 200},
    )
    context = set_span_in_context(server)
    query = shop.start_span(
        "SELECT orders",
        context=context,
        kind=SpanKind.CLIENT,
        start_time=base_ns + 1_000_000,
        attributes={
            "db.system.name": "postgresql",
            "server.address": "orders-db",
            "db.operation.name": "SELECT",
            "db.collection.name": "orders",
        },
    )
    query.end(end_time=base_ns + 6_000_000)
    payment = shop.start_span(
        "POST",
        context=context,
        kind=SpanKind.CLIENT,
        start_time=base_ns + 7_000_000,
        attributes={
            "server.address": "api.payments.example",
            "http.response.status_code": 502,
        },
    )
    payment.set_status(Status(StatusCode.ERROR))
    payment.end(end_time=base_ns + 87_000_000)
    call = shop.start_span(
        "GET",
        context=context,
        kind=SpanKind.CLIENT,
        start_time=base_ns + 90_000_000,
        attributes={"server.address": "inventory.shop.svc.cluster.local"},
    )
    served = inventory.start_span(
        "GET /stock",
        context=set_span_in_context(call),
        kind=SpanKind.SERVER,
        start_time=base_ns + 91_000_000,
        attributes={"http.route": "/stock", "http.response.status_code": 200},
    )
    served.end(end_time=base_ns + 99_000_000)
    call.end(end_time=base_ns + 100_000_000)
    server.end(end_time=base_ns + 120_000_000)
    return list(exporter.get_finished_spans())


def _tracer(exporter: InMemorySpanExporter, service: str) -> Any:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("shop.instrumentation")


def test_sdk_encoded_spans_become_requests_queries_calls_and_a_call_graph() -> None:
    request = encode_spans(sdk_spans(TEN))
    proto, json_ = OtlpDecoder(), OtlpDecoder()

    from_proto = proto.decode(request.SerializeToString(), "traces", "proto")
    from_json = json_.decode(otlp_json(request), "traces", "json")

    assert from_proto == from_json
    events, rejected = from_proto
    assert rejected == []
    got = sorted(
        (e.layer.value, e.service, e.payload.kind, e.payload.duration_ms)  # type: ignore[union-attr]
        for e in events
    )
    assert got == [
        ("api", "shop-api", "http_request", 120.0),
        ("api", "shop-api->inventory", "http_request", 10.0),
        ("backend", "inventory", "http_request", 8.0),
        ("database", "orders-db", "db_query", 5.0),
        ("third_party", "api.payments.example", "third_party_call", 80.0),
    ]
    [query] = [e for e in events if e.payload.kind == "db_query"]
    assert query.payload.fingerprint == "SELECT orders"  # type: ignore[union-attr]
    [call] = [e for e in events if e.payload.kind == "third_party_call"]
    assert call.payload.status == 502 and call.payload.success is False  # type: ignore[union-attr]
    assert proto.call_graph.calls == {
        ("shop-api", "orders-db"): 1,
        ("shop-api", "api.payments.example"): 1,
        ("shop-api", "inventory"): 2,  # the client span, and the parent link
    }
    topology = proto.call_graph.topology()
    assert topology.dependencies("shop-api") == {
        "orders-db": 1,
        "api.payments.example": 1,
        "inventory": 1,
    }
    assert topology.layers["orders-db"] == Layer.DATABASE


def test_child_span_before_its_parent_still_makes_the_edge() -> None:
    spans = sdk_spans(TEN)
    inventory = [
        s for s in spans if s.resource.attributes["service.name"] == "inventory"
    ]
    shop = [s for s in spans if s.resource.attributes["service.name"] == "shop-api"]
    decoder = OtlpDecoder(OtlpSettings(edge_kpis=False))

    decoder.decode(encode_spans(inventory).SerializeToString(), "traces", "proto")
    decoder.decode(encode_spans(shop).SerializeToString(), "traces", "proto")

    assert decoder.call_graph.calls[("shop-api", "inventory")] == 2


# --- Bad input, placement and configuration --------------------------------


@pytest.mark.parametrize(
    ("data", "signal", "encoding", "reason"),
    [
        (b"\xff\xfe not protobuf", "metrics", "proto", "otlp_decode_error"),
        (b"{not json", "metrics", "json", "json_decode_error"),
        (b"[1, 2]", "traces", "json", "otlp_schema"),
        (b'{"resourceSpans": []}', "metrics", "json", "otlp_wrong_signal"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            "traces",
            "json",
            "otlp_schema",
        ),
        (b"", "traces", "proto", "empty_payload"),
        (
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": '
            b'[{"name": "x", "gauge": {"dataPoints": [{"asDouble": 1}]}}]}]}]}',
            "metrics",
            "json",
            "missing_service",
        ),
    ],
)
def test_unusable_messages_are_refused_whole_with_a_reason(
    data: bytes, signal: Any, encoding: Any, reason: str
) -> None:
    events, [rejection] = decode_otlp(data, signal, encoding)

    assert events == []
    assert (rejection.reason, rejection.scope) == (reason, "message")


def test_a_bad_point_is_refused_while_the_rest_counts() -> None:
    document = _metrics_json(
        {
            "name": "ok.gauge",
            "gauge": {"dataPoints": [{"timeUnixNano": str(TEN), "asDouble": 2.5}]},
        },
        {
            "name": "broken.histogram",
            "histogram": {
                "aggregationTemporality": 1,
                "dataPoints": [
                    {
                        "timeUnixNano": str(TEN),
                        "count": "3",
                        "bucketCounts": ["1", "2"],
                        "explicitBounds": [1.0, 2.0],
                    }
                ],
            },
        },
    )

    [event], [rejection] = decode_otlp(document, "metrics", "json")

    assert event.payload.name == "ok.gauge"  # type: ignore[union-attr]
    assert (rejection.reason, rejection.scope) == ("invalid_point", "excluded")


def test_rules_place_and_exclude_and_hosts_are_infrastructure() -> None:
    settings = OtlpSettings(
        rules=[
            {"match": {"deployment.environment.name": "staging"}, "exclude": True},
            {"match": {"k8s.namespace.name": "payments"}, "layer": "backend"},
        ]
    )
    decoder = OtlpDecoder(settings)

    def place(resource: dict[str, str]) -> list[tuple[str, str]]:
        attributes = [
            {"key": k, "value": {"stringValue": v}} for k, v in resource.items()
        ]
        metric = {
            "name": "system.cpu.utilization",
            "gauge": {"dataPoints": [{"timeUnixNano": str(TEN), "asDouble": 0.5}]},
        }
        scope = {"metrics": [metric]}
        document = {
            "resourceMetrics": [
                {"resource": {"attributes": attributes}, "scopeMetrics": [scope]}
            ]
        }
        events, rejected = decoder.decode(
            json.dumps(document).encode(), "metrics", "json"
        )
        return [(e.layer.value, e.service) for e in events] + [
            (r.reason, "") for r in rejected
        ]

    assert place({"service.name": "pay-api", "k8s.namespace.name": "payments"}) == [
        ("backend", "pay-api")
    ]
    assert place({"host.name": "node-7"}) == [("infrastructure", "node-7")]
    assert place(
        {"service.name": "cart-api", "deployment.environment.name": "staging"}
    ) == [("excluded_by_rule", "")]


def test_bare_otlp_formats_take_their_signal_from_the_topic() -> None:
    settings = Settings(
        kafka={
            "input_topics": ["otlp_metrics", "otlp_spans", "custom"],
            "formats": {
                "otlp_metrics": "otlp_proto",
                "otlp_spans": "otlp_json",
                "custom": "otlp_json",
            },
        }
    )

    assert settings.kafka.formats == {
        "otlp_metrics": "otlp_proto_metrics",
        "otlp_spans": "otlp_json_traces",
        "custom": "otlp_json",
    }
    with pytest.raises(ValidationError, match=r"otlp\.signals"):
        Settings(
            kafka={"input_topics": ["custom"], "formats": {"custom": "otlp_proto"}}
        )


def test_readme_otlp_configuration_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## What Foreshock makes of OTLP") :]
    section = section[: section.index("\n## ", 1)]
    (shown,) = re.findall(r"```toml\n(.*?)```", section, re.DOTALL)
    path = tmp_path / "foreshock.toml"
    path.write_text(shown)

    settings = load_settings(path)

    assert settings.otlp.internal_services == ["inventory"]
    assert [r.exclude for r in settings.otlp.rules] == [True, False]
    assert settings.otlp.rules[1].layer == Layer.API
