"""Pre-aggregating native events in batches gives event-by-event results."""

import base64
import json
from datetime import UTC, datetime

import pytest

from connectors.messages import RawBatch, RawMessage
from flows.steps import WindowLogic
from foreshock.decode import InputLimits, decode_native
from foreshock.records import DeadLetter, KpiRecord, LateEvent
from foreshock.windows import WindowSpec, WindowStore

SPEC = WindowSpec(60, 30, datetime(2025, 3, 4, tzinfo=UTC))
T0_MS = 1741082400000  # 2025-03-04T10:00:00Z


def _http(time: object, status: int, ms: float, event_id: str | None = None) -> bytes:
    doc: dict[str, object] = {
        "time": time,
        "layer": "api",
        "service": "checkout",
        "payload": {"kind": "http_request", "status": status, "duration_ms": ms},
    }
    if event_id is not None:
        doc["event_id"] = event_id
    return json.dumps(doc).encode()


def _counter(time: str, value: int) -> bytes:
    payload = {
        "kind": "metric_sample",
        "name": "requests_total",
        "type": "counter",
        "value": value,
    }
    doc = {"time": time, "layer": "backend", "service": "cart", "payload": payload}
    return json.dumps(doc).encode()


def _query(time: str, ms: float, error: bool) -> bytes:
    payload = {"kind": "db_query", "duration_ms": ms, "error": error}
    doc = {
        "time": time,
        "layer": "database",
        "service": "orders-db",
        "payload": payload,
    }
    return json.dumps(doc).encode()


# Arrival order, with out-of-order and late events, several time forms, a
# bare NaN (only the slow decoder reads it), a dead letter and a tombstone.
VALUES: list[bytes | None] = [
    _http("2025-03-04T10:00:05.000Z", 200, 100.0),
    _http("2025-03-04T10:00:50.000000+00:00", 500, 300.0),
    _http(T0_MS + 20_000, 200, 200),
    _query("2025-03-04T10:00:30Z", 12.0, False),
    _counter("2025-03-04T10:00:10Z", 1000),
    _http("2025-03-04T11:01:10+01:00", 404, 150.0),
    _counter("2025-03-04T10:01:10Z", 1060),
    _http("2025-03-04T10:00:58.000Z", 200, 120.0),
    _http("2025-03-04T10:01:40.000Z", 200, 130.0),
    _http("2025-03-04T10:00:59.000Z", 200, 90.0, "late-1"),
    b'{"time": "2025-03-04T10:01:20Z", "layer": "frontend", "service": "web", '
    b'"payload": {"kind": "page_view", "ttfb_ms": 50, "load_ms": NaN}}',
    b"{not json",
    None,
    _counter("2025-03-04T10:02:05Z", 1100),
    _query("2025-03-04T10:01:30Z", 20.0, True),
    _http("2025-03-04T10:00:30.000Z", 200, 80.0, "late-2"),
]
MESSAGES = [
    RawMessage("telemetry", 0, offset, b"k", value)
    for offset, value in enumerate(VALUES)
]

Out = KpiRecord | DeadLetter | LateEvent


def _in_batches(size: int) -> list[Out]:
    logic = WindowLogic(WindowStore(SPEC))
    out: list[Out] = []
    for first in range(0, len(MESSAGES), size):
        items, _ = logic.on_item(
            RawBatch("telemetry:0", tuple(MESSAGES[first : first + size]))
        )
        out.extend(items)
    items, _ = logic.on_eof()
    return out + list(items)


def _event_by_event() -> list[KpiRecord]:
    # Each event validated by the pydantic model and added on its own, and
    # windows closed after each: aggregation one event at a time.
    store = WindowStore(SPEC)
    out: list[KpiRecord] = []
    for message in MESSAGES:
        events, _ = decode_native(message.value) if message.value else ([], [])
        for event in events:
            store.add(event)
            out.extend(store.close_ready())
    return out + store.close_all()


def _kpis(out: list[Out]) -> list[KpiRecord]:
    return [r for r in out if isinstance(r, KpiRecord)]


def _value(out: list[Out], service: str, kpi: str, minute: str) -> object:
    [record] = [
        r
        for r in _kpis(out)
        if (r.service, r.kpi, r.window_start.strftime("%H:%M"))
        == (service, kpi, minute)
    ]
    return (record.value, record.state, record.rejected_values)


@pytest.mark.parametrize("size", [1, 3, 16])
def test_batches_give_the_kpi_records_of_event_by_event(size: int) -> None:
    expected = _event_by_event()

    out = _in_batches(size)

    assert _kpis(out) == expected


@pytest.mark.parametrize("size", [1, 3, 16])
def test_batches_keep_late_events_and_dead_letters_in_input_order(size: int) -> None:
    out = _in_batches(size)

    late = [(r.event_id, r.offset) for r in out if isinstance(r, LateEvent)]
    dead = [(r.reason, r.offset) for r in out if isinstance(r, DeadLetter)]
    assert late == [("late-1", 9), ("late-2", 15)]
    assert dead == [("json_decode_error", 11)]


