"""Run Foreshock's detectors over a NAB-layout corpus and score them.

A NAB-layout folder holds `data/<category>/<file>.csv` (`timestamp,value`),
`labels/combined_windows.json` and `config/profiles.json`. Every series goes
through one detector built by the `models` package, one value at a time in
time order, with the same parameters for the whole corpus. The per-row
output follows NAB's result layout, `OUTPUT/<category>/<detector>_<file>.csv`
with `timestamp,value,anomaly_score`, and each profile's per-file outcome is
written to `OUTPUT/<detector>_<profile>_scores.csv`.

Usage: `python -m foreshock.benchmarks.nab --data DIR --output DIR --json`.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from foreshock.benchmarks.nab_scoring import (
    CostProfile,
    LabelledSeries,
    best_threshold,
    normalised_score,
    score_file,
)
from models import default_detector, make_detector

__all__ = ["PROFILES", "main", "run_nab"]

logger = logging.getLogger(__name__)

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
_DEFAULT_NAME = "foreshock"


@dataclass(frozen=True, slots=True)
class _Run:
    """One series' detector output."""

    key: str
    timestamps: tuple[datetime, ...]
    scores: tuple[float, ...]


def run_nab(data: Path, output: Path, detector: str | None = None) -> dict[str, float]:
    """Run `detector` (the default one when None) over a NAB-layout corpus.

    Returns the normalised score of each profile, with the number of files
    and windows and the wall-clock seconds the run took.
    """
    began = time.perf_counter()
    name = detector or _DEFAULT_NAME
    files = sorted((data / "data").glob("*/*.csv"))
    if not files:
        raise FileNotFoundError(
            f"no series under {data / 'data'!r}: expected data/<category>/<file>.csv"
        )
    runs = _run_all(files, output, name, detector)
    windows = json.loads((data / "labels" / "combined_windows.json").read_text())
    corpus = [(_labelled(run, windows), run.scores) for run in runs]

    profiles = _load_profiles(data / "config" / "profiles.json")
    result: dict[str, float] = {}
    for profile_name in PROFILES:
        profile = profiles[profile_name]
        result[profile_name] = _score_profile(
            corpus, profile, profile_name, output, name
        )
    result["files"] = len(corpus)
    result["windows"] = sum(len(series.windows) for series, _ in corpus)
    result["seconds"] = round(time.perf_counter() - began, 1)
    return result


def _run_all(
    files: list[Path], output: Path, name: str, detector: str | None
) -> list[_Run]:
    # Largest series first, so that two workers finish at about the same time.
    order = sorted(files, key=lambda f: -f.stat().st_size)
    workers = min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(_run_file, path, output, name, detector) for path in order
        ]
        runs = [future.result() for future in futures]
    return sorted(runs, key=lambda run: run.key)


def _run_file(path: Path, output: Path, name: str, detector: str | None) -> _Run:
    """Score then learn each value of one series, writing the per-row output."""
    model = make_detector(detector) if detector else default_detector()
    key = f"{path.parent.name}/{path.name}"
    rows = _read_series(path)
    scores: list[float] = []
    for t, x in rows:
        scores.append(model.score_one(x, t).value)
        model.learn_one(x, t)

    target = output / path.parent.name / f"{name}_{path.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["timestamp", "value", "anomaly_score"])
        for (t, x), s in zip(rows, scores, strict=True):
            writer.writerow([t.strftime("%Y-%m-%d %H:%M:%S"), repr(x), repr(s)])
    return _Run(key, tuple(t for t, _ in rows), tuple(scores))


def _read_series(path: Path) -> list[tuple[datetime, float]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return [(_parse_time(r["timestamp"]), float(r["value"])) for r in reader]


def _parse_time(text: str) -> datetime:
    # NAB's timestamps carry no zone; they are read as UTC.
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _labelled(run: _Run, windows: dict[str, list[list[str]]]) -> LabelledSeries:
    if run.key not in windows:
        logger.warning("no windows labelled series=%s; scored as anomaly-free", run.key)
    bounds = []
    for start, end in windows.get(run.key, []):
        left = bisect.bisect_left(run.timestamps, _parse_time(start))
        right = bisect.bisect_right(run.timestamps, _parse_time(end)) - 1
        bounds.append((left, right))
    return LabelledSeries(run.key, len(run.scores), tuple(bounds))


def _load_profiles(path: Path) -> dict[str, CostProfile]:
    raw = json.loads(path.read_text())
    profiles = {}
    for name, body in raw.items():
        costs = body["CostMatrix"]
        profiles[name] = CostProfile(
            tp=costs["tpWeight"], fp=costs["fpWeight"], fn=costs["fnWeight"]
        )
    return profiles


def _score_profile(
    corpus: list[tuple[LabelledSeries, tuple[float, ...]]],
    profile: CostProfile,
    profile_name: str,
    output: Path,
    name: str,
) -> float:
    threshold, raw = best_threshold(corpus, profile)
    windows = sum(len(series.windows) for series, _ in corpus)
    target = output / f"{name}_{profile_name}_scores.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["File", "Threshold", "Score", "TP", "TN", "FP", "FN"])
        for series, scores in corpus:
            out = score_file(series, scores, threshold, profile)
            writer.writerow(
                [series.name, threshold, out.score, out.tp, out.tn, out.fp, out.fn]
            )
    return round(normalised_score(raw, windows, profile), 2)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command line: run the benchmark and report its scores."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m foreshock.benchmarks.nab",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--data", type=Path, required=True, help="NAB-layout folder")
    parser.add_argument("--output", type=Path, required=True, help="results folder")
    parser.add_argument("--detector", default=None, help="detector variant name")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)

    result = run_nab(args.data, args.output, args.detector)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
