"""The NAB scorer against hand-computed cases and published NAB output."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from foreshock.benchmarks.nab import _labelled, _load_profiles, _parse_time, _Run
from foreshock.benchmarks.nab_scoring import (
    CostProfile,
    LabelledSeries,
    best_threshold,
    normalised_score,
    probation_rows,
    scaled_sigmoid,
    score_file,
)

NAB = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab"
STANDARD = CostProfile(tp=1.0, fp=0.11, fn=1.0)
# 20 rows, probation 3 rows, one window over rows 10..14 (width 5).
SERIES = LabelledSeries("toy.csv", 20, ((10, 14),))


def _scores(*detected: int) -> list[float]:
    return [1.0 if i in detected else 0.0 for i in range(20)]


def test_probation_is_fifteen_percent_capped_at_750() -> None:
    assert [probation_rows(n) for n in (20, 1243, 4032, 10_000)] == [3, 186, 604, 750]


def test_detection_at_the_left_edge_earns_the_full_weight() -> None:
    out = score_file(SERIES, _scores(10), 0.5, STANDARD)

    assert out.score == pytest.approx(1.0)
    assert (out.tp, out.tn, out.fp, out.fn) == (1, 12, 0, 4)


def test_only_the_earliest_detection_of_a_window_counts() -> None:
    # Row 12: y = -(14 - 12 + 1) / 5 = -0.6.
    edge = 2 / (1 + math.exp(-5)) - 1  # 0.9866143
    reward = (2 / (1 + math.exp(-3)) - 1) / edge  # 0.9051483 / 0.9866143

    out = score_file(SERIES, _scores(12, 13, 14), 0.5, STANDARD)

    assert out.score == pytest.approx(0.9174287, abs=1e-6)
    assert out.score == pytest.approx(reward)
    assert out.row_scores[10] == pytest.approx(reward)


def test_false_positives_cost_fp_before_and_decay_after_a_window() -> None:
    # Row 5 precedes every window: -0.11. Row 16: d = (16 - 14) / (5 - 1) = 0.5,
    # sigma(0.5) = 2 / (1 + e^2.5) - 1 = -0.8482836, cost 0.11 * that.
    out = score_file(SERIES, _scores(5, 16), 0.5, STANDARD)

    assert out.row_scores[5] == pytest.approx(-0.11)
    assert out.row_scores[16] == pytest.approx(-0.0933112, abs=1e-6)
    assert out.row_scores[10] == -1.0
    assert out.score == pytest.approx(-0.11 - 0.0933112 - 1.0, abs=1e-6)


def test_detections_in_probation_are_not_scored() -> None:
    out = score_file(SERIES, _scores(0, 1, 2), 0.5, STANDARD)

    assert (out.score, out.fp, out.tn) == (-1.0, 0, 12)


def test_sigmoid_reaches_minus_one_three_widths_on() -> None:
    assert scaled_sigmoid(3.5) == -1.0
    assert scaled_sigmoid(0.0) == 0.0


def test_best_threshold_maximises_the_corpus_total() -> None:
    # Threshold 0.9 detects row 10 only (+1); 0.5 adds an FP at row 5.
    scores = [0.0] * 20
    scores[10], scores[5] = 0.9, 0.5

    threshold, raw = best_threshold([(SERIES, scores)], STANDARD)

    assert threshold == 0.9
    assert raw == pytest.approx(1.0)


def test_normalisation_puts_null_at_zero_and_perfect_at_hundred() -> None:
    assert normalised_score(-97.0, 97, STANDARD) == 0.0
    assert normalised_score(97.0, 97, STANDARD) == 100.0
    assert normalised_score(0.0, 97, CostProfile(1.0, 0.11, 2.0)) == pytest.approx(
        100 * 194 / 291
    )


@pytest.mark.skipif(not NAB.is_dir(), reason="NAB reference data absent")
def test_reproduces_published_windowed_gaussian_rows_and_files() -> None:
    windows = json.loads((NAB / "labels" / "combined_windows.json").read_text())
    profiles = _load_profiles(NAB / "config" / "profiles.json")
    published = _published("windowedGaussian")
    checked = 0

    for path in sorted((NAB / "results" / "windowedGaussian").glob("*/*.csv")):
        key = f"{path.parent.name}/{path.name.removeprefix('windowedGaussian_')}"
        rows = list(csv.DictReader(path.open()))
        run = _Run(
            key,
            tuple(_parse_time(r["timestamp"]) for r in rows),
            tuple(float(r["anomaly_score"]) for r in rows),
        )
        series = _labelled(run, windows)
        for name, profile in profiles.items():
            ref = published[(name, key)]
            out = score_file(series, run.scores, float(ref["Threshold"]), profile)
            column = [float(r[f"S(t)_{name}"]) for r in rows]

            assert out.row_scores == pytest.approx(column, abs=1e-6)
            assert out.score == pytest.approx(float(ref["Score"]), abs=1e-6)
            counts = [int(ref[k]) for k in ("TP", "TN", "FP", "FN")]
            assert [out.tp, out.tn, out.fp, out.fn] == counts
            checked += 1

    assert checked == 3 * 51


def _published(detector: str) -> dict[tuple[str, str], dict[str, str]]:
    table = {}
    for path in (NAB / "results" / detector).glob(f"{detector}_*_scores.csv"):
        for row in csv.DictReader(path.open()):
            table[(row["Profile"], row["File"])] = row
    return table
