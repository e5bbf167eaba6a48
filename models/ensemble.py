"""Foreshock's default detector: several tail estimates, one calibrated score.

Each value is judged by up to three views of the series, each giving a tail
probability from the series' own recent history, so no scale is assumed:

- *level*: how rare the value itself is among the recent values;
- *jump*: how rare its residual is against a short exponentially weighted
  forecast, which catches breaks that stay inside the usual range;
- *season*: how rare its residual is against the same time of day (local
  time), used only while it forecasts better than the non-seasonal view.

The rarest view gives the surprise `D` in decades (`-log10 p`). An anomaly
likelihood step, after Ahmad et al. (Neurocomputing 2017), compares the mean
surprise of the last few values with its long-run distribution, so a run of
moderately rare values adds up. Values judged anomalous are not learned
until the run lasts long enough to be a new normal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from models._tail import SlidingTail
from models.base import DetectorState, Score

__all__ = ["EnsembleConfig", "EnsembleDetector"]


@dataclass(frozen=True, slots=True)
class EnsembleConfig:
    """Parameters shared by every series (nothing is fitted per series)."""

    window: int = 500
    warmup: int = 30
    forecast_alpha: float = 0.3
    season: bool = True
    season_slots: int = 48
    season_alpha: float = 0.25
    likelihood: bool = True
    calibration: str = "gauss"
    history: int = 1000
    mix: float = 0.0
    raw_cap: float = 5.0
    short_window: int = 6
    long_alpha: float = 0.002
    gate_decades: float = 4.0
    max_gated_run: int = 30
    score_decades: float = 10.0
    suppress: int = 0
    damp: float = 0.5
    timezone: str = "UTC"


class EnsembleDetector:
    """Level, jump and seasonal tail views, combined and calibrated."""

    name = "ensemble"

    def __init__(self, direction: str = "both", config: EnsembleConfig | None = None) -> None:
        self.direction = direction
        self.config = config or EnsembleConfig()
        c = self.config
        self._zone = ZoneInfo(c.timezone)
        self._values = SlidingTail(c.window)
        self._jumps = SlidingTail(c.window)
        self._season_res = SlidingTail(c.window)
        self._forecast: float | None = None
        self._slots: list[float | None] = [None] * c.season_slots
        self._err_plain = 0.0
        self._err_season = 0.0
        self._recent: list[float] = []
        self._mean_d = 0.0
        self._var_d = 1.0
        self._gated = 0
        self._raw_recent: list[float] = []
        self._history = SlidingTail(c.history)
        self._seen = 0
        self._last: tuple[float, datetime, float, int, float] | None = None

    # scoring -----------------------------------------------------------------

    def score_one(self, x: float, t: datetime) -> Score:
        expected = self._expected(t)
        if not math.isfinite(x):
            return Score(0.0, expected, 0, self._state())
        if expected is None:
            return Score(0.0, None, 0, "warming_up")
        side = (x > expected) - (x < expected)
        if self._state() == "warming_up":
            return Score(_ratio_rule(x, expected), expected, side, "warming_up")
        d, d_side = self._surprise(x, t)
        value = self._calibrate(d)
        self._last = (x, t, d, d_side, value)
        if self.config.suppress and value <= max(self._raw_recent, default=0.0):
            value *= self.config.damp
        return Score(value, expected, side, "ready")

    def _state(self) -> DetectorState:
        return "ready" if self._seen >= self.config.warmup else "warming_up"

    def _expected(self, t: datetime) -> float | None:
        if self._forecast is None:
            return None
        slot = self._slot_mean(t)
        if slot is not None and self._season_wins():
            return slot
        return self._forecast

    def _surprise(self, x: float, t: datetime) -> tuple[float, int]:
        floor = self._floor()
        up = [self._values.upper_decades(x, floor)]
        down = [self._values.lower_decades(x, floor)]
        assert self._forecast is not None
        r = x - self._forecast
        up.append(self._jumps.upper_decades(r, floor))
        down.append(self._jumps.lower_decades(r, floor))
        slot = self._slot_mean(t)
        if slot is not None and self._season_wins() and len(self._season_res) > 50:
            rs = x - slot
            up.append(self._season_res.upper_decades(rs, floor))
            down.append(self._season_res.lower_decades(rs, floor))
        d_up = _one_sided(max(up), self.direction, "up")
        d_down = _one_sided(max(down), self.direction, "down")
        return (d_up, 1) if d_up >= d_down else (d_down, -1)

    def _calibrate(self, d: float) -> float:
        c = self.config
        total = d
        recent = [*self._recent[-(c.short_window - 1) :], d]
        mean = sum(recent) / len(recent)
        if c.calibration == "gauss":
            z = (mean - self._mean_d) / math.sqrt(max(self._var_d, 1e-6))
            total = max(d, _gauss_decades(z))
        elif c.calibration == "lik":
            bounded = [min(v, c.raw_cap) / c.raw_cap for v in recent]
            m = sum(bounded) / len(bounded)
            z = (m - self._mean_d) / math.sqrt(max(self._var_d, 1e-4))
            total = _gauss_decades(z)
        elif c.calibration == "rank":
            total = self._history.upper_decades(mean, 0.05) + c.mix * d
        return min(1.0, total / c.score_decades)

    def _floor(self) -> float:
        median = self._values.quantile(0.5)
        return max(1e-3 * abs(median), 1e-9)

    def _slot(self, t: datetime) -> int:
        local = t.astimezone(self._zone)
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        return seconds * self.config.season_slots // 86400

    def _slot_mean(self, t: datetime) -> float | None:
        if not self.config.season:
            return None
        return self._slots[self._slot(t)]

    def _season_wins(self) -> bool:
        return self._err_season < 0.7 * self._err_plain

    # learning ----------------------------------------------------------------

    def learn_one(self, x: float, t: datetime) -> None:
        if not math.isfinite(x):
            return
        d, value = self._cached_surprise(x, t)
        self._track_surprise(d, value)
        self._learn_value(x, t, clip=d >= self.config.gate_decades)

    def _cached_surprise(self, x: float, t: datetime) -> tuple[float, float]:
        if self._last is not None and self._last[0] == x and self._last[1] == t:
            return self._last[2], self._last[4]
        if self._state() == "warming_up" or self._forecast is None:
            return 0.0, 0.0
        d, _ = self._surprise(x, t)
        return d, self._calibrate(d)

    def _track_surprise(self, d: float, value: float) -> None:
        c = self.config
        self._recent.append(d)
        del self._recent[: -c.short_window]
        if self._state() == "warming_up":
            return
        a = c.long_alpha if self._seen > 1 / c.long_alpha else 1.0 / (self._seen + 1)
        self._history.add(sum(self._recent) / len(self._recent))
        if c.calibration == "lik":
            d = sum(min(v, c.raw_cap) / c.raw_cap for v in self._recent) / len(self._recent)
        diff = d - self._mean_d
        self._mean_d += a * diff
        self._var_d = (1 - a) * (self._var_d + a * diff * diff)
        if self.config.suppress:
            self._raw_recent.append(value)
            del self._raw_recent[: -self.config.suppress]

    def _learn_value(self, x: float, t: datetime, clip: bool) -> None:
        c = self.config
        self._seen += 1
        if self._forecast is None:
            self._forecast = x
        floor = self._floor()
        if clip:
            x = self._values.clip(x, floor)
        r = x - self._forecast
        if clip:
            r = self._jumps.clip(r, floor)
        self._jumps.add(r)
        self._values.add(x)
        slot_index = self._slot(t) if c.season else 0
        slot = self._slots[slot_index] if c.season else None
        if slot is not None:
            rs = x - slot
            if clip:
                rs = self._season_res.clip(rs, floor)
            self._season_res.add(rs)
            self._err_season += 0.01 * (abs(rs) - self._err_season)
            self._err_plain += 0.01 * (abs(r) - self._err_plain)
            self._slots[slot_index] = slot + c.season_alpha * rs
        elif c.season:
            self._slots[slot_index] = x
        self._forecast += c.forecast_alpha * r


def _ratio_rule(x: float, expected: float) -> float:
    """Warm-up score: the relative distance from the running forecast."""
    base = max(abs(expected), 1e-9)
    return min(1.0, abs(x - expected) / base / 2.0)


def _one_sided(d: float, direction: str, side: str) -> float:
    return d if direction in ("both", side) else 0.0


def _gauss_decades(z: float) -> float:
    """-log10 of the upper Gaussian tail probability at `z`."""
    if z <= 0:
        return 0.0
    tail = 0.5 * math.erfc(z / math.sqrt(2.0))
    if tail > 0:
        return -math.log10(tail)
    # Far tail: the asymptotic form keeps growing where erfc underflows.
    return (z * z / 2 + math.log(z * math.sqrt(2 * math.pi))) / math.log(10.0)

