"""The native scanner reads what the model reads, and tallies as Python does.

Two references that do not share the scanner's code: the pydantic model
(which events are taken, with which values) and `foreshock.measure.tally`
(what a run of payloads adds to its window).
"""

from __future__ import annotations

import json
import random
from typing import Any

import foreshock_native
import pytest

from foreshock.decode import decode_native
from foreshock.measure import RULES, tally
from foreshock.native import description, scanner_for
from foreshock.schema import Event
from foreshock.windows import WindowSpec, WindowStore
from tests.core.test_native_scan import FAST, SLOW, _doc

FAR = 1 << 62
SPEC = WindowSpec()


def test_the_native_scanner_is_installed() -> None:
    # `make install` builds it; without it the flows are correct but slow,
    # and nothing below would be tested.
    assert scanner_for(WindowStore()) is not None


def _scan(values: list[bytes]) -> tuple[int, list[Any]]:
    """(messages taken, tallies) with no window state to stop the scan."""
    scanner = foreshock_native.Scanner(
        description(), SPEC._align_us, SPEC._slide_us, SPEC._length_us
    )
    stop, _, _, _, _, tallies = scanner.scan(
        values, [None] * len(values), 0, -FAR, False, -FAR, FAR, None, None, None
    )
    return stop, tallies


def test_the_description_covers_every_kind_with_rules() -> None:
    kinds = {k["name"] for k in json.loads(description())["kinds"]}

    assert kinds == set(RULES)


@pytest.mark.parametrize(("data", "t_us"), FAST)
def test_ordinary_events_are_taken_in_their_window(data: bytes, t_us: int) -> None:
    [event], _ = decode_native(data)

    taken, [found] = _scan([data])

    assert taken == 1
    assert found[:5] == (
        SPEC.index_us(t_us),
        SPEC.index_us(t_us),
        "api",
        "checkout",
        "http_request",
    )
    assert found[5:] == _python(event.payload.kind, [event.payload])


NOT_TAKEN = [
    *SLOW,
    _doc(colour="red", schema_version=...),
    b'{"time": "2025-03-04T10:00:00Z", "time": "2025-03-04T10:00:00Z", '
    b'"layer": "api", "service": "a", "payload": {"kind": "heartbeat"}}',
    b'{"time": "2025-03-04T10:00:00Z", "layer": "api", "service": "a", '
    b'"payload": {"kind": "http_request", "status": 200, "status": 201}}',
    b'{"time": "2025-03-04T10:00:00Z", "layer": "api", "service": "a", '
    b'"payload": {"kind": "heartbeat", "kind": "heartbeat"}}',
    _doc() + b" x",
    b"[" + _doc() + b", 7]",
    _doc(attributes={"a": None}),
    _doc(attributes={"a": [1]}),
    _doc(p_status=2**63),
    _doc(p_status=200, p_duration_ms=[1]),
    _doc(payload={"name": "q", "value": 1, "kind": "metric_sample"}),
    _doc(payload={"status": "200", "kind": "http_request"}),
    _doc(payload={"kind": "http_request"}),
    _doc(time=True),
    _doc(time=-5),
    _doc(layer=None),
    _doc(schema_version=1.0),
    _doc(schema_version=True),
    b"null",
    b'"text"',
]


@pytest.mark.parametrize("data", NOT_TAKEN)
def test_unusual_or_refused_events_are_left_to_the_model(data: bytes) -> None:
    assert _scan([data]) == (0, [])


def test_a_message_it_cannot_take_stops_the_scan_there() -> None:
    good, bad = _doc(), _doc(p_status="200")

    taken, tallies = _scan([good, good, bad, good])

    assert taken == 2
    assert [t[5] for t in tallies] == [2]


# Values each field type may take, edges and escapes included.
_FLOATS = [0, -0.0, 1, 12.5, 1e-7, 1e300, -3.2, 123456789012, 0.30000000000000004]
_FLOATS += [5e-324, 2**60, 7.0, 1e15 + 0.3, 99.99999999999999]
_TEXTS = ["", "a", "é", "☃ snow", 'with "quotes"', "tab\there", "x" * 50]


# Every threshold a rule tests a field against, and its neighbours: where
# ">=" and ">" part.
_EDGES: dict[str, list[Any]] = {}
for _rules in RULES.values():
    for _flag in _rules.flags:
        for _name, _op, _at in _flag.tests:
            if _op != "is":
                _EDGES.setdefault(_name, []).extend([_at - 1, _at, _at + 1])


