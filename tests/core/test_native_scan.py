"""The fast native decoder takes what the model takes, with the same values."""

import json
from datetime import UTC, datetime

import pytest

from foreshock.decode import decode_native
from foreshock.layers import Layer
from foreshock.native_scan import scan_native
from foreshock.windows import sample_of

T0_US = 1741082400 * 1_000_000  # 2025-03-04T10:00:00Z


def _doc(**changes: object) -> bytes:
    doc: dict[str, object] = {
        "schema_version": 1,
        "time": "2025-03-04T10:00:00.250Z",
        "layer": "api",
        "service": "checkout",
        "event_id": "e-1",
        "attributes": {"region": "eu", "canary": False, "replicas": 3},
        "payload": {"kind": "http_request", "status": 200, "duration_ms": 12},
    }
    for key, value in changes.items():
        if key.startswith("p_"):
            doc["payload"][key[2:]] = value  # type: ignore[index]
        elif value is ...:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc).encode()


FAST = [
    (_doc(), T0_US + 250_000),
    (_doc(time="2025-03-04T11:00:00.25+01:00"), T0_US + 250_000),
    (_doc(time="2025-03-04T09:00:00.000250-01:00"), T0_US + 250),
    (_doc(time=1741082400), T0_US),
    (_doc(time=1741082400123), T0_US + 123_000),
    (_doc(p_route="/cart", p_method=None, p_duration_ms=None), T0_US + 250_000),
    (_doc(event_id=..., attributes=..., schema_version=...), T0_US + 250_000),
]


@pytest.mark.parametrize(("data", "t_us"), FAST)
def test_ordinary_events_take_the_fast_path_with_the_models_values(
    data: bytes, t_us: int
) -> None:
    [event], _ = decode_native(data)

    scanned = scan_native(data)

    assert scanned is not None
    [sample] = scanned
    assert sample[:4] == (t_us, Layer.API, "checkout", "http_request")
    assert sample_of(event)[:4] == sample[:4]
    for name in type(event.payload).model_fields:
        if name == "kind":
            continue
        ours, theirs = getattr(sample[4], name), getattr(event.payload, name)
        assert (ours, type(ours)) == (theirs, type(theirs)), name


SLOW = [
    # The model takes these (lax forms); the fast path leaves them to it.
    _doc(p_status="200"),
    _doc(p_status=200.0),
    _doc(time="2025-03-04T10:00:00+0100"),
    _doc(time="2025-03-04T10:00:00z"),
    _doc(time="2025-03-04 10:00:00Z"),
    _doc(time="2025-03-04T10:00:00.1234567Z"),
    _doc(time=1741082400.5),
    _doc(p_duration_ms="12.5"),
    # The model refuses these; the slow path gives the reason.
    _doc(p_status=700),
    _doc(p_status=True),
    _doc(p_duration_ms=True),
    _doc(p_colour="red"),
    _doc(colour="red"),
    _doc(schema_version=2),
    _doc(layer="nowhere"),
    _doc(service=""),
    _doc(service="x" * 201),
    _doc(event_id="x" * 201),
    _doc(attributes={"nested": {"a": 1}}),
    _doc(time=...),
    _doc(time="2025-02-30T10:00:00Z"),
    _doc(time="2025-03-04T24:00:00Z"),
    _doc(time="2025-03-04T10:00:00+24:00"),
    _doc(payload={"kind": "teleport"}),
    _doc(payload={"status": 200}),
    b'{"time": 1741082400, "layer": "api", "service": "a", '
    b'"payload": {"kind": "http_request", "status": 200, "duration_ms": NaN}}',
    b"{not json",
    b"[]",
    b"\xff\xfe",
]


@pytest.mark.parametrize("data", SLOW)
def test_unusual_events_go_to_the_model(data: bytes) -> None:
    assert scan_native(data) is None


def test_a_counter_sample_keeps_its_labels_and_value() -> None:
    data = json.dumps(
        {
            "time": "2025-03-04T10:00:00Z",
            "layer": "backend",
            "service": "cart",
            "payload": {
                "kind": "metric_sample",
                "name": "requests_total",
                "type": "counter",
                "value": 5,
                "labels": {"route": "/cart"},
            },
        }
    ).encode()

    scanned = scan_native(data)

    assert scanned is not None
    [sample] = scanned
    payload = sample[4]
    assert (payload.type, payload.value, payload.labels) == (
        "counter",
        5.0,
        {"route": "/cart"},
    )
    assert type(payload.value) is float
    assert datetime.fromtimestamp(sample[0] / 1e6, UTC) == datetime(
        2025, 3, 4, 10, tzinfo=UTC
    )


def test_a_batch_gives_the_samples_of_its_events_in_order() -> None:
    first = _doc(time="2025-03-04T10:00:00.250Z")
    second = _doc(time=1741082400123)

    scanned = scan_native(b"[" + first + b"," + second + b"]")

    assert scanned is not None
    assert [s[0] for s in scanned] == [T0_US + 250_000, T0_US + 123_000]


@pytest.mark.parametrize("bad", [_doc(p_status="200"), b'{"time": 1}', b"7"])
def test_a_batch_with_one_unusual_event_goes_to_the_model_whole(bad: bytes) -> None:
    assert scan_native(b"[" + _doc() + b"," + bad + b"]") is None
