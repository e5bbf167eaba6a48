"""A hand-built incident and the KPI windows around it, for the report tests.

Users of `web` see page loads go from about 1510 ms to 6010 ms at 09:40;
`orders-db` queries went from about 102 ms to 900 ms at 09:30, ten minutes
earlier, and an early warning was published for it at 09:31.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from foreshock.layers import Layer
from foreshock.records import (
    Candidate,
    EarlyWarning,
    Evidence,
    Incident,
    KpiRecord,
    KpiScore,
)

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _at(minute: int) -> datetime:
    return T0 + minute * MINUTE


def scores(minutes: int = 50) -> list[KpiScore]:
    """One window a minute for both series, 09:00 to 09:49."""
    out = []
    for m in range(minutes):
        web = 6010.0 if m >= 40 else 1500.0 + 10 * (m % 3)
        db = 900.0 if m >= 30 else 100.0 + 2 * (m % 3)
        out.append(score_of(Layer.FRONTEND, "web", "page_load_p95_ms", m, web, 1510.0))
        out.append(score_of(Layer.DATABASE, "orders-db", "query_p95_ms", m, db, 102.0))
    return out


def score_of(
    layer: Layer, service: str, kpi: str, minute: int, value: float, expected: float
) -> KpiScore:
    anomalous = value > 3 * expected
    return KpiScore(
        kpi=KpiRecord(
            layer=layer,
            service=service,
            kpi=kpi,
            dimension="speed",
            direction="up",
            unit="ms",
            window_start=_at(minute),
            window_end=_at(minute + 1),
            value=value,
            state="ok",
            events=20,
        ),
        detector="ensemble",
        score=0.97 if anomalous else 0.1,
        expected=expected,
        side=1 if anomalous else 0,
        detector_state="ready",
        anomalous=anomalous,
    )


WEB = Evidence(
    layer=Layer.FRONTEND,
    service="web",
    kpi="page_load_p95_ms",
    dimension="speed",
    direction="up",
    value=6010.0,
    expected=1510.0,
    score=0.97,
    onset=_at(40),
    window_start=_at(40),
)
DB = Evidence(
    layer=Layer.DATABASE,
    service="orders-db",
    kpi="query_p95_ms",
    dimension="speed",
    direction="up",
    value=900.0,
    expected=102.0,
    score=0.99,
    onset=_at(30),
    window_start=_at(40),
)

WARNING = EarlyWarning(
    id="ew-orders-db-0930",
    service="orders-db",
    layer=Layer.DATABASE,
    onset=_at(30),
    published_at=_at(31),
    at_risk=["web"],
    evidence=[DB],
    services=["orders-db"],
)

INCIDENT = Incident(
    id="inc-web-0940",
    status="open",
    title="web page_load_p95_ms degraded; probable root cause orders-db",
    opened_at=_at(41),
    updated_at=_at(41),
    resolved_at=None,
    user_facing=[WEB],
    root_causes=[
        Candidate(
            service="orders-db",
            layer=Layer.DATABASE,
            rank=1,
            score=1.3125,
            onset=_at(30),
            distance=1,
            reasons=[
                "anomalous 10 min before users were affected",
                "no earlier trouble of a dependency explains it",
            ],
            evidence=[DB],
        )
    ],
    chain=[DB, WEB],
    lead_time_s=600.0,
    early_warnings=[WARNING.id],
)
