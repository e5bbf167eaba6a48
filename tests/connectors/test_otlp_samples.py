"""OTLP metrics as window samples: the same data as events, taken in bulk."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, NumberDataPoint

from connectors.messages import RawBatch, RawMessage
from connectors.otlp import OtlpDecoder
from connectors.otlp.events import MetricPoint
from connectors.otlp.series import CumulativeSeries
from flows.steps import WindowLogic
from foreshock.benchmarks.otlp_decode import requests
from foreshock.decode import decoder_for
from foreshock.layers import Layer
from foreshock.records import DeadLetter, KpiRecord, LateEvent
from foreshock.windows import WindowSpec, WindowStore, sample_of

NS = 1_000_000_000
# 2025-03-04T10:00:00Z in Unix nanoseconds and microseconds.
TEN = 1741082400 * NS
TEN_US = TEN // 1000
T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
NO_VALUE = 1  # DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_FORMAT = "otlp_proto_metrics"
# The monotonic sums of the benchmark's requests.
SUMS = {f"app.requests.{k}" for k in range(4)}


def _pair(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def _request(*metrics: Metric, service: str = "cart-api") -> bytes:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    name = AnyValue(string_value=service)
    resource_metrics.resource.attributes.append(_pair("service.name", name))
    resource_metrics.scope_metrics.add().metrics.extend(metrics)
    return request.SerializeToString()


def _gauge(name: str, *points: NumberDataPoint) -> Metric:
    metric = Metric(name=name, unit="{item}")
    metric.gauge.data_points.extend(points)
    return metric


def _fields(sample: tuple[object, ...]) -> tuple[object, ...]:
    """A sample with its payload as plain values, whatever type carries them."""
    *head, p = sample
    return (*head, p.name, p.type, p.value, p.unit, p.labels)  # type: ignore[attr-defined]


def test_points_become_samples_with_labels_as_text() -> None:
    attributes = [
        _pair("http.response.status_code", AnyValue(int_value=200)),
        _pair("ok", AnyValue(bool_value=True)),
        _pair("ratio", AnyValue(double_value=1.5)),
        _pair("tags", AnyValue(array_value=ArrayValue())),
        _pair("unset", AnyValue()),
    ]
    data = _request(
        _gauge(
            "queue.depth",
            NumberDataPoint(time_unix_nano=TEN, as_int=7, attributes=attributes),
            NumberDataPoint(time_unix_nano=TEN + NS, as_double=-0.0),
            NumberDataPoint(time_unix_nano=TEN, as_double=3.0, flags=NO_VALUE),
            NumberDataPoint(time_unix_nano=0, as_double=1.0),
        ),
        _gauge("x" * 201, NumberDataPoint(time_unix_nano=TEN, as_double=1.0)),
    )

    samples, rejections = OtlpDecoder().scan(data, "metrics", "proto")

    labels = {"http.response.status_code": "200", "ok": "True", "ratio": "1.5"}
    assert samples == [
        (
            TEN_US,
            Layer.API,
            "cart-api",
            "metric_sample",
            MetricPoint("queue.depth", "gauge", 7.0, "{item}", {**labels, "tags": ""}),
        ),
        (
            TEN_US + 1_000_000,
            Layer.API,
            "cart-api",
            "metric_sample",
            MetricPoint("queue.depth", "gauge", -0.0, "{item}", {}),
        ),
    ]
    assert math.copysign(1.0, samples[1][4].value) == -1.0
    assert [(r.reason, r.scope) for r in rejections] == [
        ("missing_time", "excluded"),
        ("schema", "excluded"),
    ]
    assert rejections[1].detail.startswith("name: String should have at most 200")


def test_integer_labels_are_told_apart() -> None:
    def point(code: int) -> NumberDataPoint:
        status = _pair("status", AnyValue(int_value=code))
        return NumberDataPoint(time_unix_nano=TEN, as_int=1, attributes=[status])

    samples, _ = OtlpDecoder().scan(
        _request(_gauge("replies", point(5), point(6), point(5))), "metrics", "proto"
    )

    assert [s[4].labels for s in samples] == [
        {"status": "5"},
        {"status": "6"},
        {"status": "5"},
    ]


def test_samples_are_those_of_the_events() -> None:
    messages = [r.SerializeToString() for r in requests(60)]
    by_samples, by_events = OtlpDecoder(), OtlpDecoder()

    scanned = [by_samples.scan(m, "metrics", "proto") for m in messages]
    decoded = [by_events.decode(m, "metrics", "proto") for m in messages]

    samples = [_fields(s) for found, _ in scanned for s in found]
    from_events = [_fields(sample_of(e)) for events, _ in decoded for e in events]
    assert samples == from_events
    # 60 requests of 20 services, 20 counter points each. A series starts a
    # minute before its first point, so that point counts whole: a 0 then
    # its total. Later points give their total only.
    counters = [s for s in samples if s[5] == "counter" and s[4] in SUMS]
    assert len(counters) == 20 * 20 * 2 + 40 * 20
    assert all(r == [] for _, r in scanned)


def test_one_number_series_follows_the_cumulative_rules() -> None:
    series = CumulativeSeries(new_series_max_age_ns=60 * NS, max_series=10)
    start = TEN - 3600 * NS

    old = series.increase_of("a", start, TEN, 100.0)
    step = series.increase_of("a", start, TEN + 60 * NS, 130.0)
    repeat = series.increase_of("a", start, TEN + 60 * NS, 130.0)
    unreported_reset = series.increase_of("a", start, TEN + 120 * NS, 7.0)
    start_moved_back = series.increase_of("a", TEN - 7200 * NS, TEN + 180 * NS, 9.0)
    restart = series.increase_of("a", TEN + 200 * NS, TEN + 240 * NS, 4.0)
    fresh = series.increase_of("b", TEN - 30 * NS, TEN, 5.0)

    assert (old, step, repeat) == (None, 30.0, None)
    assert (unreported_reset, start_moved_back, restart) == (7.0, None, 4.0)
    assert fresh == 5.0


def _message(offset: int, value: bytes | None) -> RawMessage:
    return RawMessage("otlp_metrics", 0, offset, None, value)


def test_window_step_takes_otlp_samples_and_reports_late_ones() -> None:
    def gauge_at(seconds: int, value: float) -> bytes:
        point = NumberDataPoint(time_unix_nano=TEN + seconds * NS, as_double=value)
        return _request(_gauge("queue.depth", point))

    logic = WindowLogic(
        WindowStore(spec=WindowSpec(60, 0, T0)),
        {"otlp_proto_metrics": decoder_for("otlp_proto_metrics")},
    )
    batch = RawBatch(
        "otlp_metrics:0",
        (
            _message(0, gauge_at(10, 4.0)),
            _message(1, b"\xff\xfe not protobuf"),
            _message(2, None),
            _message(3, gauge_at(130, 6.0)),
            _message(4, gauge_at(20, 100.0)),
        ),
        "otlp_proto_metrics",
    )

    out, _ = logic.on_item(batch)
    closed, _ = logic.on_eof()

    [letter] = [o for o in out if isinstance(o, DeadLetter)]
    [late] = [o for o in out if isinstance(o, LateEvent)]
    assert (letter.reason, letter.offset) == ("otlp_decode_error", 1)
    assert (late.kind, late.service, late.layer, late.offset) == (
        "metric_sample",
        "cart-api",
        Layer.API,
        4,
    )
    assert late.event_time == T0 + timedelta(seconds=20)
    assert (late.window_start, late.lateness_s) == (T0, 110.0)
    depth = {
        r.window_start.strftime("%H:%M"): r.value
        for r in [*out, *closed]
        if isinstance(r, KpiRecord) and r.kpi == "queue.depth" and r.state == "ok"
    }
    assert depth == {"10:00": 4.0, "10:02": 6.0}
    assert logic.tombstones == 1


def _window_step_output(plain: bool) -> list[object]:
    decoder = decoder_for("otlp_proto_metrics")
    # A plain function takes the step's event-by-event path.
    chosen = (lambda data: decoder(data)) if plain else decoder
    step = WindowLogic(WindowStore(spec=WindowSpec(60, 0, T0)), {_FORMAT: chosen})
    messages = [r.SerializeToString() for r in requests(120)]
    out: list[object] = []
    for start in range(0, len(messages), 50):
        batch = [_message(i, m) for i, m in enumerate(messages[start : start + 50])]
        items, _ = step.on_item(RawBatch("otlp_metrics:0", tuple(batch), _FORMAT))
        out += items
    closed, _ = step.on_eof()
    return [*out, *closed]


def test_window_step_gives_the_same_records_from_samples_as_from_events() -> None:
    from_samples = _window_step_output(plain=False)
    from_events = _window_step_output(plain=True)

    assert from_samples == from_events
    # Six exports per service, at 10:01 to 10:06; delta histograms are timed
    # half a minute earlier, so they open 10:00 too. Without lateness, the
    # histograms of 10:01:30 on are late: the counters of their own export,
    # at the next full minute, already closed their window.
    starts = {r.window_start for r in from_samples if isinstance(r, KpiRecord)}
    assert sorted(s.strftime("%H:%M") for s in starts) == [f"10:0{m}" for m in range(7)]
    late = [r for r in from_samples if isinstance(r, LateEvent)]
    assert {r.event_time.strftime("%M:%S") for r in late} == {
        f"0{m}:30" for m in range(1, 6)
    }
