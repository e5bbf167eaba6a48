"""Damping of a rising incident after its first alarm, checked by hand."""

from __future__ import annotations

import math
import pickle
import random
from datetime import UTC, datetime, timedelta

import pytest

from models.longtail import LongTailConfig, LongTailDetector

_START = datetime(2025, 3, 4, tzinfo=UTC)
_CALM = 600
# A spike, then higher values of the same incident.
_RISING = [150.0, 200.0, 250.0]
# The refractory is off, so that only the burst damps.
_ON = LongTailConfig(routine=False, refractory=0)
_OFF = LongTailConfig(routine=False, refractory=0, burst=0)
_WARMUP = 30


def _series(after: int, final: float) -> list[float]:
    """Calm noise around 100, a rising incident, `after` calm values, then
    one value of `final`."""
    rng = random.Random(7)
    calm = [100.0 + rng.uniform(-1.0, 1.0) for _ in range(_CALM + after)]
    return [*calm[:_CALM], *_RISING, *calm[_CALM:], final]


def _scores(config: LongTailConfig, values: list[float]) -> list[float]:
    detector = LongTailDetector(config=config)
    scores = []
    for i, x in enumerate(values):
        t = _START + i * timedelta(minutes=5)
        scores.append(detector.score_one(x, t).value)
        detector.learn_one(x, t)
    return scores


def _pair(after: int, final: float) -> tuple[list[float], list[float]]:
    values = _series(after, final)
    on = _scores(_ON, values)
    off = _scores(_OFF, values)
    return on, off


def test_scores_right_after_an_alarm_are_damped() -> None:
    on, off = _pair(after=5, final=400.0)
    first, second, third = _CALM, _CALM + 1, _CALM + 2

    # The spike is an alarm: at least 4 decades, 1 - 2^(-4/3) = 0.603.
    assert off[first] >= 0.603
    assert off[second] > 0.3
    # The alarm stands and the values after it are damped tenfold (the
    # judgement itself is the same: damping does not change learning).
    assert on[first] == off[first]
    assert on[second] == pytest.approx(0.1 * off[second])
    assert on[third] == pytest.approx(0.1 * off[third])
    # 400 comes 8 values after the spike, still inside the burst of 20.
    assert on[-1] == pytest.approx(0.1 * off[-1])


def test_damped_exactly_within_twenty_values_after_any_alarm() -> None:
    on, off = _pair(after=30, final=400.0)
    # Without refractory or burst the scores are undamped; values from the
    # 30th on are judged (the warm-up's rough scores are no alarms).
    alarms = [j for j, v in enumerate(off) if j >= _WARMUP and v >= 0.603]
    assert _CALM in alarms

    for i, v in enumerate(off):
        damped = any(i - 20 <= j < i for j in alarms)
        assert on[i] == pytest.approx(0.1 * v if damped else v), i


def test_the_burst_ends_twenty_values_after_the_alarm() -> None:
    # Only the spike is an alarm (200 and 250 stay below 4 decades). With 16
    # calm values after the incident, 400 is the 19th value after the spike
    # (damped); with 17, the 20th (damped); with 18, the 21st (in full).
    for after, damped in ((16, True), (17, True), (18, False)):
        on, off = _pair(after=after, final=400.0)
        assert off[_CALM + 1] < 0.603
        assert off[_CALM + 2] < 0.603
        assert off[-1] > 0.5
        expected = 0.1 * off[-1] if damped else off[-1]
        assert on[-1] == pytest.approx(expected), after


def test_scores_below_the_burst_level_start_no_burst() -> None:
    values = _series(after=5, final=400.0)
    # At 1e9 decades no score is an alarm: the same as no burst at all.
    never = _scores(
        LongTailConfig(routine=False, refractory=0, burst_decades=1e9), values
    )
    off = _scores(_OFF, values)

    assert never == off


def test_burst_state_survives_pickling_and_stays_finite() -> None:
    values = _series(after=5, final=math.inf)
    detector = LongTailDetector(config=_ON)
    for i, x in enumerate(values[: _CALM + 1]):
        t = _START + i * timedelta(minutes=5)
        detector.score_one(x, t)
        detector.learn_one(x, t)
    copy = pickle.loads(pickle.dumps(detector))

    t = _START + (_CALM + 1) * timedelta(minutes=5)
    assert copy.score_one(200.0, t) == detector.score_one(200.0, t)
    assert math.isfinite(copy.score_one(math.inf, t).value)
