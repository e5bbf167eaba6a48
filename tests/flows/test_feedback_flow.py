"""Feedback changes what the flow alerts next time, not what it publishes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from bytewax.testing import TestingSink, run_main

from connectors.iterables import IterableSource
from connectors.messages import RawBatch, RawMessage
from flows.pipeline import FlowConfig, Record, build_flow
from foreshock.feedback import Feedback, Scope
from foreshock.layers import Layer
from foreshock.records import Anomaly, DeadLetter, Incident
from foreshock.windows import WindowSpec

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
CONFIG = FlowConfig(window=WindowSpec(60, 30, T0))
LOCATIONS = ("paris", "ohio", "tokyo", "sydney")
# Every check fails from 09:20 to 09:24 and again from 09:50 to 09:54: a
# success ratio of 0 is past the KPI's objective (0.5), anomalous at once.
OUTAGES = (range(20, 25), range(50, 55))


def _checks(minutes: int = 65) -> list[RawBatch]:
    messages = []
    for minute in range(minutes):
        failing = any(minute in outage for outage in OUTAGES)
        for i, location in enumerate(LOCATIONS):
            doc = {
                "time": (T0 + timedelta(minutes=minute, seconds=10 * i)).isoformat(),
                "layer": "synthetic",
                "service": "checkout-check",
                "payload": {
                    "kind": "synthetic_check",
                    "check": "checkout",
                    "location": location,
                    "success": not failing,
                    "duration_ms": 200.0 + 10 * i,
                },
            }
            value = json.dumps(doc).encode()
            messages.append(RawMessage("checks", 0, len(messages), None, value))
    return [
        RawBatch("checks:0", tuple(messages[i : i + 40])) for i in range(0, 260, 40)
    ]


def _verdict(given_at: datetime) -> Feedback:
    # What `foreshock feedback --anomaly ... --verdict not_anomaly --for 24h`
    # publishes for the first outage's anomaly.
    return Feedback.new(
        "not_anomaly",
        [
            Scope(
                service="checkout-check",
                layer=Layer.SYNTHETIC,
                kpi="check_success_ratio",
            )
        ],
        "alice",
        given_at,
        target_id="anomaly-0920",
        target_kind="anomaly",
        expires_at=given_at + timedelta(hours=24),
        comment="checkout checks fail during the weekly card-network test",
    )


def _run(feedback: list[bytes] | None) -> list[Record]:
    out: list[Record] = []
    said = None
    if feedback is not None:
        messages = tuple(
            RawMessage("feedback", 0, i, None, value)
            for i, value in enumerate(feedback)
        )
        said = IterableSource(lambda: [RawBatch("feedback:0", messages)])
    flow = build_flow(
        IterableSource(lambda: _checks()), TestingSink(out), CONFIG, feedback=said
    )
    run_main(flow)
    return out


def _opened(out: list[Record]) -> list[str]:
    # When each page went out: a repeat within the cool-down reopens the
    # incident it repeats, so its time is that of the record, not `opened_at`.
    return [
        f"{r.updated_at:%H:%M}"
        for r in out
        if isinstance(r, Incident) and r.status == "open"
    ]


def _anomalies(out: list[Record]) -> list[str]:
    return sorted(
        f"{a.window_start:%H:%M}"
        for a in out
        if isinstance(a, Anomaly) and a.kpi == "check_success_ratio"
    )


def test_without_feedback_each_outage_opens_an_incident() -> None:
    out = _run(None)

    assert _opened(out) == ["09:21", "09:51"]


def test_not_anomaly_stops_the_next_identical_outage_from_paging() -> None:
    given_at = T0 + timedelta(minutes=30)
    control = _run(None)

    out = _run([_verdict(given_at).model_dump_json().encode()])

    # The first outage came before the verdict; the second is muted.
    assert _opened(out) == ["09:21"]
    # Its anomalies are still published, exactly as without feedback.
    assert _anomalies(out) == _anomalies(control)
    assert _anomalies(out) == [f"09:{m}" for m in (*range(20, 25), *range(50, 55))]


def test_unusable_feedback_is_a_dead_letter_and_changes_nothing() -> None:
    out = _run([b'{"verdict": "not_anomaly"}', b"not json"])

    dead = [(d.topic, d.offset, d.reason) for d in out if isinstance(d, DeadLetter)]
    assert dead == [
        ("feedback", 0, "feedback_schema"),
        ("feedback", 1, "feedback_schema"),
    ]
    assert _opened(out) == ["09:21", "09:51"]
