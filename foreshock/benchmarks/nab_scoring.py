"""The scoring method of the Numenta Anomaly Benchmark, written from its paper.

Lavin & Ahmad, "Evaluating real-time anomaly detection algorithms - the
Numenta Anomaly Benchmark" (arXiv:1510.03336), define the score:

- the first 15% of each series (at most 750 rows) is a probation period and
  is not scored;
- inside an anomaly window only the earliest detection counts; it earns
  `tp * sigma(y) / sigma(-1)` where `y` runs from -1 at the window's left edge
  towards 0 at its right edge and `sigma(y) = 2 / (1 + e^(5y)) - 1`;
- a window without a detection costs `fn`;
- a detection outside every window costs `fp`, scaled by `sigma(d)` when it
  follows a window, `d` being its distance past that window in window widths;
- one threshold per profile is chosen to maximise the total over the corpus,
  and the total is normalised between the null detector (0) and a perfect
  one (100).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "CostProfile",
    "FileOutcome",
    "LabelledSeries",
    "best_threshold",
    "normalised_score",
    "probation_rows",
    "scaled_sigmoid",
    "score_file",
]

_PROBATION_FRACTION = 0.15
_PROBATION_CAP = 750
# Three window widths past a window a false positive costs its full weight.
_FULL_COST_DISTANCE = 3.0


@dataclass(frozen=True, slots=True)
class CostProfile:
    """The weights of one application profile."""

    tp: float
    fp: float
    fn: float


@dataclass(frozen=True, slots=True)
class LabelledSeries:
    """One series' length and its anomaly windows as inclusive row ranges."""

    name: str
    rows: int
    windows: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """The score of one series at one threshold, with its row counts.

    `row_scores` holds each row's share of `score`: a window's reward (or
    its miss cost) sits on the window's first row, a false positive's cost on
    its own row.
    """

    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    row_scores: tuple[float, ...]


def scaled_sigmoid(y: float) -> float:
    """`2 / (1 + e^(5y)) - 1`, held at -1 from three widths on."""
    if y > _FULL_COST_DISTANCE:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def probation_rows(rows: int) -> int:
    """How many leading rows of a series of `rows` rows are not scored."""
    return min(math.floor(_PROBATION_FRACTION * rows), _PROBATION_CAP)


def _row_weights(
    series: LabelledSeries, profile: CostProfile
) -> list[tuple[int, float]]:
    """Per row: (window id or -1, reward if first detection / cost if FP)."""
    weights: list[tuple[int, float]] = []
    edge = scaled_sigmoid(-1.0)
    previous: tuple[int, int] | None = None
    bounds = list(series.windows)
    current = 0
    for i in range(series.rows):
        while current < len(bounds) and bounds[current][1] < i:
            previous = bounds[current]
            current += 1
        if current < len(bounds) and bounds[current][0] <= i:
            left, right = bounds[current]
            y = -(right - i + 1) / (right - left + 1)
            weights.append((current, profile.tp * scaled_sigmoid(y) / edge))
        elif previous is None:
            weights.append((-1, -profile.fp))
        else:
            left, right = previous
            d = (i - right) / (right - left)
            weights.append((-1, profile.fp * scaled_sigmoid(d)))
    return weights


def score_file(
    series: LabelledSeries,
    scores: Sequence[float],
    threshold: float,
    profile: CostProfile,
) -> FileOutcome:
    """Score one series' detector output at `threshold` (detect when >=)."""
    if len(scores) != series.rows:
        raise ValueError(
            f"{series.name!r} has {series.rows} rows but {len(scores)} scores"
        )
    start = probation_rows(series.rows)
    row_scores = [0.0] * series.rows
    counts = {"tp": 0, "tn": 0, "fp": 0, "fn": 0}
    earned: dict[int, float] = {}
    for i, (window, weight) in enumerate(_row_weights(series, profile)):
        if i < start:
            continue
        detected = scores[i] >= threshold
        if window >= 0:
            key = "tp" if detected else "fn"
            if detected and window not in earned:
                earned[window] = weight
        else:
            key = "fp" if detected else "tn"
            if detected:
                row_scores[i] = weight
        counts[key] += 1
    for window, (left, _right) in enumerate(series.windows):
        row_scores[left] = earned.get(window, -profile.fn)
    return FileOutcome(math.fsum(row_scores), row_scores=tuple(row_scores), **counts)


def best_threshold(
    corpus: Iterable[tuple[LabelledSeries, Sequence[float]]],
    profile: CostProfile,
) -> tuple[float, float]:
    """The threshold that maximises the corpus total, and that raw total.

    Every distinct score is tried, from the highest down: lowering the
    threshold past a score detects all rows with that score at once.
    """
    events: list[tuple[float, int, int, float]] = []
    windows = 0
    for series, scores in corpus:
        start = probation_rows(series.rows)
        for i, (window, weight) in enumerate(_row_weights(series, profile)):
            if i >= start:
                key = windows + window if window >= 0 else -1
                events.append((scores[i], key, i, weight))
        windows += len(series.windows)
    return _sweep(events, windows, profile)


def _sweep(
    events: list[tuple[float, int, int, float]],
    windows: int,
    profile: CostProfile,
) -> tuple[float, float]:
    events.sort(key=lambda e: -e[0])
    total = -profile.fn * windows
    best = (math.inf, total)
    earliest: dict[int, tuple[int, float]] = {}
    for k, (score, window, row, weight) in enumerate(events):
        if window < 0:
            total += weight
        elif window not in earliest or row < earliest[window][0]:
            total -= earliest[window][1] if window in earliest else -profile.fn
            earliest[window] = (row, weight)
            total += weight
        last_of_group = k + 1 == len(events) or events[k + 1][0] != score
        if last_of_group and total > best[1]:
            best = (score, total)
    return best


def normalised_score(raw: float, windows: int, profile: CostProfile) -> float:
    """Map a raw corpus total so that null scores 0 and perfect scores 100."""
    null = -windows * profile.fn
    perfect = windows * profile.tp
    if perfect == null:
        return 0.0
    return 100.0 * (raw - null) / (perfect - null)
