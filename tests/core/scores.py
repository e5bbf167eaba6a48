"""Scored one-minute windows, as the detect step hands them to the correlator."""

from __future__ import annotations

from datetime import datetime, timedelta

from foreshock.kpis import Dimension, Direction
from foreshock.layers import Layer
from foreshock.records import KpiRecord, KpiScore


def scored(
    start: datetime,
    layer: Layer,
    service: str,
    kpi: str,
    value: float | None,
    *,
    expected: float | None,
    anomalous: bool,
    score: float | None = None,
    unit: str = "ms",
    dimension: Dimension = "speed",
    direction: Direction = "up",
    state: str = "ok",
    detector_state: str = "ready",
) -> KpiScore:
    """The score of one KPI window starting at `start`.

    `score` defaults to a clear verdict: 0.95 when anomalous, 0.1 when not.
    """
    record = KpiRecord(
        layer=layer,
        service=service,
        kpi=kpi,
        dimension=dimension,
        direction=direction,
        unit=unit,
        window_start=start,
        window_end=start + timedelta(minutes=1),
        value=value,
        state=state,  # type: ignore[arg-type]
    )
    return KpiScore(
        kpi=record,
        detector="test",
        score=(0.95 if anomalous else 0.1) if score is None else score,
        expected=expected,
        side=1,
        detector_state=detector_state,  # type: ignore[arg-type]
        anomalous=anomalous,
    )
