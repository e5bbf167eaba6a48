"""Hostile input stays bounded: huge or deep messages and floods of new names
become dead letters with their reason, and memory stops growing at the caps."""

import hashlib
import json
import logging
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from connectors.messages import RawBatch, RawMessage
from flows.steps import WindowLogic
from foreshock import telemetry
from foreshock.config import Settings
from foreshock.decode import InputLimits, decoder_for
from foreshock.jobs import flow_config
from foreshock.records import DeadLetter, KpiRecord, LateEvent
from foreshock.windows import WindowPolicy, WindowSpec, WindowStore

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
SPEC = WindowSpec(60, 30, datetime(2025, 3, 4, tzinfo=UTC))
Item = KpiRecord | DeadLetter | LateEvent


def _doc(service: str, payload: dict[str, object], seconds: float = 0) -> bytes:
    doc = {
        "time": (T0 + timedelta(seconds=seconds)).isoformat(),
        "layer": "backend",
        "service": service,
        "payload": payload,
    }
    return json.dumps(doc).encode()


def _request(service: str = "orders", seconds: float = 0) -> bytes:
    payload = {"kind": "http_request", "status": 200, "duration_ms": 20.0}
    return _doc(service, payload, seconds)


def _gauge(service: str, name: str, seconds: float = 0) -> bytes:
    return _doc(service, {"kind": "metric_sample", "name": name, "value": 1.0}, seconds)


def _counter(service: str, labels: dict[str, str], value: float) -> bytes:
    payload = {
        "kind": "metric_sample",
        "name": "requests_total",
        "type": "counter",
        "value": value,
        "labels": labels,
    }
    return _doc(service, payload)


def _run(
    values: list[bytes | None],
    *,
    limits: InputLimits | None = None,
    policy: WindowPolicy | None = None,
    batch_format: str = "native",
) -> tuple[list[Item], WindowLogic]:
    decoders = {
        "native": decoder_for("native"),
        batch_format: decoder_for(batch_format),
    }
    store = WindowStore(SPEC, policy=policy or WindowPolicy())
    logic = WindowLogic(store, decoders, limits=limits, clock=lambda: 0)
    messages = tuple(
        RawMessage("telemetry", 0, offset, None, value)
        for offset, value in enumerate(values)
    )
    out = list(logic.on_item(RawBatch("telemetry:0", messages, batch_format))[0])
    return out + list(logic.on_eof()[0]), logic


def _letters(out: list[Item]) -> list[tuple[int, str]]:
    return [(x.offset, x.reason) for x in out if isinstance(x, DeadLetter)]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "foreshock.windows"]


def _events_counted(out: list[Item]) -> int:
    return sum(
        x.events for x in out if isinstance(x, KpiRecord) and x.kpi == "requests_per_s"
    )


# --- size and depth ---------------------------------------------------------------


def test_a_message_beyond_the_size_bound_is_a_dead_letter_before_parsing() -> None:
    big = _request() + b" " * 600  # valid JSON, but 600 bytes of padding
    values: list[bytes | None] = [_request(), big, _request(), b"{" * 5000, _request()]

    out, _ = _run(values, limits=InputLimits(max_message_bytes=500))

    assert _letters(out) == [(1, "too_large"), (3, "too_large")]
    assert _events_counted(out) == 3
    letter = next(x for x in out if isinstance(x, DeadLetter))
    assert letter.value_b64 == DeadLetter.encode(big)


@pytest.mark.parametrize("batch_format", ["rum", "otlp_json_metrics"])
def test_the_size_bound_holds_for_every_format(batch_format: str) -> None:
    out, _ = _run(
        [b"x" * 501, b"x" * 500],
        limits=InputLimits(max_message_bytes=500),
        batch_format=batch_format,
    )

    letters = _letters(out)
    assert letters[0] == (0, "too_large")
    assert all(reason != "too_large" for _, reason in letters[1:])


def test_deeply_nested_json_is_a_dead_letter_not_a_crash() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    # Deeper than the model's parser goes, and than Python's would recurse.
    deep_object = b'{"a": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    values: list[bytes | None] = [_request(), deep, deep_object, _request()]

    out, _ = _run(values, limits=InputLimits(max_message_bytes=None))

    assert _letters(out) == [(1, "too_deep"), (2, "too_deep")]
    assert _events_counted(out) == 2


def test_a_batch_keeps_its_good_events_and_refuses_the_rest_one_by_one() -> None:
    batch = b"[" + _request() + b', 1, "x", ' + _request(seconds=1) + b"]"
    values: list[bytes | None] = [b"[]", batch, b" [ ]"]

    out, _ = _run(values)

    assert _letters(out) == [
        (0, "empty_payload"),
        (1, "schema"),
        (1, "schema"),
        (2, "empty_payload"),
    ]
    refused = [x.value_b64 for x in out if isinstance(x, DeadLetter)][1:3]
    assert refused == [DeadLetter.encode(b"1"), DeadLetter.encode(b'"x"')]
    assert _events_counted(out) == 2


