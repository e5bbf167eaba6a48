"""Any anomaly detector of River's `anomaly` module, as a Foreshock detector.

River's detectors score on scales of their own: a half-space tree's mass,
a Gaussian's tail probability, a count of absolute deviations. The flow
wants one scale for every series, so the adapter judges each raw score
against the raw scores the model gave this series before (an empirical
tail, `models._tail`), in decades of surprise: the score is
`1 - 2^(-decades / 3)`, 0.5 for a raw score reached once in a thousand,
as the other detectors of this package read it. River's scores carry no
side; the side of the value against the recent median decides which one
it was on, and the harmless side scores 0.

Models are built by class name and keyword arguments with scalar values
(numbers, True, False, None, quoted strings), so a configuration reads
`river:HalfSpaceTrees,window_size=100` or `river:GaussianScorer`; a
`GaussianScorer`'s score, one minus a tail probability, is read in
decades of that probability, as it saturates near 1. Detectors River
calls supervised (`GaussianScorer`, `StandardAbsoluteDeviation`) are
given the value as their target; the others are given it as the feature
`value`, scaled into [0, 1] by an online `MinMaxScaler` first, since
half-space trees and LODA cut the unit interval. A model that needs a
period of its own before it scores (`window_size`, `grace_period`,
`warmup_period`) has that period added to the warm-up, so that the zeros
it gives meanwhile are not taken as its normal.

What River's models cost per series is theirs: a `HalfSpaceTrees` with
its defaults pickles to 174 KiB and holds 1 to 3 MiB in memory once its
window is full (the ensemble detector: 14 and 16 KiB), so it suits a few
hundred series, not 100,000. `PredictiveAnomalyDetection` needs a
forecasting model object and cannot be built by name.
"""

from __future__ import annotations

import ast
import math
from datetime import datetime
from functools import cache
from typing import Any

from river import anomaly, preprocessing
from river.base import AnomalyDetector, SupervisedAnomalyDetector

from models._tail import SlidingTail, warmup_score
from models.base import DetectorState, Score

__all__ = ["RiverDetector", "river_model_names"]

# Raw scores kept to judge the next one against, and values for the median.
_HISTORY = 500
_WARMUP = 30
_HALF_SCORE_DECADES = 3.0
# Attributes by which River's detectors say how long they learn before
# their scores mean anything.
_OWN_WARMUP = ("window_size", "grace_period", "warmup_period")
# A Gaussian scorer's score is one minus a two-sided tail probability, so
# it saturates at 1 within a few deviations: read in decades of that
# probability instead, a value twice as far out is judged more surprising.
_TAIL_PROBABILITY_SCORES = frozenset({"GaussianScorer"})
# Needs a forecasting model object, which a name and scalar arguments
# cannot give.
_NOT_BY_NAME = frozenset({"PredictiveAnomalyDetection"})
_TINY = 1e-300


def river_model_names() -> list[str]:
    """The River anomaly detectors `RiverDetector` can build by name."""
    return sorted(
        name
        for name in anomaly.__all__
        if name not in _NOT_BY_NAME
        and issubclass(
            getattr(anomaly, name),
            AnomalyDetector | SupervisedAnomalyDetector,
        )
    )


class RiverDetector:
    """A River anomaly detector scoring one KPI series on the flow's scale.

    `spec` is the model's class name in `river.anomaly`, then its keyword
    arguments: `"HalfSpaceTrees,window_size=100,seed=7"`.
    """

    name: str  # "river:<Model>"

    def __init__(self, spec: str, direction: str = "both") -> None:
        self.direction = direction
        self.spec = spec
        model_class, arguments = _parsed(spec)
        model = model_class(**arguments)
        self.name = f"river:{model_class.__name__}"
        self._supervised = isinstance(model, SupervisedAnomalyDetector)
        self._model: Any = (
            model if self._supervised else preprocessing.MinMaxScaler() | model
        )
        self._tail_probability = model_class.__name__ in _TAIL_PROBABILITY_SCORES
        own = [getattr(model, a, None) for a in _OWN_WARMUP]
        self._own_warmup = sum(w for w in own if isinstance(w, int))
        self._values = SlidingTail(_HISTORY)
        self._raw = SlidingTail(_HISTORY)
        self._seen = 0
        # (x, t, raw score) of the last value scored, so that learning it
        # does not ask the model twice.
        self._last: tuple[float, datetime, float] | None = None

    def score_one(self, x: float, t: datetime) -> Score:
        expected = self._values.quantile(0.5) if len(self._values) else None
        if not math.isfinite(x) or expected is None:
            return Score(0.0, expected, 0, self._state())
        side = (x > expected) - (x < expected)
        if self._state() == "warming_up":
            rough = warmup_score(self._values, x, self.direction)
            return Score(rough, expected, side, "warming_up")
        raw = self._raw_score(x, t)
        decades = self._raw.upper_decades(raw, _raw_floor(self._raw))
        value = 1.0 - math.pow(2.0, -decades / _HALF_SCORE_DECADES)
        harmless = (self.direction == "up" and side < 0) or (
            self.direction == "down" and side > 0
        )
        return Score(0.0 if harmless else value, expected, side, "ready")

    def learn_one(self, x: float, t: datetime) -> None:
        if not math.isfinite(x):
            return
        if self._seen >= self._own_warmup:
            self._raw.add(self._raw_score(x, t))
        if self._supervised:
            self._model.learn_one(None, x)
        else:
            self._model.learn_one({"value": x})
        self._values.add(x)
        self._seen += 1

    def _state(self) -> DetectorState:
        return "ready" if len(self._raw) >= _WARMUP else "warming_up"

    def _raw_score(self, x: float, t: datetime) -> float:
        last = self._last
        if last is not None and last[0] == x and last[1] == t:
            return last[2]
        if self._supervised:
            raw = self._model.score_one(None, x)
        else:
            raw = self._model.score_one({"value": x})
        # A model that cannot say (a Gaussian of a constant series) says 0.
        raw = float(raw) if math.isfinite(raw) else 0.0
        if self._tail_probability:
            raw = -math.log10(max(1.0 - raw, _TINY))
        self._last = (x, t, raw)
        return raw


def _raw_floor(raw: SlidingTail) -> float:
    # Beyond the highest raw score seen, each tail length is a decade more
    # surprising; a thousandth of the spread keeps a flat history finite.
    return max(1e-3 * (raw.quantile(1.0) - raw.quantile(0.0)), 1e-9)


@cache
def _parsed(spec: str) -> tuple[type[Any], dict[str, Any]]:
    """The River class and keyword arguments a spec names, checked once."""
    name, *items = [part.strip() for part in spec.split(",")]
    known = river_model_names()
    if name not in known:
        raise ValueError(
            f"no River anomaly detector {name!r}; choose from {', '.join(known)}"
        )
    arguments: dict[str, Any] = {}
    for item in items:
        key, equals, text = item.partition("=")
        if not equals:
            raise ValueError(f"write River arguments as name=value, not {item!r}")
        arguments[key.strip()] = _scalar(key.strip(), text.strip())
    model_class: type[Any] = getattr(anomaly, name)
    try:
        model_class(**arguments)
    except TypeError as error:
        raise ValueError(f"River's {name} refuses {arguments}: {error}") from error
    return model_class, arguments


def _scalar(key: str, text: str) -> Any:
    """The value `text` writes: a number, True, False, None or a string."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    else:
        if value is None or isinstance(value, int | float | str):
            return value
    raise ValueError(
        f"write River argument {key!r} as a number, True, False, None or a "
        f"quoted string, not {text!r}"
    )
