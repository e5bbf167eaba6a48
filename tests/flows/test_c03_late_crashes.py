"""Mobile crashes uploaded hours late restate their window (shared case C03).

An iOS app of version 5.2.0 crashes twice around 02:00; the reports are
uploaded at the next launch, at 08:04:31 and 08:12:09, when 5.3.0 is live.
Each hour has 40 launches (5.2.0 until 06:59, 5.3.0 from 07:00). Counted by
crash time and crash-time version, as the case's expected values say:
02:00|5.2.0 = 2/40, 05:00|5.2.0 = 1/40, 07:00|5.3.0 = 0/40, 08:00|5.3.0 =
1/40. Counted by upload time, 08:00|5.3.0 would read 3/40, a crash spike of
the new release that never happened.
"""

import json
from datetime import UTC, datetime, timedelta

from bytewax.testing import TestingSink, run_main

from connectors.iterables import IterableSource
from connectors.messages import RawMessage
from flows.pipeline import FlowConfig, Record, build_flow
from foreshock.records import (
    Anomaly,
    EarlyWarning,
    Incident,
    KpiRecord,
    KpiScore,
    LateEvent,
)
from foreshock.schema import Event
from foreshock.windows import WindowSpec, WindowStore
from tests.cases import batches, events, native

DAY = datetime(2025, 3, 4, tzinfo=UTC)
HOURLY = WindowSpec(3600, 60, DAY)


def _hour(h: int) -> datetime:
    return DAY + timedelta(hours=h)


def _received_ms(case: dict[str, str]) -> int:
    at = datetime.fromisoformat(case["received_at"])
    return int(at.timestamp() * 1000)


def _uploads() -> list[RawMessage]:
    """The case as Kafka gets it: in upload order, stamped with upload time."""
    cases = sorted(events("C03"), key=lambda c: c["received_at"])
    return [
        RawMessage(
            "telemetry",
            0,
            offset,
            case["service"].encode(),
            json.dumps(native(case)).encode(),
            timestamp_ms=_received_ms(case),
        )
        for offset, case in enumerate(cases)
    ]


def _run() -> list[Record]:
    out: list[Record] = []
    source = IterableSource(lambda: batches(_uploads(), 1))
    flow = build_flow(source, TestingSink(out), FlowConfig(window=HOURLY))
    run_main(flow)  # type: ignore[no-untyped-call]
    return out


def _crash_rates(records: list[KpiRecord]) -> dict[str, float]:
    """The last value of each version's crash rate, by `HH:MM|version`."""
    rates = {}
    for r in records:
        if r.kpi.startswith("crash_rate@") and r.value is not None:
            version = r.kpi.partition("@")[2]
            rates[f"{r.window_start:%H:%M}|{version}"] = r.value
    return rates


def test_late_crashes_count_by_crash_time_and_version() -> None:
    out = _run()
    scores = [s for s in out if isinstance(s, KpiScore)]
    records = [s.kpi for s in scores]

    # Every other hour of 5.2.0 had its 40 launches and no crash.
    quiet = {f"{h:02}:00|5.2.0": 0.0 for h in (0, 1, 3, 4, 6)}
    assert _crash_rates(records) == quiet | {
        "02:00|5.2.0": 2 / 40,
        "05:00|5.2.0": 1 / 40,
        "07:00|5.3.0": 0 / 40,
        "08:00|5.3.0": 1 / 40,
    }


def test_the_crash_window_is_published_then_restated_twice() -> None:
    out = _run()
    scores = [s for s in out if isinstance(s, KpiScore)]

    two_am = [
        (s.kpi.value, s.kpi.restated)
        for s in scores
        if s.kpi.kpi == "crash_rate@5.2.0" and s.kpi.window_start == _hour(2)
    ]
    assert two_am == [(0.0, False), (1 / 40, True), (2 / 40, True)]
    # The overall crash rate is judged when the window first closes; its
    # restatements are passed on unjudged, so the detector learns it once.
    overall = [
        (s.kpi.value, s.kpi.restated, s.detector_state, s.anomalous)
        for s in scores
        if s.kpi.kpi == "crash_rate" and s.kpi.window_start == _hour(2)
    ]
    assert overall == [
        (0.0, False, "warming_up", False),
        (1 / 40, True, "skipped", False),
        (2 / 40, True, "skipped", False),
    ]


def test_nothing_is_charged_to_the_new_release_or_paged() -> None:
    out = _run()
    records = [s.kpi for s in out if isinstance(s, KpiScore)]

    eight_am = {
        (r.kpi, r.value, r.restated)
        for r in records
        if r.window_start == _hour(8) and r.kpi.startswith("crash_rate")
    }
    # 5.2.0 had no launch at 08:00: its crash rate there has no traffic.
    assert eight_am == {
        ("crash_rate", 1 / 40, False),
        ("crash_rate@5.3.0", 1 / 40, False),
        ("crash_rate@5.2.0", None, False),
    }
    assert [r for r in out if isinstance(r, LateEvent)] == []
    pages = (Incident, EarlyWarning, Anomaly)
    assert [r for r in out if isinstance(r, pages)] == []


def test_each_upload_restates_the_window_when_it_arrives() -> None:
    store = WindowStore(spec=HOURLY)
    restated: list[tuple[datetime, float | None]] = []
    for message in _uploads():
        assert message.value is not None and message.timestamp_ms is not None
        store.received_us = message.timestamp_ms * 1000
        assert store.add(Event.model_validate_json(message.value)) is None
        restated += [
            (datetime.fromtimestamp(message.timestamp_ms / 1000, UTC), r.value)
            for r in store.close_ready()
            if r.restated and r.kpi == "crash_rate@5.2.0"
        ]

    assert restated == [
        (datetime(2025, 3, 4, 8, 4, 31, tzinfo=UTC), 1 / 40),
        (datetime(2025, 3, 4, 8, 12, 9, tzinfo=UTC), 2 / 40),
    ]