def _value(spec: dict[str, Any], rng: random.Random) -> Any:
    kind = spec["type"]
    if spec.get("nullable") and rng.random() < 0.2:
        return None
    edges = _EDGES.get(spec["name"], [])
    if kind == "float":
        return rng.choice(_FLOATS + edges)
    if kind == "int":
        low, high = spec.get("ge", -1000), spec.get("le", 10_000)
        edges = [e for e in edges if low <= e <= high]
        return rng.choice([low, high, rng.randint(low, high), *edges, *edges])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "str":
        fitting = [t for t in _TEXTS if len(t) >= spec.get("min_length", 0)]
        return rng.choice(fitting)
    if kind in ("literal", "enum"):
        return rng.choice(spec["values"])
    raise AssertionError(f"no values for {spec!r}")


def _payload(kind: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for spec in kind["fields"]:
        if spec["required"] or rng.random() < 0.7:
            payload[spec["name"]] = _value(spec, rng)
    items = list(payload.items())
    rng.shuffle(items)
    # The kind first, last, or between the fields.
    items.insert(rng.randint(0, len(items)), ("kind", kind["name"]))
    return dict(items)


def _python(kind: str, payloads: list[Any]) -> tuple[Any, ...]:
    t = tally(kind, payloads)
    return (t.events, t.counts, t.values, t.rejected, t.versions)


def _exact(found: tuple[Any, ...]) -> tuple[Any, ...]:
    """A tally with every float as its exact bits, so -0.0 is not 0.0."""
    events, counts, values, rejected, versions = found
    bits = {name: [float(v).hex() for v in vs] for name, vs in values.items()}
    return (events, counts, bits, rejected, versions)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", sorted(RULES))
def test_a_run_tallies_as_the_rules_say(kind: str, seed: int) -> None:
    rng = random.Random(f"{kind}-{seed}")
    [spec] = [k for k in json.loads(description())["kinds"] if k["name"] == kind]
    docs = [
        {
            "time": "2025-03-04T10:00:00Z",
            "layer": "backend",
            "service": "svc",
            "payload": _payload(spec, rng),
        }
        for _ in range(rng.randint(1, 40))
    ]
    data = json.dumps(docs, ensure_ascii=rng.random() < 0.5).encode()
    events = [Event.model_validate(d) for d in docs]

    taken, [found] = _scan([data])

    assert taken == 1
    assert _exact(found[5:]) == _exact(_python(kind, [e.payload for e in events]))


NUMBERS = [
    "0.1000000000000000055511151231257827",
    "123456789012345678901234567890",
    "9007199254740993",
    "-0",
    "-0.0",
    "1E5",
    "2.5e-3",
    "4.9406564584124654e-324",
    "1.7976931348623157e308",
]


@pytest.mark.parametrize("number", NUMBERS)
def test_a_number_is_read_as_the_model_reads_it(number: str) -> None:
    data = (
        '{"time": "2025-03-04T10:00:00Z", "layer": "api", "service": "a", '
        '"payload": {"kind": "http_request", "status": 200, '
        f'"duration_ms": {number}}}}}'
    ).encode()
    [event], _ = decode_native(data)

    taken, [found] = _scan([data])

    assert taken == 1
    assert _exact(found[5:]) == _exact(_python("http_request", [event.payload]))


def test_a_number_beyond_the_floats_is_left_to_the_model() -> None:
    data = _doc(p_duration_ms=0).replace(b'"duration_ms": 0', b'"duration_ms": 1e400')

    assert _scan([data]) == (0, [])


# Receive times (ms) whose microseconds, wrapped to 64 bits, would equal the
# event's own time: a scanner that wrapped would find no skew.
WRAPPING = [-9223370295772375558, -4611684277344987654, 2**63 - 1, -(2**63)]


@pytest.mark.parametrize("stamp_ms", WRAPPING)
def test_a_receive_time_at_the_ends_of_64_bits_is_judged_without_wrapping(
    stamp_ms: int,
) -> None:
    scanner = foreshock_native.Scanner(
        description(), SPEC._align_us, SPEC._slide_us, SPEC._length_us
    )

    stop, *_ = scanner.scan(
        [_doc()], [stamp_ms], 0, -FAR, False, -FAR, FAR, 30_000_000, 0, None
    )

    # An event time this far from its receipt is skewed: the model's way.
    assert stop == 0
