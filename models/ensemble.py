"""Foreshock's default detector: several tail views, one calibrated score.

Each value is judged by up to four views of the series. Each view gives an
empirical tail probability from the series' own recent history, so no scale
or distribution is assumed:

- *level*: how rare the value itself is among the recent values;
- *jump*: how rare its residual is against a slow exponentially weighted
  forecast, which catches breaks that stay inside the usual range;
- *season*: how rare its residual is against the same time of day or week
  in local time, used only while it forecasts better than the forecast;
- *run*: for a series that sits at its ceiling (an availability at 100 %),
  how rare the mean of this value and the one before is among the recent
  such means. With isolated dips in its history (a few requests lost now
  and then), a single dip is ordinary; two low windows in a row are much
  rarer, so a lasting drop stands out while a single one does not.

The rarest view gives the surprise `d` in decades (`-log10 p`), mapped to
`1 - 2^(-d / 3)`: 0.5 means a one-in-a-thousand value for this series.
Because each view ranks the value against the series' own history, one
threshold means the same rarity on a calm series and on a spiky one. Two
other calibrations are kept for comparison: ranking `d` against the last
`history` surprises, and a Gaussian tail of `d` against its running mean
and variance (after the anomaly likelihood of Ahmad et al., Neurocomputing
2017); both scored lower on NAB. A score that does not exceed the highest of the last
`refractory` scores is damped, so one incident yields one detection rather
than a run of them. Values judged anomalous are learned clipped to the edge
of what was seen, so one absurd value cannot drag the baseline while a
lasting level shift is still learned step by step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from models._tail import SlidingTail, warmup_score
from models.base import DetectorState, Score

__all__ = ["EnsembleConfig", "EnsembleDetector"]

_PERIOD_SECONDS = {"day": 86_400, "week": 604_800}
# The seasonal view must beat the plain forecast by this factor to be used.
_SEASON_ADVANTAGE = 0.7
_ERROR_ALPHA = 0.01
# A seasonal residual view needs this many residuals before it judges.
_SEASON_MIN_RESIDUALS = 50
# The run view judges only runs below this quantile of the level view's values.
_RUN_DEPTH = 0.01


@dataclass(frozen=True, slots=True)
class EnsembleConfig:
    """Parameters shared by every series (nothing is fitted per series).

    `calibration` is "rank" (surprise ranked against its own history),
    "gauss" (surprise against the mean and variance of its history) or
    "none". `timezone` and `season_period` ("day" or "week") place the
    seasonal slots in local time, so daylight saving moves them with the
    users' clocks.
    """

    window: int = 500
    history: int = 1000
    warmup: int = 30
    forecast_alpha: float = 0.1
    jump: bool = True
    season: bool = True
    season_period: str = "day"
    season_slots: int = 48
    season_alpha: float = 0.25
    calibration: str = "none"
    gate_decades: float = 4.0
    refractory: int = 200
    damp: float = 0.1
    half_score_decades: float = 3.0
    timezone: str = "UTC"
    run: bool = True
    run_window: int = 100


class EnsembleDetector:
    """Level, jump, seasonal and run tail views, combined and calibrated.

    Per-series state is a few sliding windows of 32-bit floats (about 20 KB
    pickled with the default sizes, 0.9 KB of it the run view's) plus the
    seasonal slots.
    """

    name = "ensemble"

    def __init__(
        self, direction: str = "both", config: EnsembleConfig | None = None
    ) -> None:
        self.direction = direction
        self.config = c = config or EnsembleConfig()
        if c.season_period not in _PERIOD_SECONDS:
            raise ValueError(
                f"season_period must be 'day' or 'week', got {c.season_period!r}"
            )
        self._zone = ZoneInfo(c.timezone)
        self._values = SlidingTail(c.window)
        self._jumps = SlidingTail(c.window)
        self._season_residuals = SlidingTail(c.window)
        self._surprises = SlidingTail(c.history)
        self._runs = SlidingTail(c.run_window)
        self._previous: float | None = None
        self._forecast: float | None = None
        self._slots: list[float | None] = [None] * c.season_slots
        self._error_plain = 0.0
        self._error_season = 0.0
        self._mean_d = 0.0
        self._var_d = 1.0
        self._recent_scores: list[float] = []
        self._seen = 0
        # (x, t, surprise, undamped score) of the last scored value, so that
        # learning the same value does not judge it twice.
        self._last: tuple[float, datetime, float, float] | None = None

    def __setstate__(self, state: dict[str, object]) -> None:
        # A snapshot taken before the run view existed resumes without it
        # until its window has filled again.
        self.__dict__.update(state)
        self.__dict__.setdefault("_runs", SlidingTail(self.config.run_window))
        self.__dict__.setdefault("_previous", None)

    def score_one(self, x: float, t: datetime) -> Score:
        """Score `x` at `t` against what was learned so far."""
        expected = self._expected(t)
        if not math.isfinite(x) or expected is None:
            return Score(0.0, expected, 0, self._state())
        side = (x > expected) - (x < expected)
        if self._state() == "warming_up":
            rough = warmup_score(self._values, x, self.direction)
            return Score(rough, expected, side, "warming_up")

        d = self._surprise(x, t)
        value = self._calibrate(d)
        self._last = (x, t, d, value)
        return Score(self._damped(value), expected, side, "ready")

    def learn_one(self, x: float, t: datetime) -> None:
        """Learn `x` at `t`; non-finite values are ignored."""
        if not math.isfinite(x):
            return
        d, value = self._judged(x, t)
        if self._state() == "ready":
            self._track(d, value)
        self._learn_value(x, t, clip=d >= self.config.gate_decades)

    # judging ---------------------------------------------------------------

    def _state(self) -> DetectorState:
        return "ready" if self._seen >= self.config.warmup else "warming_up"

    def _expected(self, t: datetime) -> float | None:
        slot = self._slot_mean(t)
        if slot is not None and self._season_wins():
            return slot
        return self._forecast

    def _surprise(self, x: float, t: datetime) -> float:
        """The largest surprise of the views, on the side(s) that matter."""
        floor = self._floor()
        views = [(self._values, x)]
        if self.config.jump and self._forecast is not None:
            views.append((self._jumps, x - self._forecast))
        slot = self._slot_mean(t)
        seasonal = len(self._season_residuals) >= _SEASON_MIN_RESIDUALS
        if slot is not None and seasonal and self._season_wins():
            views.append((self._season_residuals, x - slot))
        up = max(tail.upper_decades(v, floor) for tail, v in views)
        down = max(tail.lower_decades(v, floor) for tail, v in views)
        down = self._run_surprise(x, down, floor)
        return max(
            up if self.direction != "down" else 0.0,
            down if self.direction != "up" else 0.0,
        )

    def _run_surprise(self, x: float, down: float, floor: float) -> float:
        """The lower surprise `down`, raised by the run view where it applies.

        It applies to a series that sits at its ceiling most of the time
        (its median is its maximum), only while the value itself is below
        the forecast (a recovery after one low window has a low mean too,
        but it is no new drop), and only to a run deeper than the lowest
        1 % of the values the level view holds. The run window is short
        (`run_window` means against the level view's `window` values), so a
        drop as deep as ones seen a few hours ago is left to the level
        view, which still remembers them. On the upper side, and on series
        that move around a level, a lasting change is the jump view's to
        judge; judging those runs too cost detections on the Nezha data.
        """
        forecast = self._forecast
        if not self._run_ready() or self._previous is None or forecast is None:
            return down
        at_ceiling = self._values.quantile(0.5) >= self._values.quantile(1.0)
        mean = (self._previous + x) / 2
        deeper = mean < self._values.quantile(_RUN_DEPTH)
        if x < forecast and at_ceiling and deeper:
            down = max(down, self._runs.lower_decades(mean, floor))
        return down

    def _run_ready(self) -> bool:
        return self.config.run and len(self._runs) >= self.config.warmup

    def _calibrate(self, d: float) -> float:
        c = self.config
        if c.calibration == "rank":
            decades = self._surprises.upper_decades(d, 0.05)
        elif c.calibration == "gauss":
            z = (d - self._mean_d) / math.sqrt(max(self._var_d, 1e-6))
            decades = _gauss_decades(z)
        else:
            decades = d
        # 1 - 2^(-decades / half): `half_score_decades` maps to 0.5, no cap.
        return 1.0 - math.pow(2.0, -decades / c.half_score_decades)

    def _damped(self, value: float) -> float:
        if self.config.refractory and value <= max(self._recent_scores, default=0):
            return value * self.config.damp
        return value

    def _judged(self, x: float, t: datetime) -> tuple[float, float]:
        last = self._last
        if last is not None and last[0] == x and last[1] == t:
            return last[2], last[3]
        if self._state() == "warming_up":
            return 0.0, 0.0
        d = self._surprise(x, t)
        return d, self._calibrate(d)

    def _floor(self) -> float:
        # Spreads below a thousandth of the level are treated as that much,
        # so a constant series does not turn rounding noise into anomalies.
        return max(1e-3 * abs(self._values.quantile(0.5)), 1e-9)

    # seasons ---------------------------------------------------------------

    def _slot(self, t: datetime) -> int:
        local = t.astimezone(self._zone)
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        period = _PERIOD_SECONDS[self.config.season_period]
        if period > 86_400:
            seconds += local.weekday() * 86_400
        return seconds * self.config.season_slots // period

    def _slot_mean(self, t: datetime) -> float | None:
        return self._slots[self._slot(t)] if self.config.season else None

    def _season_wins(self) -> bool:
        return self._error_season < _SEASON_ADVANTAGE * self._error_plain

    # learning --------------------------------------------------------------

    def _track(self, d: float, value: float) -> None:
        c = self.config
        if c.calibration == "rank":
            self._surprises.add(d)
        a = max(1.0 / c.history, 1.0 / (self._seen - c.warmup + 2))
        diff = d - self._mean_d
        self._mean_d += a * diff
        self._var_d = (1 - a) * (self._var_d + a * diff * diff)
        if c.refractory:
            self._recent_scores.append(value)
            del self._recent_scores[: -c.refractory]

    def _learn_value(self, x: float, t: datetime, clip: bool) -> None:
        floor = self._floor()
        if self.config.run:
            self._learn_run(x, clip, floor)
        if clip:
            x = self._values.clip(x, floor)
        self._values.add(x)
        self._seen += 1
        if self._forecast is None:
            self._forecast = x
        r = x - self._forecast
        if clip:
            r = self._jumps.clip(r, floor)
        self._jumps.add(r)
        if self.config.season:
            self._learn_season(x, r, t, clip, floor)
        self._forecast += self.config.forecast_alpha * r

    def _learn_run(self, x: float, clip: bool, floor: float) -> None:
        # The raw value is kept, so the next mean sees the drop as it was.
        if self._previous is not None:
            mean = (self._previous + x) / 2
            self._runs.add(self._runs.clip(mean, floor) if clip else mean)
        self._previous = x

    def _learn_season(
        self, x: float, r: float, t: datetime, clip: bool, floor: float
    ) -> None:
        index = self._slot(t)
        slot = self._slots[index]
        if slot is None:
            self._slots[index] = x
            return
        rs = x - slot
        if clip:
            rs = self._season_residuals.clip(rs, floor)
        self._season_residuals.add(rs)
        self._error_season += _ERROR_ALPHA * (abs(rs) - self._error_season)
        self._error_plain += _ERROR_ALPHA * (abs(r) - self._error_plain)
        self._slots[index] = slot + self.config.season_alpha * rs


def _gauss_decades(z: float) -> float:
    """-log10 of the upper Gaussian tail probability at `z`."""
    if z <= 0:
        return 0.0
    tail = 0.5 * math.erfc(z / math.sqrt(2.0))
    if tail > 0:
        return -math.log10(tail)
    # Far tail: the asymptotic form keeps growing where erfc underflows.
    return (z * z / 2 + math.log(z * math.sqrt(2 * math.pi))) / math.log(10.0)
