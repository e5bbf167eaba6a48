"""The ensemble's run view: a lasting drop from a ceiling stands out.

The series below sit at 100 with an isolated dip to 99 every tenth window,
like an availability that loses a few requests now and then, and then drop
to 98 for two windows. Only the
level view and the run view judge (no forecast jump, no season), so every
expected score is worked out by hand from ranks:

- a tail of `n` values with `k` at or below `x` gives `-log10((k+1)/(n+1))`
  decades; below the window's minimum it gives `log10(n+1)` plus the
  distance in tail lengths over ln 10, the length never under a thousandth
  of the median (0.1 here);
- decades `d` map to the score `1 - 2^(-d/3)`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from models.ensemble import EnsembleConfig, EnsembleDetector

START = datetime(2025, 3, 4, tzinfo=UTC)
STEP = timedelta(minutes=5)
HISTORY = 200


def _score(decades: float) -> float:
    return 1.0 - math.pow(2.0, -decades / 3.0)


def _detector(run: bool) -> EnsembleDetector:
    config = EnsembleConfig(jump=False, season=False, refractory=0, run=run)
    return EnsembleDetector("down", config)


def _history(usual: list[float]) -> list[float]:
    """`usual` repeated, with a dip to 99 at every index ending in 4."""
    return [99.0 if i % 10 == 4 else usual[i % len(usual)] for i in range(HISTORY)]


def _scores_of_two_dips(
    detector: EnsembleDetector, history: list[float]
) -> list[float]:
    values = [*history, 98.0, 98.0]
    scores = []
    for i, x in enumerate(values):
        t = START + i * STEP
        scores.append(detector.score_one(x, t).value)
        detector.learn_one(x, t)
    return scores[-2:]


def test_second_low_window_at_the_ceiling_is_judged_as_a_run() -> None:
    first, second = _scores_of_two_dips(_detector(run=True), _history([100.0]))

    # First 98: below all 200 values; the lowest 20 (all 99) lie 1.0 under
    # the next one, the tail length. Its mean with the 100 before (99) is
    # no deeper than the values' 1 % quantile (99): no run yet.
    level = math.log10(201) + 1.0 / 1.0 / math.log(10)
    assert first == pytest.approx(_score(level), abs=1e-6)
    assert first == pytest.approx(0.4687, abs=1e-4)
    # Second 98: the mean 98 lies one unit below the lowest of the last 100
    # means (99); their lowest ten (99 and nine 99.5) give a tail length of
    # 0.05, held to the floor 0.1.
    run = math.log10(101) + 1.0 / 0.1 / math.log(10)
    assert second == pytest.approx(_score(run), abs=1e-6)
    assert second == pytest.approx(0.7693, abs=1e-4)


def test_without_the_run_view_a_second_dip_stays_ordinary() -> None:
    _, second = _scores_of_two_dips(_detector(run=False), _history([100.0]))

    # One of 201 values is at or below 98 (level view).
    assert second == pytest.approx(_score(-math.log10(2 / 202)), abs=1e-6)
    assert second == pytest.approx(0.3707, abs=1e-4)


def test_run_view_is_off_for_a_series_away_from_its_ceiling() -> None:
    # The median (100) is below the maximum (101): no ceiling to fall from,
    # so the second dip is judged by the level view alone.
    history = _history([100.0, 101.0])

    _, second = _scores_of_two_dips(_detector(run=True), history)

    assert second == pytest.approx(_score(-math.log10(2 / 202)), abs=1e-6)


def test_snapshot_without_run_state_resumes_and_rebuilds_it() -> None:
    detector = _detector(run=True)
    _scores_of_two_dips(detector, _history([100.0]))
    state = dict(detector.__dict__)
    del state["_runs"], state["_previous"]
    resumed = EnsembleDetector.__new__(EnsembleDetector)

    resumed.__setstate__(state)
    t = START + (HISTORY + 2) * STEP
    resumed.learn_one(98.0, t)
    resumed.learn_one(98.0, t + STEP)

    # The run window starts empty: one mean (98) after the two values.
    assert len(resumed._runs) == 1
    assert resumed._runs.quantile(0.0) == 98.0
