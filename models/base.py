"""The contract every Foreshock detector keeps.

A detector watches one univariate KPI series. For each closed window it is
first asked to score the new value, then told to learn it. Scoring is kept
apart from thresholding: a detector returns a calibrated score in [0, 1] and
the side of its baseline the value fell on; the flow decides what is an
anomaly, so one threshold serves every series.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

__all__ = ["Detector", "DetectorState", "Score"]

DetectorState = Literal["warming_up", "ready"]


@dataclass(frozen=True, slots=True)
class Score:
    """A detector's judgement of one value.

    `value` is the anomaly score in [0, 1] (higher is more anomalous),
    `expected` the baseline the value was judged against (None while nothing
    has been learned), `side` +1 when the value lies above that baseline, -1
    below, 0 on it, and `state` whether the model is still warming up (its
    score then comes from a simpler rule).
    """

    value: float
    expected: float | None
    side: int
    state: DetectorState


@runtime_checkable
class Detector(Protocol):
    """An online anomaly detector for one KPI series."""

    name: str

    def score_one(self, x: float, t: datetime) -> Score:
        """Score `x`, observed at the window time `t`, without learning it."""
        ...

    def learn_one(self, x: float, t: datetime) -> None:
        """Update the model with `x`, observed at the window time `t`."""
        ...