def test_batch_values_match_a_hand_count() -> None:
    out = _in_batches(16)

    # 10:00 holds offsets 0, 1, 2 and 7: statuses 200, 500, 200, 200.
    assert _value(out, "checkout", "requests_per_s", "10:00") == (4 / 60, "ok", 0)
    assert _value(out, "checkout", "availability", "10:00") == (0.75, "ok", 0)
    # Durations 100, 300, 200, 120: the 2nd of 4 is 120.
    assert _value(out, "checkout", "latency_p50_ms", "10:00") == (120.0, "ok", 0)
    # 10:01: 404 (an error, not a server error) and 200.
    assert _value(out, "checkout", "error_rate", "10:01") == (0.5, "ok", 0)
    assert _value(out, "checkout", "availability", "10:01") == (1.0, "ok", 0)
    # The counter's increases: 60 in 10:01, 40 in 10:02.
    assert _value(out, "cart", "requests_total", "10:01") == (1.0, "ok", 0)
    assert _value(out, "cart", "requests_total", "10:02") == (40 / 60, "ok", 0)
    # The page view's NaN load time is rejected; its TTFB counts.
    assert _value(out, "web", "page_load_p75_ms", "10:01") == (None, "no_traffic", 1)
    assert _value(out, "web", "ttfb_p75_ms", "10:01") == (50.0, "ok", 1)
    assert _value(out, "orders-db", "query_error_rate", "10:01") == (1.0, "ok", 0)


def _array(values: list[bytes | None]) -> bytes:
    return b"[" + b",".join(v for v in values if v is not None) + b"]"


# The same events as exporters that batch would send them: several events a
# message (one batch holds the bare NaN, so it takes the slow decoder).
PACKED: list[bytes | None] = [
    _array(VALUES[0:4]),
    _array(VALUES[4:7]),
    _array(VALUES[7:11]),
    VALUES[11],
    VALUES[12],
    _array(VALUES[13:16]),
]


def test_batch_messages_give_the_kpi_records_of_single_events() -> None:
    messages = [
        RawMessage("telemetry", 0, offset, b"k", value)
        for offset, value in enumerate(PACKED)
    ]
    logic = WindowLogic(WindowStore(SPEC))

    out = list(logic.on_item(RawBatch("telemetry:0", tuple(messages)))[0])
    out += list(logic.on_eof()[0])

    assert _kpis(out) == _event_by_event()
    late = [(r.event_id, r.offset) for r in out if isinstance(r, LateEvent)]
    assert late == [("late-1", 2), ("late-2", 5)]
    dead = [(r.reason, r.offset) for r in out if isinstance(r, DeadLetter)]
    assert dead == [("json_decode_error", 3)]


def test_one_bad_event_of_a_batch_is_a_dead_letter_alone() -> None:
    bad = json.loads(_http("2025-03-04T10:00:07Z", 200, 5.0))
    bad["layer"] = "nowhere"
    value = _array(
        [
            _http("2025-03-04T10:00:05Z", 200, 100.0),
            json.dumps(bad).encode(),
            _http("2025-03-04T10:00:10Z", 500, 300.0),
        ]
    )
    logic = WindowLogic(WindowStore(SPEC))

    message = RawMessage("telemetry", 0, 7, b"k", value)
    out = list(logic.on_item(RawBatch("telemetry:0", (message,)))[0])
    out += list(logic.on_eof()[0])

    [letter] = [r for r in out if isinstance(r, DeadLetter)]
    assert (letter.reason, letter.offset) == ("schema", 7)
    assert letter.detail.startswith("event 2 of a batch of 3: layer")
    assert json.loads(base64.b64decode(letter.value_b64 or "")) == bad
    # The other two count: one request of two failed.
    assert _value(out, "checkout", "requests_per_s", "10:00") == (2 / 60, "ok", 0)
    assert _value(out, "checkout", "availability", "10:00") == (0.5, "ok", 0)


def test_an_event_of_a_batch_from_a_skewed_clock_is_quarantined_alone() -> None:
    value = _array(
        [
            _http("2025-03-04T10:00:05Z", 200, 100.0, "ok-1"),
            _http("2025-03-04T11:00:05Z", 200, 100.0, "ahead"),
            _http("2025-03-04T10:00:10Z", 200, 300.0, "ok-2"),
        ]
    )
    # Received at 10:00:20: the second event is an hour ahead of it.
    message = RawMessage("telemetry", 0, 3, b"k", value, T0_MS + 20_000)
    logic = WindowLogic(WindowStore(SPEC), limits=InputLimits(max_ahead_s=600))

    out = list(logic.on_item(RawBatch("telemetry:0", (message,)))[0])
    out += list(logic.on_eof()[0])

    held = [(r.event_id, r.reason) for r in out if isinstance(r, LateEvent)]
    assert held == [("ahead", "clock_skew")]
    assert _value(out, "checkout", "requests_per_s", "10:00") == (2 / 60, "ok", 0)
    # Durations 100 and 300: the nearest-rank median is 100.
    assert _value(out, "checkout", "latency_p50_ms", "10:00") == (100.0, "ok", 0)
