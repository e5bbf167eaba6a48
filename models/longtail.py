"""A detector that judges each value against short and long memory.

Views of the series each give an empirical tail probability, so no scale or
distribution is assumed:

- *jump*: how rare the value's residual is against a slow exponentially
  weighted forecast; it catches spikes, dips and breaks inside the usual
  range. Its upper tail beyond the highest residual seen may decay as a power
  law (`heavy_tail`), as volumes and latencies do;
- *held*: how far every one of the last `sustain` values stayed above (or
  below) the forecast, against how far runs of that length usually stay; it
  catches a dip or a surge that lasts a few values although no single value
  is extreme, while one lone spike moves it not at all;
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
the surprise `d` in decades (`-log10 p`).

A surprise is then held to at most `novelty_margin` decades above how new
its step is: the jump view's surprise in whole decades is a symbol, and a
table of how often each symbol followed the previous one gives the step's
novelty (`models._context`). A series that spikes every other day has seen
"quiet, then three decades up" many times, so such a spike is capped, while
a first dip after a spike, or a spike two decades higher than usual, is not.
The result is mapped to `1 - 2^(-d / 3)`: 0.5 means a one-in-a-thousand
value for this series.

A burst of new shape raises the surprise: each value is also a symbol of its
band among recent values and its step (`models._sequence`), and when at least
`sequence_novel` of the last `sequence_span` symbols never followed their
context before, the surprise of a value that some view already finds
`sequence_gate` decades rare grows by `sequence_decades` for each novel symbol
from the `sequence_novel`-th on. A spike in a familiar rhythm adds nothing;
a stretch of values in an order the series never took does.

A score that does not exceed the highest of the last `refractory` scores is
damped, so one incident yields one detection rather than a run of them. So is
every score for `burst` values after one of at least `burst_decades`: an
incident that keeps rising (a surge that climbs for a few values, a spike
followed by a higher one) raises a new peak at each step, which the
refractory alone lets through as a new detection each time. Values
judged anomalous are learned clipped to the edge of what was seen, so one
absurd value cannot drag the baseline while a lasting level shift is still
learned step by step; values the routine view explains (a surprise below
`explain` decades there) are learned as they are, so a daily spike becomes
ordinary in every view.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from models._blocks import BlockTail
from models._context import TransitionNovelty
from models._seasonal import SeasonalMemory
from models._sequence import SequenceNovelty, symbol
from models._tail import SlidingTail, warmup_score
from models.base import DetectorState, Score

__all__ = ["LongTailConfig", "LongTailDetector", "held_residual"]

# Surprises below this many decades are far from any threshold in use.
_NEGLIGIBLE_DECADES = 1.0


@dataclass(frozen=True, slots=True)
class LongTailConfig:
    """Parameters shared by every series (nothing is fitted per series).

    `memory` is "both" (rare in the short window and in the block maxima),
    "short" or "long" (one of them only), for ablation. `routine_days` days
    of `slot_seconds`-long slots are kept for the routine view, in local time
    of `timezone`. Each of `explain`, `sustain`, `novelty_margin` and
    `heavy_tail` turns its part off at 0 (or false), which gives the
    detector as it was before those parts; so does `sequence_span` for the
    sequence novelty, whose table of `sequence_counters` 2-bit counts takes
    a kilobyte a series. `burst` at 0 lets a rising incident through at
    each new peak, as before it.
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
    explain: float = 1.0
    sustain: int = 3
    novelty_margin: float = 2.0
    novelty_cap: int = 4
    heavy_tail: bool = True
    sequence_span: int = 20
    sequence_novel: int = 3
    sequence_decades: float = 0.5
    sequence_gate: float = 1.0
    sequence_order: int = 2
    sequence_counters: int = 4096
    sequence_context: int = 2
    burst: int = 20
    burst_decades: float = 4.0


@dataclass(frozen=True, slots=True)
class _Judgement:
    """What judging one value found, kept for learning that value.

    `decades` is the surprise after the novelty cap, `uncapped` before it
    (anomalies are learned clipped by that one), `routine` the routine
    view's own surprise (infinite when it had no say) and `step` the jump
    view's surprise as a symbol for the transition table.
    """

    decades: float
    uncapped: float
    routine: float
    step: int


_QUIET = _Judgement(0.0, 0.0, math.inf, 0)


def held_residual(run: Sequence[float]) -> float:
    """How far a run of residuals all stayed on one side of the forecast.

    The smallest of them if all are above it, the largest if all are below,
    else 0: a lone spike inside the run does not move it, a run that stays
    out does.
    """
    low, high = min(run), max(run)
    if low > 0.0:
        return low
    return high if high < 0.0 else 0.0


