import json
from datetime import UTC, datetime, timedelta

import pytest
from bytewax.testing import TestingSink, run_main

from connectors.iterables import IterableSource
from connectors.messages import RawMessage
from flows.pipeline import FlowConfig, Record, build_flow
from foreshock.records import Anomaly, DeadLetter, KpiScore, LateEvent
from foreshock.windows import WindowSpec
from tests.cases import batches, event_messages, kafka_records

CONFIG = FlowConfig(window=WindowSpec(60, 30, datetime(2025, 3, 4, tzinfo=UTC)))


def _run(messages: list[RawMessage], batch_size: int = 7) -> list[Record]:
    out: list[Record] = []
    source = IterableSource(lambda: batches(messages, batch_size))
    run_main(build_flow(source, TestingSink(out), CONFIG))
    return out


def _kpi(out: list[Record], kpi: str) -> dict[str, float | None]:
    return {
        r.kpi.window_start.strftime("%H:%M"): r.kpi.value
        for r in out
        if isinstance(r, KpiScore) and r.kpi.kpi == kpi
    }


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_late_events_are_routed_apart_case_c01(batch_size: int) -> None:
    out = _run(event_messages("C01"), batch_size)

    per_minute = {k: round(v * 60) for k, v in _kpi(out, "requests_per_s").items()}
    late = [r.event_id for r in out if isinstance(r, LateEvent)]

    assert per_minute == {"10:00": 21, "10:01": 20, "10:02": 12, "10:03": 3}
    assert _kpi(out, "error_rate")["10:00"] == pytest.approx(1 / 21)
    assert late == ["c01-0052", "c01-0053", "c01-0054"]


def test_poison_messages_go_to_dead_letters_case_c06() -> None:
    records = kafka_records("C06")

    out = _run(records)

    dead = {r.offset: r.reason for r in out if isinstance(r, DeadLetter)}
    assert dead == {
        101: "json_decode_error",
        102: "json_decode_error",
        103: "empty_payload",
        105: "schema",
        106: "schema",
        108: "schema",
    }
    # 100, 104 (epoch-millis time), 107 and 109 are counted in 10:00.
    assert _kpi(out, "requests_per_s") == {"10:00": pytest.approx(4 / 60)}
    letter = next(r for r in out if isinstance(r, DeadLetter) and r.offset == 102)
    original = next(r for r in records if r.offset == 102)
    assert DeadLetter.encode(original.value) == letter.value_b64


def test_tombstones_and_null_values_case_c07() -> None:
    out = _run(kafka_records("C07"))

    dead = {r.offset: (r.reason, r.detail) for r in out if isinstance(r, DeadLetter)}
    assert sorted(dead) == [3, 4]
    assert "Input should be an object" in dead[3][1]
    assert "time: Field required" in dead[4][1]
    # Offsets 0, 2 (null key) and 5; the tombstone at 1 counts nothing.
    assert _kpi(out, "requests_per_s") == {"10:00": pytest.approx(3 / 60)}
    assert _kpi(out, "latency_p50_ms") == {"10:00": 120.0}


def test_a_latency_spike_after_a_steady_hour_is_an_anomaly() -> None:
    t0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
    messages = []
    for minute in range(90):
        slow = minute >= 85
        for i in range(20):
            ms = (1000.0 if slow else 100.0) + (i % 5) * 3 + minute % 3
            doc = {
                "time": (t0 + timedelta(minutes=minute, seconds=3 * i)).isoformat(),
                "layer": "api",
                "service": "api-a",
                "payload": {"kind": "http_request", "status": 200, "duration_ms": ms},
            }
            messages.append(
                RawMessage("t", 0, len(messages), b"api-a", json.dumps(doc).encode())
            )

    out = _run(messages, 100)

    flagged = sorted(
        (a.kpi, a.window_start.strftime("%H:%M"))
        for a in out
        if isinstance(a, Anomaly) and a.kpi == "latency_p50_ms"
    )
    assert ("latency_p50_ms", "10:25") in flagged
    assert all(minute >= "10:25" for _, minute in flagged)