# --- caps on services and series ------------------------------------------------------


def test_series_beyond_the_per_service_cap_are_dead_letters_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Ten gauge names and ten label sets of one counter from "orders": the
    # cap keeps the first three series; "billing" has its own three.
    values: list[bytes | None] = [_gauge("orders", f"queue_{i}") for i in range(10)]
    values += [_counter("orders", {"pod": f"p{i}"}, 100.0) for i in range(10)]
    values += [_gauge("billing", f"queue_{i}") for i in range(3)]
    policy = WindowPolicy(max_series_per_service=3)

    with caplog.at_level(logging.WARNING, logger="foreshock.windows"):
        out, _ = _run(values, policy=policy)

    assert _letters(out) == [(i, "series_cap") for i in range(3, 20)]
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    # Each dead letter is counted, not warned about again.
    loud = [r.name for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == ["foreshock.windows"]
    assert "'orders'" in warnings[0].getMessage()
    kpis = {(x.service, x.kpi) for x in out if isinstance(x, KpiRecord)}
    assert {k for s, k in kpis if k.startswith("queue_")} == {
        "queue_0",
        "queue_1",
        "queue_2",
    }


def test_services_beyond_the_global_cap_are_dead_letters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Twelve services, each sending twice; only the first five are kept.
    values: list[bytes | None] = [
        _request(f"svc-{i}", seconds) for seconds in (0, 10) for i in range(12)
    ]
    policy = WindowPolicy(max_services=5)

    with caplog.at_level(logging.WARNING, logger="foreshock.windows"):
        out, _ = _run(values, policy=policy)

    letters = _letters(out)
    assert letters == [(o, "series_cap") for o in (*range(5, 12), *range(17, 24))]
    assert _events_counted(out) == 10
    warned = Counter(r.getMessage().split("'")[1] for r in _warnings(caplog))
    assert warned == Counter({f"svc-{i}": 1 for i in range(5, 12)})


def test_memory_stops_growing_at_the_caps(caplog: pytest.LogCaptureFixture) -> None:
    # 3,000 new services with 20 series each against caps of 50 and 10.
    values: list[bytes | None] = [
        _gauge(f"svc-{i % 3000}", f"m{i // 3000}") for i in range(60_000)
    ]
    policy = WindowPolicy(max_services=50, max_series_per_service=10)

    with caplog.at_level(logging.WARNING, logger="foreshock.windows"):
        out, logic = _run(values, policy=policy)

    store = logic.store
    assert len(store._series) == 50
    assert {len(series) for series in store._series.values()} == {10}
    assert len(_letters(out)) == 60_000 - 50 * 10
    # A warning for each of the first 1,000 refused services, then one that
    # says the rest are only counted.
    assert len(_warnings(caplog)) == 1001
    assert len(store._warned) == 1001


def test_a_forgotten_service_frees_its_place_under_the_cap() -> None:
    # Room for two services. "old" sends once at 10:00 and "steady" every
    # minute; "new" is refused at 10:01. Closing window 10:03 (at 10:04, no
    # lateness) forgets "old", silent for more than two windows, and "new"
    # gets its place.
    store = WindowStore(
        WindowSpec(60, 0, T0), forget_after=2, policy=WindowPolicy(max_services=2)
    )
    logic = WindowLogic(store, clock=lambda: 0)

    def send(service: str, minute: int) -> list[Item]:
        message = RawMessage("t", 0, minute, None, _request(service, 60 * minute))
        return list(logic.on_item(RawBatch("t:0", (message,)))[0])

    send("old", 0)
    send("steady", 0)
    refused = send("new", 1)
    for minute in range(1, 5):
        send("steady", minute)
    later = send("new", 4)

    assert [x.reason for x in refused if isinstance(x, DeadLetter)] == ["series_cap"]
    assert [x for x in later if isinstance(x, DeadLetter)] == []
    assert set(store._series) == {("backend", "steady"), ("backend", "new")}


# --- bounded letters and log lines ----------------------------------------------


def test_a_letter_keeps_the_first_bytes_of_a_big_message_and_its_size_and_hash() -> (
    None
):
    big = b"x" * 1000
    small = b"y" * 10

    out, _ = _run([big, small], limits=InputLimits(dead_letter_bytes=100))

    cut, whole = [x for x in out if isinstance(x, DeadLetter)]
    assert (cut.truncated, cut.value_bytes) == (True, 1000)
    assert cut.value_b64 == DeadLetter.encode(b"x" * 100)
    assert cut.value_sha256 == hashlib.sha256(big).hexdigest()
    # A letter within the bound reads as before: no new fields in its JSON.
    assert json.loads(whole.model_dump_json()) == {
        "schema_version": 1,
        "reason": "json_decode_error",
        "detail": whole.detail,
        "topic": "telemetry",
        "partition": 0,
        "offset": 1,
        "key": None,
        "value_b64": DeadLetter.encode(small),
        "timestamp_ms": None,
    }


def test_a_key_that_is_not_text_is_kept_exactly_beside_its_text() -> None:
    store = WindowStore(SPEC, policy=WindowPolicy())
    logic = WindowLogic(store, {"native": decoder_for("native")}, clock=lambda: 0)
    keys = [b"\xff\xfeab", "café".encode()]
    messages = tuple(
        RawMessage("telemetry", 0, offset, key, b"{not json")
        for offset, key in enumerate(keys)
    )

    out = logic.on_item(RawBatch("telemetry:0", messages))[0]

    binary, text = [x for x in out if isinstance(x, DeadLetter)]
    # 0xFF 0xFE 0x61 0x62 in base64, and two replacement characters as text.
    assert (binary.key, binary.key_b64) == ("\ufffd\ufffdab", "//5hYg==")
    assert (text.key, text.key_b64) == ("café", None)
    assert "key_b64" not in json.loads(text.model_dump_json())


def test_a_message_of_many_bad_events_gives_a_bounded_number_of_letters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flood = b"[" + b",".join([b"{}"] * 100_000) + b"]"
    letters_before = telemetry.total("foreshock_dead_letters")

    with caplog.at_level(logging.DEBUG, logger="flows.steps"):
        out, _ = _run([_request(), flood, _request()])

    letters = [x for x in out if isinstance(x, DeadLetter)]
    assert [x.reason for x in letters] == ["schema"] * 100 + ["too_many_refused"]
    assert all(x.value_b64 == DeadLetter.encode(b"{}") for x in letters[:100])
    rest = letters[-1]
    counts = re.fullmatch(
        r"(\d+) events of the message were refused: the first (\d+) have dead "
        r"letters of their own, the other (\d+) \(schema=(\d+)\) .*",
        rest.detail,
    )
    assert counts is not None, rest.detail
    assert [int(n) for n in counts.groups()] == [100_000, 100, 99_900, 99_900]
    assert rest.value_b64 == DeadLetter.encode(flood[: DeadLetter.VALUE_BYTES])
    assert rest.value_bytes == len(flood)
    assert _events_counted(out) == 2
    # Every letter is counted; five are logged, then one line for the rest.
    assert telemetry.total("foreshock_dead_letters") - letters_before == 101
    lines = [r.getMessage() for r in caplog.records if r.name == "flows.steps"]
    assert len(lines) == 6
    assert lines[-1].endswith("count=96 reasons={'schema': 95, 'too_many_refused': 1}")


def test_capped_services_log_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 3,000 new services against a cap of 10: 2,990 refused, each a letter.
    values: list[bytes | None] = [_request(f"svc-{i}") for i in range(3000)]
    policy = WindowPolicy(max_services=10)

    with caplog.at_level(logging.DEBUG):
        out, _ = _run(values, policy=policy)

    assert len(_letters(out)) == 2990
    letters = [r for r in caplog.records if r.name == "flows.steps"]
    # Five lines for the first letters, at DEBUG (the store warned for
    # their services), and one for the rest.
    assert [r.levelno for r in letters] == [logging.DEBUG] * 6
    assert letters[-1].getMessage().endswith("count=2985 reasons={'series_cap': 2985}")
    assert len(_warnings(caplog)) == 1001


def test_late_events_log_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The second event moves the watermark ten minutes on: the 200 after it
    # belong to a window that has closed.
    values: list[bytes | None] = [_request(), _request(seconds=600)]
    values += [_request(seconds=1)] * 200

    with caplog.at_level(logging.WARNING, logger="flows.steps"):
        out, _ = _run(values)

    assert sum(isinstance(x, LateEvent) for x in out) == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "flows.steps"]
    assert len(lines) == 6
    assert lines[-1].endswith("count=195 reasons={'late': 195}")


@pytest.mark.parametrize(("setting", "bound"), [(100, 100), (0, None)])
def test_the_letter_bound_is_a_setting(setting: int, bound: int | None) -> None:
    settings = Settings(kafka={"dead_letter_bytes": setting})

    limits = flow_config(settings).input_limits

    assert limits.dead_letter_bytes == bound
