"""A median/MAD detector over a ring of recent values.

The simplest detector that holds up on real KPIs: the baseline is the median
of the last `window` accepted values and the spread their median absolute
deviation, so one absurd value moves neither. While fewer than `warmup`
values are known, a ratio rule against the running median scores instead.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime

from models.base import DetectorState, Score

__all__ = ["RobustZDetector"]

# MAD of a normal sample times this constant estimates its standard deviation.
_MAD_TO_SIGMA = 1.4826


class RobustZDetector:
    """Robust z-score of each value against the recent median and MAD."""

    name = "robust_z"

    def __init__(
        self, direction: str = "both", window: int = 240, warmup: int = 20
    ) -> None:
        self.direction = direction
        self.warmup = warmup
        self._recent: deque[float] = deque(maxlen=window)

    def score_one(self, x: float, t: datetime) -> Score:
        if not math.isfinite(x):
            return Score(0.0, self._median(), 0, self._state())
        median = self._median()
        if median is None:
            return Score(0.0, None, 0, "warming_up")
        side = (x > median) - (x < median)
        if self._state() == "warming_up":
            return Score(_ratio_rule(x, median, side), median, side, "warming_up")
        z = abs(x - median) / self._scale(median)
        return Score(
            _one_sided(_z_to_score(z), side, self.direction), median, side, "ready"
        )

    def learn_one(self, x: float, t: datetime) -> None:
        if math.isfinite(x):
            self._recent.append(float(x))

    def _state(self) -> DetectorState:
        return "ready" if len(self._recent) >= self.warmup else "warming_up"

    def _median(self) -> float | None:
        if not self._recent:
            return None
        values = sorted(self._recent)
        return values[len(values) // 2]

    def _scale(self, median: float) -> float:
        mad = sorted(abs(v - median) for v in self._recent)[len(self._recent) // 2]
        # A floor relative to the level keeps a constant series from dividing by 0.
        return max(_MAD_TO_SIGMA * mad, 1e-3 * abs(median), 1e-9)


def _z_to_score(z: float) -> float:
    return math.erf(z / math.sqrt(2.0)) if math.isfinite(z) else 1.0


def _ratio_rule(x: float, median: float, side: int) -> float:
    base = max(abs(median), 1e-9)
    ratio = abs(x - median) / base
    return min(1.0, ratio / 2.0) if side else 0.0


def _one_sided(value: float, side: int, direction: str) -> float:
    if (direction == "up" and side < 0) or (direction == "down" and side > 0):
        return 0.0
    return value