class _View:
    """Short and long memory of one derived series.

    A view kept only for its short window's quantiles (the level view when it
    does not judge) has no long memory, which saves 1.6 KB a series.
    """

    __slots__ = ("long", "short")

    def __init__(
        self, c: LongTailConfig, heavy_upper: bool = False, long: bool = True
    ) -> None:
        self.short = SlidingTail(c.window, heavy_upper)
        self.long = BlockTail(c.block, c.blocks, heavy_upper) if long else None

    def decades(self, v: float, floor: float, memory: str) -> tuple[float, float]:
        """Upper and lower surprise of `v`, in decades."""
        up = self.short.upper_decades(v, floor)
        down = self.short.lower_decades(v, floor)
        if memory == "short" or self.long is None or not self.long.ready():
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
            v = self.short.clip(v, floor)
            v = v if self.long is None else self.long.clip(v, floor)
        self.short.add(v)
        if self.long is not None:
            self.long.add(v)


def _sequence_of(c: LongTailConfig) -> SequenceNovelty | None:
    """The sequence novelty `c` asks for; None when `sequence_span` is 0."""
    if not c.sequence_span:
        return None
    return SequenceNovelty(
        c.sequence_order, c.sequence_counters, c.sequence_context, c.sequence_span
    )


class LongTailDetector:
    """Jump, held, routine and level views against short and long memory,
    raised by sequence novelty.

    Per-series state with the defaults is about 33 KB pickled and 38 KB in
    memory once every window is full: per view a short window of 500 32-bit
    floats (kept twice, in arrival order and sorted) and rings of 200 block
    maxima and minima, seven days of five-minute slots (8 KB), a table of
    81 16-bit step counts and 1 KB of 2-bit sequence counts.
    """

    name = "longtail"
    # Slots rather than a dict per detector: a flow may hold 100,000 of them.
    __slots__ = (
        "_days",
        "_forecast",
        "_held",
        "_jump",
        "_last",
        "_level",
        "_recent_scores",
        "_residual",
        "_residual_of",
        "_residuals",
        "_routine",
        "_seen",
        "_sequence",
        "_since_alarm",
        "_steps",
        "config",
        "direction",
    )

    def __init__(
        self, direction: str = "both", config: LongTailConfig | None = None
    ) -> None:
        self.direction = direction
        self.config = c = config or LongTailConfig()
        if c.memory not in ("both", "short", "long"):
            raise ValueError(f"memory must be both, short or long, got {c.memory!r}")
        self._level = _View(c, long=c.level)
        self._jump = _View(c, heavy_upper=c.heavy_tail)
        self._routine = _View(c)
        self._held = _View(c)
        self._residuals: list[float] = []
        self._steps = TransitionNovelty(c.novelty_cap, order=1)
        self._days = SeasonalMemory(c.slot_seconds, c.routine_days, c.timezone)
        self._sequence = _sequence_of(c)
        self._forecast: float | None = None
        # Doubles in an array: a list of Python floats takes four times more.
        self._recent_scores = array("d")
        # Values learned since the last score of at least `burst_decades`.
        self._since_alarm = c.burst
        self._seen = 0
        # (x, t, judgement, undamped score) of the last scored value, so that
        # learning the same value does not judge it twice.
        self._last: tuple[float, datetime, _Judgement, float] | None = None
        self._residual_of: tuple[float, datetime] | None = None
        self._residual: float | None = None

    def score_one(self, x: float, t: datetime) -> Score:
        """Score `x` at `t` against what was learned so far."""
        expected = self._forecast
        if not math.isfinite(x) or expected is None:
            return Score(0.0, expected, 0, self._state())
        side = (x > expected) - (x < expected)
        if self._state() == "warming_up":
            rough = warmup_score(self._level.short, x, self.direction)
            return Score(rough, expected, side, "warming_up")

        judgement = self._judge(x, t)
        value = self._calibrate(judgement.decades)
        self._last = (x, t, judgement, value)
        return Score(self._damped(value), expected, side, "ready")

    def learn_one(self, x: float, t: datetime) -> None:
        """Learn `x` at `t`; non-finite values are ignored."""
        if not math.isfinite(x):
            return
        judgement, value = self._judged(x, t)
        c = self.config
        if self._state() == "ready":
            self._note_score(value)
        if c.novelty_margin > 0:
            self._steps.add(judgement.step)

        if self._sequence is not None:
            self._sequence.add(self._symbol(x, judgement.step))

        explained = judgement.routine < c.explain
        clip = judgement.uncapped >= c.gate_decades and not explained
        self._learn_value(x, t, clip)

    # judging ---------------------------------------------------------------

    def _state(self) -> DetectorState:
        return "ready" if self._seen >= self.config.warmup else "warming_up"

    def _judge(self, x: float, t: datetime) -> _Judgement:
        """The largest surprise of the views, on the side(s) that matter.

        The novelty cap applies to the views that look at the value against
        its recent past (jump, held, level), whose steps the table counts;
        the routine view judges against other days and is not capped.
        """
        c = self.config
        floor = self._floor()
        recent = routine = 0.0
        routine_both = math.inf
        step = 0
        for view, v in self._views(x, t):
            up, down = view.decades(v, floor, c.memory)
            if view is self._routine:
                routine, routine_both = self._sided(up, down), max(up, down)
                continue
            recent = max(recent, self._sided(up, down))
            if view is self._jump:
                step = self._steps.level(up, down)

        capped = recent
        if c.novelty_margin > 0:
            capped = min(recent, self._steps.decades(step) + c.novelty_margin)
        decades = max(capped, routine)
        decades += self._sequence_decades(x, step, decades)
        return _Judgement(decades, max(recent, routine), routine_both, step)

    def _sequence_decades(self, x: float, step: int, decades: float) -> float:
        """Decades added for a burst of novel symbols, once a view sees some."""
        c = self.config
        if self._sequence is None or decades < c.sequence_gate:
            return 0.0
        novel = self._sequence.recent_novel(self._symbol(x, step))
        if novel < c.sequence_novel:
            return 0.0
        return c.sequence_decades * (novel - c.sequence_novel + 1)

    def _symbol(self, x: float, step: int) -> int:
        # Ranked among the level view's recent values before `x` joins them.
        return symbol(self._level.short.rank(x), step)

    def _sided(self, up: float, down: float) -> float:
        """The surprise on the side(s) of the baseline that matter."""
        return max(
            up if self.direction != "down" else 0.0,
            down if self.direction != "up" else 0.0,
        )

    def _views(self, x: float, t: datetime) -> list[tuple[_View, float]]:
        """(view, its value for `x`) of each view that is ready to judge."""
        c = self.config
        views: list[tuple[_View, float]] = []
        if c.level:
            views.append((self._level, x))
        if self._forecast is None:
            return views
        r = x - self._forecast
        if c.jump:
            views.append((self._jump, r))
        if c.sustain > 1 and len(self._held.short) >= c.warmup:
            views.append((self._held, self._held_residual(r)))
        residual = self._routine_residual(x, t)
        if residual is not None and len(self._routine.short) >= c.warmup:
            views.append((self._routine, residual))
        return views

    def _held_residual(self, r: float) -> float:
        return held_residual([*self._residuals[-(self.config.sustain - 1) :], r])

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
        """`value`, damped when it adds no new detection: within a burst
        after an alarm, or no higher than the recent peak."""
        c = self.config
        if self._since_alarm < c.burst:
            return value * c.damp
        if c.refractory and value <= max(self._recent_scores, default=0.0):
            return value * c.damp
        return value

    def _note_score(self, value: float) -> None:
        """Remember an undamped score for the damping of later ones."""
        c = self.config
        if c.refractory:
            self._recent_scores.append(value)
            del self._recent_scores[: -c.refractory]
        if value >= self._calibrate(c.burst_decades):
            self._since_alarm = 0
        elif self._since_alarm < c.burst:
            self._since_alarm += 1

    def _judged(self, x: float, t: datetime) -> tuple[_Judgement, float]:
        last = self._last
        if last is not None and last[0] == x and last[1] == t:
            return last[2], last[3]
        if self._state() == "warming_up":
            return _QUIET, 0.0
        judgement = self._judge(x, t)
        return judgement, self._calibrate(judgement.decades)

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
        self._learn_held(r, floor, clip)
        self._level.add(x, floor, clip)
        self._seen += 1
        if clip:
            r = self._jump.short.clip(r, floor)
        self._forecast += c.forecast_alpha * r

    def _learn_held(self, r: float, floor: float, clip: bool) -> None:
        # Raw residuals: a run of anomalies learned clipped still reads as a run.
        keep = self.config.sustain - 1
        if keep < 1:
            return
        self._held.add(self._held_residual(r), floor, clip)
        self._residuals.append(r)
        del self._residuals[:-keep]
