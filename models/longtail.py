"""A detector that judges each value against short and long memory.

Up to three views of the series each give an empirical tail probability, so
no scale or distribution is assumed:

- *jump*: how rare the value's residual is against a slow exponentially
  weighted forecast; it catches spikes, dips and breaks inside the usual
  range;
- *routine*: how rare its residual is against the nearest value seen at about
  the same local time of day on the last `routine_days` days; it catches a
  broken daily routine (a batch that did not run, a peak that did not come);
- *level*: how rare the value itself is. Off by default: on NAB it added more
  false alarms than detections, since the jump view already sees every level
  the forecast has not reached.

Each view ranks its value twice: among the last `window` values, and among the
block maxima (and minima) of the last `blocks * block` values, which remember
weeks of a series in a few kilobytes. A value counts as rare only when it is
rare in both, so a spike as high as one a week ago is not news, while one
never seen in the last `window` values still may be. The rarest view gives
the surprise `d` in decades (`-log10 p`), mapped to `1 - 2^(-d / 3)`: 0.5
means a one-in-a-thousand value for this series.

A score that does not exceed the highest of the last `refractory` scores is
damped, so one incident yields one detection rather than a run of them. Values
judged anomalous are learned clipped to the edge of what was seen, so one
absurd value cannot drag the baseline while a lasting level shift is still
learned step by step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from models._blocks import BlockTail
from models._context import TransitionNovelty
from models._seasonal import SeasonalMemory
from models._tail import SlidingTail
from models.base import DetectorState, Score

__all__ = ["LongTailConfig", "LongTailDetector"]

# The warm-up rule needs some history too: twenty values.
_WARMUP_MIN_SAMPLES = 20
# Surprises below this many decades are far from any threshold in use.
_NEGLIGIBLE_DECADES = 1.0


@dataclass(frozen=True, slots=True)
class LongTailConfig:
    """Parameters shared by every series (nothing is fitted per series).

    `memory` is "both" (rare in the short window and in the block maxima),
    "short" or "long" (one of them only), for ablation. `routine_days` days
    of `slot_seconds`-long slots are kept for the routine view, in local time
    of `timezone`.
    """

    window: int = 500
    block: int = 25
    blocks: int = 200
    memory: str = "both"
    warmup: int = 30
    forecast_alpha: float = 0.1
    level: bool = False
    jump: bool = True
    routine: bool = True
    routine_days: int = 7
    slot_seconds: int = 300
    timezone: str = "UTC"
    gate_decades: float = 4.0
    refractory: int = 150
    damp: float = 0.1
    half_score_decades: float = 3.0
    smooth: int = 0
    sustain: int = 0
    novelty_margin: float = 0.0
    novelty_cap: int = 4
    novelty_order: int = 1
    refractory_s: float = 0.0
    explain_reach: int = 1
    hill: bool = False
    hill_low: bool = False
    hill_views: str = "jump"
    explain_veto: float = 0.0
    explain: float = 0.0
    veto: float = 0.0


class _View:
    """Short and long memory of one derived series."""

    def __init__(self, c: LongTailConfig) -> None:
        self.short = SlidingTail(c.window)
        self.long = BlockTail(c.block, c.blocks)

    def decades(self, v: float, floor: float, memory: str) -> tuple[float, float]:
        """Upper and lower surprise of `v`, in decades."""
        up = self.short.upper_decades(v, floor)
        down = self.short.lower_decades(v, floor)
        if memory == "short" or not self.long.ready():
            return up, down
        if memory == "long":
            return self.long.upper_decades(v, floor), self.long.lower_decades(v, floor)
        # The long memory can only lower a surprise; skip it when there is none.
        if up > _NEGLIGIBLE_DECADES:
            up = min(up, self.long.upper_decades(v, floor))
        if down > _NEGLIGIBLE_DECADES:
            down = min(down, self.long.lower_decades(v, floor))
        return up, down

    def add(self, v: float, floor: float, clip: bool) -> None:
        if clip:
            v = self.long.clip(self.short.clip(v, floor), floor)
        self.short.add(v)
        self.long.add(v)


class LongTailDetector:
    """Level, jump and routine views against short and long memory.

    Per-series state with the defaults is about 32 KB pickled once every
    window is full: short windows of 500 and block windows of 200 32-bit
    floats per view, and seven days of five-minute slots (8 KB).
    """

    name = "longtail"

    def __init__(
        self, direction: str = "both", config: LongTailConfig | None = None
    ) -> None:
        self.direction = direction
        self.config = c = config or LongTailConfig()
        if c.memory not in ("both", "short", "long"):
            raise ValueError(f"memory must be both, short or long, got {c.memory!r}")
        self._level = _View(c)
        self._jump = _View(c)
        self._routine = _View(c)
        self._smooth = _View(c)
        self._residuals: list[float] = []
        self._sus_hi = _View(c)
        self._sus_lo = _View(c)
        self._routine_d = math.inf
        for name in c.hill_views.split("+"):
            view = getattr(self, "_" + name)
            view.short.hill = view.long._maxima.hill = c.hill
            view.short.hill_low = view.long._minima.hill = c.hill_low
        self._novelty = TransitionNovelty(c.novelty_cap, c.novelty_order)
        self._jump_level = 0
        self._uncapped = 0.0
        self._days = SeasonalMemory(c.slot_seconds, c.routine_days, c.timezone)
        self._forecast: float | None = None
        self._recent_scores: list[float] = []
        self._recent_times: list[float] = []
        self._seen = 0
        # (x, t, surprise, undamped score) of the last scored value, so that
        # learning the same value does not judge it twice.
        self._last: tuple[float, datetime, float, float] | None = None
        self._residual_of: tuple[float, datetime] | None = None
        self._residual: float | None = None

    def score_one(self, x: float, t: datetime) -> Score:
        """Score `x` at `t` against what was learned so far."""
        expected = self._forecast
        if not math.isfinite(x) or expected is None:
            return Score(0.0, expected, 0, self._state())
        side = (x > expected) - (x < expected)
        if self._state() == "warming_up":
            return Score(self._warmup_rule(x), expected, side, "warming_up")

        d = self._surprise(x, t)
        value = self._calibrate(d)
        self._last = (x, t, d, value)
        return Score(self._damped(value), expected, side, "ready")

    def learn_one(self, x: float, t: datetime) -> None:
        """Learn `x` at `t`; non-finite values are ignored."""
        if not math.isfinite(x):
            return
        d, value = self._judged(x, t)
        c = self.config
        if self._state() == "ready" and c.refractory:
            self._recent_scores.append(value)
            del self._recent_scores[: -c.refractory]
            if c.refractory_s > 0:
                self._recent_times.append(t.timestamp())
                del self._recent_times[: -c.refractory]
        explained = self._routine_d < c.explain
        if c.novelty_margin > 0:
            self._novelty.add(self._jump_level if self._state() == "ready" else 0)
        raw = self._uncapped if self._state() == "ready" else 0.0
        self._learn_value(x, t, clip=raw >= c.gate_decades and not explained)

    # judging ---------------------------------------------------------------

    def _state(self) -> DetectorState:
        return "ready" if self._seen >= self.config.warmup else "warming_up"

    def _warmup_rule(self, x: float) -> float:
        """Score by how far `x` leaves the range seen so far, while warming up.

        The same rule as the ensemble detector's: silent on fewer than 20
        values; then distance above the highest value in units of the
        series' level (or of its range, if wider), 0.5 at one unit; below
        the lowest value, 1 already at half a unit.
        """
        values = self._level.short
        if len(values) < _WARMUP_MIN_SAMPLES:
            return 0.0
        low, mid, high = values.quantile(0.0), values.quantile(0.5), values.quantile(1)
        unit = max(high - low, abs(mid), 1e-9)
        up = (x - high) / unit / 2.0 if self.direction != "down" else 0.0
        down = (low - x) / unit * 2.0 if self.direction != "up" else 0.0
        return min(1.0, max(0.0, up, down))

    def _surprise(self, x: float, t: datetime) -> float:
        """The largest surprise of the views, on the side(s) that matter."""
        c = self.config
        floor = self._floor()
        views: list[tuple[_View, float]] = []
        if c.level:
            views.append((self._level, x))
        if c.jump and self._forecast is not None:
            views.append((self._jump, x - self._forecast))
        if c.smooth > 1 and self._forecast is not None and len(self._smooth.short) >= c.warmup:
            views.append((self._smooth, self._smoothed(x - self._forecast)))
        if c.sustain > 1 and self._forecast is not None and len(self._sus_hi.short) >= c.warmup:
            hi, lo = self._sustained(x - self._forecast)
            views.append((self._sus_hi, hi))
            views.append((self._sus_lo, lo))
        residual = self._routine_residual(x, t)
        if residual is not None and len(self._routine.short) >= c.warmup:
            views.append((self._routine, residual))
        up = down = 0.0
        self._routine_d = math.inf
        self._jump_level = 0
        for view, v in views:
            u, d = view.decades(v, floor, c.memory)
            if view is self._sus_hi:
                d = 0.0
            elif view is self._sus_lo:
                u = 0.0
            up, down = max(up, u), max(down, d)
            if view is self._routine:
                self._routine_d = max(u, d)
            if view is self._jump:
                self._jump_level = self._novelty.level(u, d)
        out = max(
            up if self.direction != "down" else 0.0,
            down if self.direction != "up" else 0.0,
        )
        if c.veto > 0:
            out = min(out, self._routine_d + c.veto)
        if (c.explain_reach > 1 or c.explain_veto > 0) and out >= 2.0 and self._routine_d < math.inf:
            wide = self._days.residual(x, t, c.explain_reach)
            if wide is not None:
                wd = max(self._routine.decades(wide, floor, c.memory))
                self._routine_d = min(self._routine_d, wd)
                if c.explain_veto > 0:
                    out = min(out, wd + c.explain_veto)
        self._uncapped = out
        if c.novelty_margin > 0:
            out = min(out, self._novelty.decades(self._jump_level) + c.novelty_margin)
        return out

    def _sustained(self, r: float) -> tuple[float, float]:
        recent = self._residuals[-(self.config.sustain - 1):] + [r]
        return min(recent), max(recent)

    def _smoothed(self, r: float) -> float:
        recent = self._residuals[-(self.config.smooth - 1):]
        return (sum(recent) + r) / (len(recent) + 1)

    def _routine_residual(self, x: float, t: datetime) -> float | None:
        # Scoring and learning ask for the same value in turn; look it up once.
        if not self.config.routine:
            return None
        if self._residual_of != (x, t):
            self._residual_of = (x, t)
            self._residual = self._days.residual(x, t)
        return self._residual

    def _calibrate(self, d: float) -> float:
        # `half_score_decades` maps to 0.5; rarer values approach 1.
        return 1.0 - math.pow(2.0, -d / self.config.half_score_decades)

    def _damped(self, value: float) -> float:
        c = self.config
        if c.refractory_s > 0 and self._last is not None:
            now = self._last[1].timestamp()
            times = self._recent_times
            recent = [v for v, u in zip(self._recent_scores, times) if now - u <= c.refractory_s]
            if value <= max(recent, default=0.0):
                return value * c.damp
            return value
        if c.refractory and value <= max(self._recent_scores, default=0.0):
            return value * c.damp
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
        return max(1e-3 * abs(self._level.short.quantile(0.5)), 1e-9)

    # learning --------------------------------------------------------------

    def _learn_value(self, x: float, t: datetime, clip: bool) -> None:
        c = self.config
        floor = self._floor()
        if c.routine:
            residual = self._routine_residual(x, t)
            if residual is not None:
                self._routine.add(residual, floor, clip)
            self._days.add(self._level.short.clip(x, floor) if clip else x, t)
        if self._forecast is None:
            self._forecast = x
        r = x - self._forecast
        self._jump.add(r, floor, clip)
        if c.smooth > 1:
            self._smooth.add(self._smoothed(r), floor, clip)
        if c.sustain > 1:
            hi, lo = self._sustained(r)
            self._sus_hi.add(hi, floor, clip)
            self._sus_lo.add(lo, floor, clip)
        keep = max(c.smooth, c.sustain) - 1
        if keep > 0:
            self._residuals.append(r)
            del self._residuals[:-keep]
        self._level.add(x, floor, clip)
        self._seen += 1
        if clip:
            r = self._jump.short.clip(r, floor)
        self._forecast += c.forecast_alpha * r
