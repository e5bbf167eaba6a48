"""River's anomaly detectors on the flow's scale: warmed up, one-sided,
restorable, and named clearly when misnamed."""

import math
import pickle
import random
import re
from datetime import UTC, datetime, timedelta

import pytest

from models import make_detector
from models.base import Detector, Score

START = datetime(2025, 3, 4, tzinfo=UTC)
THRESHOLD = 0.7


def _feed(detector: Detector, values: list[float], offset: int = 0) -> list[Score]:
    scores = []
    for i, x in enumerate(values, start=offset):
        t = START + timedelta(minutes=i)
        scores.append(detector.score_one(x, t))
        detector.learn_one(x, t)
    return scores


def _noise(n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [100 + rng.gauss(0, 5) for _ in range(n)]


def test_a_spike_of_sixteen_deviations_is_anomalous_and_the_noise_is_not() -> None:
    detector = make_detector("river:StandardAbsoluteDeviation", "up")
    normal = _feed(detector, _noise(600))

    spike = detector.score_one(180.0, START + timedelta(minutes=600))

    assert spike.state == "ready"
    assert spike.value >= THRESHOLD
    assert spike.side == 1
    assert max(s.value for s in normal[100:]) < THRESHOLD


def test_a_gaussians_score_is_read_in_decades_of_its_tail_probability() -> None:
    # Sixteen deviations out: a tail probability far below any seen in the
    # noise, though the raw score (one minus it) differs from the noise's
    # highest only in its last digits.
    detector = make_detector("river:GaussianScorer", "up")
    _feed(detector, _noise(600))

    spike = detector.score_one(180.0, START + timedelta(minutes=600))

    assert spike.value >= THRESHOLD


def test_the_harmless_side_scores_zero() -> None:
    detector = make_detector("river:StandardAbsoluteDeviation", "up")
    _feed(detector, _noise(600))

    drop = detector.score_one(20.0, START + timedelta(minutes=600))

    assert (drop.value, drop.side) == (0.0, -1)


def test_the_models_own_learning_period_is_added_to_the_warm_up() -> None:
    # Half-space trees score 0 until their first window of 50 values is
    # full; the adapter then needs 30 scores of its own before it judges.
    detector = make_detector("river:HalfSpaceTrees,window_size=50,seed=3")

    states = [s.state for s in _feed(detector, _noise(120))]

    assert states[79] == "warming_up"
    assert states[80] == "ready"
    assert detector.name == "river:HalfSpaceTrees"


def test_a_restored_detector_scores_as_the_original() -> None:
    detector = make_detector("river:HalfSpaceTrees,window_size=50,seed=3")
    _feed(detector, _noise(200))
    restored: Detector = pickle.loads(pickle.dumps(detector))

    later = _noise(100, seed=2)

    assert _feed(restored, later, 200) == _feed(detector, later, 200)


def test_values_that_are_not_finite_are_neither_scored_nor_learned() -> None:
    detector = make_detector("river:GaussianScorer")
    _feed(detector, _noise(300))
    before = pickle.dumps(detector)

    scores = _feed(detector, [math.nan, math.inf], 300)

    assert [s.value for s in scores] == [0.0, 0.0]
    assert pickle.dumps(detector) == before


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("river:HalfSpaceTree", "no River anomaly detector 'HalfSpaceTree'; choose"),
        (
            "river:PredictiveAnomalyDetection",
            "no River anomaly detector 'PredictiveAnomalyDetection'",
        ),
        ("river:HalfSpaceTrees,depth", "write River arguments as name=value"),
        ("river:HalfSpaceTrees,depth=3", "River's HalfSpaceTrees refuses {'depth'"),
        (
            "river:HalfSpaceTrees,window_size=1OO",
            "write River argument 'window_size' as a number, True, False, None "
            "or a quoted string, not '1OO'",
        ),
        ("river:HalfSpaceTrees,limits={}", "not '{}'"),
    ],
)
def test_a_wrong_river_name_or_argument_says_what_is_known(
    name: str, said: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(said)):
        make_detector(name)
