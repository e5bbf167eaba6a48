"""Replayable failure cases and behaviours every KPI series relies on."""

from __future__ import annotations

import json
import math
import pickle
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from models import default_detector
from models.base import Detector, Score
from models.ensemble import EnsembleConfig, EnsembleDetector

CASES = Path(__file__).resolve().parents[3] / "shared" / "cases"
THRESHOLD = 0.5
START = datetime(2025, 3, 4, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

needs_cases = pytest.mark.skipif(not CASES.is_dir(), reason="shared cases absent")


def _rows(pattern: str) -> list[dict[str, object]]:
    path = next(CASES.glob(pattern))
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _time(row: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(row["ts"]).replace("Z", "+00:00"))


def _feed(detector: Detector, points: list[tuple[datetime, float]]) -> list[Score]:
    scores = []
    for t, x in points:
        scores.append(detector.score_one(x, t))
        detector.learn_one(x, t)
    return scores


def _minutes(values: list[float]) -> list[tuple[datetime, float]]:
    return [(START + i * MINUTE, x) for i, x in enumerate(values)]


@needs_cases
def test_c13_guarded_regression_is_flagged_and_baseline_holds() -> None:
    rows = _rows("C13-*.jsonl")
    # The flow's plausibility guard drops windows of fewer than 5 beacons.
    kept = [(i, r) for i, r in enumerate(rows) if int(str(r["beacons"])) >= 5]
    points = [(_time(r), float(str(r["lcp_p75_ms"]))) for _, r in kept]

    scores = dict(
        zip((i for i, _ in kept), _feed(default_detector("up"), points), strict=True)
    )

    assert 300 not in scores
    assert scores[450].value >= THRESHOLD
    assert all(scores[i].side == 1 for i in range(450, 470))
    assert max(s.value for i, s in scores.items() if 60 <= i < 450) < THRESHOLD


@needs_cases
def test_c13_absurd_value_does_not_poison_the_baseline() -> None:
    rows = _rows("C13-*.jsonl")
    points = [(_time(r), float(str(r["lcp_p75_ms"]))) for r in rows]

    scores = _feed(default_detector("up"), points)

    assert scores[300].value >= THRESHOLD
    normal = sorted(float(str(r["lcp_p75_ms"])) for r in rows[:300])
    assert scores[449].expected is not None
    assert scores[449].expected < 2 * normal[len(normal) // 2]


@needs_cases
def test_c14_cold_start_warms_up_then_pages_by_row_42() -> None:
    rows = _rows("C14-*.jsonl")
    points = [(_time(r), float(str(r["latency_p95_ms"]))) for r in rows]

    scores = _feed(default_detector("up"), points)

    assert scores[0].state == "warming_up"
    assert all(s.state == "warming_up" for s in scores[:29])
    assert any(s.value >= THRESHOLD for s in scores[40:43])


def test_warm_up_fallback_rule_flags_a_tripling() -> None:
    # Twenty windows between 295 and 310 ms: a median of 300, so 950 ms is
    # (950 - 310) / 300 = 2.1 units of level above the highest value seen
    # (score 1), and 600 ms is 0.97 units (score 0.48, below the threshold).
    detector = default_detector("up")
    _feed(detector, _minutes([300.0, 310.0, 295.0, 305.0, 300.0] * 4))

    tripled = detector.score_one(950.0, START + 30 * MINUTE)
    doubled = detector.score_one(600.0, START + 30 * MINUTE)

    assert tripled.state == "warming_up"
    assert tripled.value >= THRESHOLD
    assert tripled.side == 1
    assert doubled.value == pytest.approx((600 - 310) / 300 / 2)


def test_warm_up_fallback_rule_is_silent_on_too_little_history() -> None:
    # Nineteen quiet windows of zero errors, then one error in 45 requests:
    # too little is known to wake anyone.
    detector = default_detector("up")
    _feed(detector, _minutes([0.0] * 19))

    assert detector.score_one(1 / 45, START + 19 * MINUTE).value == 0.0


@needs_cases
def test_c14_snapshot_restore_continues_without_rewarming() -> None:
    rows = _rows("C14-*.jsonl")
    points = [(_time(r), float(str(r["latency_p95_ms"]))) for r in rows]
    detector = default_detector("up")
    _feed(detector, points[:40])

    restored: Detector = pickle.loads(pickle.dumps(detector))

    assert _feed(restored, points[40:]) == _feed(detector, points[40:])
    assert restored.score_one(300.0, points[-1][0]).state == "ready"


def test_c15_nan_inf_zero_and_constant_keep_scores_finite() -> None:
    values = [2.0] * 60 + [math.nan, math.inf, 0.0, -math.inf] + [2.0] * 20
    detector = default_detector()

    scores = _feed(detector, _minutes(values))

    assert all(math.isfinite(s.value) and 0.0 <= s.value <= 1.0 for s in scores)
    assert [s.value for s in scores[30:60]] == [0.0] * 30
    assert max(s.value for s in scores[64:]) < THRESHOLD


@needs_cases
def test_c17_local_time_weekly_season_flags_only_holidays() -> None:
    calendar = json.loads((CASES / "C17-calendar.json").read_text())
    rows = _rows("C17-*.kpi.jsonl")
    points = [(_time(r), float(str(r["page_views"]))) for r in rows]

    local = _flags(points, calendar["timezone"])
    naive = _flags(points, "UTC")

    learnt = "2025-03-24"
    holidays = set(calendar["public_holidays"])
    assert [d for d in local if d >= learnt and d not in holidays] == []
    assert [d for d in naive if "2025-03-30" <= d <= "2025-04-05"] != []


def _flags(points: list[tuple[datetime, float]], zone: str) -> list[str]:
    config = EnsembleConfig(season_period="week", season_slots=168, timezone=zone)
    scores = _feed(EnsembleDetector("both", config), points)
    return [
        t.astimezone(ZoneInfo(zone)).date().isoformat()
        for (t, _), s in zip(points, scores, strict=True)
        if s.value >= THRESHOLD and s.state == "ready"
    ]


def _noisy(n: int, level: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0, 2) for _ in range(n)]


@pytest.mark.parametrize(
    ("direction", "jump", "flagged"),
    [
        ("up", 40.0, True),
        ("up", -40.0, False),
        ("down", -40.0, True),
        ("down", 40.0, False),
        ("both", 40.0, True),
        ("both", -40.0, True),
    ],
)
def test_direction_decides_which_side_scores(
    direction: str, jump: float, flagged: bool
) -> None:
    detector = default_detector(direction)
    _feed(detector, _minutes(_noisy(300, 100.0, 7)))

    score = detector.score_one(100.0 + jump, START + 300 * MINUTE)

    assert (score.value >= THRESHOLD) is flagged
    assert score.side == (1 if jump > 0 else -1)


def test_level_shift_is_flagged_then_learned() -> None:
    values = _noisy(400, 100.0, 8) + _noisy(600, 160.0, 9)

    scores = _feed(default_detector(), _minutes(values))

    assert max(s.value for s in scores[400:405]) >= THRESHOLD
    assert max(s.value for s in scores[800:]) < THRESHOLD
    assert scores[-1].expected is not None and abs(scores[-1].expected - 160) < 10


def test_spikes_do_not_drag_the_baseline() -> None:
    values = _noisy(400, 100.0, 10)
    for i in range(300, 400, 10):
        values[i] = 10_000.0

    scores = _feed(default_detector(), _minutes(values))

    assert scores[-1].expected is not None and abs(scores[-1].expected - 100) < 5
    assert scores[300].value >= THRESHOLD
