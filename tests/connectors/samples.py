"""Hand-written output records: one small incident story at 10:00 UTC.

The database `orders-db` slows down at 10:00; the early warning goes out at
10:03; web users feel it from 10:05; the incident opens at 10:07 and resolves
at 10:40. Lead time: 10:05 - 10:00 = 300 s.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from foreshock.layers import Layer
from foreshock.records import (
    Anomaly,
    Candidate,
    DeadLetter,
    EarlyWarning,
    Evidence,
    Incident,
    LateEvent,
)

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


ANOMALY = Anomaly(
    id="anomaly-1",
    layer=Layer.DATABASE,
    service="orders-db",
    kpi="latency_p95_ms",
    dimension="speed",
    direction="up",
    window_start=at(2),
    window_end=at(3),
    value=840.0,
    expected=120.0,
    score=0.93,
    detector="ensemble",
    detector_state="ready",
)

DEEP = Evidence(
    layer=Layer.DATABASE,
    service="orders-db",
    kpi="latency_p95_ms",
    dimension="speed",
    direction="up",
    value=840.0,
    expected=120.0,
    score=0.93,
    onset=at(0),
    window_start=at(2),
)

FELT = Evidence(
    layer=Layer.FRONTEND,
    service="web",
    kpi="ttfb_p75_ms",
    dimension="speed",
    direction="up",
    value=2400.0,
    expected=600.0,
    score=0.88,
    onset=at(5),
    window_start=at(6),
)

WARNING = EarlyWarning(
    id="warning-1",
    service="orders-db",
    layer=Layer.DATABASE,
    onset=at(0),
    published_at=at(3),
    at_risk=["web"],
    evidence=[DEEP],
)

CAUSE = Candidate(
    service="orders-db",
    layer=Layer.DATABASE,
    rank=1,
    score=0.81,
    onset=at(0),
    distance=2,
    reasons=["first to degrade, 5 min before users"],
    evidence=[DEEP],
)

RUNNER_UP = Candidate(
    service="orders",
    layer=Layer.BACKEND,
    rank=2,
    score=0.42,
    onset=at(4),
    distance=1,
    reasons=["on the path from web to orders-db"],
    evidence=[],
)

OPENED = Incident(
    id="incident-1",
    status="open",
    title="web ttfb_p75_ms degraded; probable root cause orders-db",
    opened_at=at(7),
    updated_at=at(7),
    resolved_at=None,
    user_facing=[FELT],
    root_causes=[CAUSE, RUNNER_UP],
    chain=[DEEP, FELT],
    lead_time_s=300.0,
    early_warnings=["warning-1"],
)

RESOLVED = OPENED.model_copy(
    update={"status": "resolved", "updated_at": at(40), "resolved_at": at(40)}
)

# 2025-03-04T10:00:30Z as epoch milliseconds: 1741082400000 + 30000.
DEAD_LETTER = DeadLetter(
    reason="json_decode_error",
    detail="Expecting value: line 1 column 1 (char 0)",
    topic="telemetry",
    partition=0,
    offset=101,
    key="web",
    value_b64=DeadLetter.encode(b"not json"),
    timestamp_ms=1_741_082_430_000,
)

LATE = LateEvent(
    layer=Layer.FRONTEND,
    service="web",
    kind="page_view",
    event_time=at(1),
    window_start=at(1),
    watermark=at(3),
    event_id="pv-17",
    topic="telemetry",
    partition=0,
    offset=230,
    lateness_s=60.0,
)
