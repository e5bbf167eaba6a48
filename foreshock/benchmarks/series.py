"""Memory and scoring time of many live KPI series, each with its detector.

The flow keeps one detector per series, so the series a process can hold
is bounded by detector memory, and a window's scoring must finish before the
next window closes. This benchmark builds `--series` detectors of the flow's
configured kind in steady state, then scores and learns one window of every
series through `flows.steps.score_window`, as the detect step does.

Learning hundreds of windows for each of 100,000 series would take hours,
so a few detectors (one per direction) learn `--history` windows of a noisy
daily pattern, and every series starts from a copy of one of them (a pickle
round trip, as a restore from a snapshot would make). Their memory is then
that of series with a full history.

Usage: `python -m foreshock.benchmarks.series --json`.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import random
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flows.pipeline import FlowConfig
from flows.steps import score_window
from foreshock.benchmarks.throughput import machine
from foreshock.layers import Layer
from foreshock.records import KpiRecord
from models import Detector

__all__ = ["main", "measure_series"]

_DIRECTIONS = ("up", "down", "both")
_START = datetime(2025, 3, 4, tzinfo=UTC)


def _rss_bytes() -> int:
    # Resident memory now (not the peak): the third field of statm, in pages.
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


def _value(rng: random.Random, minute: int) -> float:
    daily = math.sin(2 * math.pi * (minute % 1440) / 1440)
    return 100.0 + 30.0 * daily + rng.gauss(0.0, 5.0)


def _warm(config: FlowConfig, history: int, window: timedelta) -> list[bytes]:
    """One pickled detector per direction, after `history` windows."""
    rng = random.Random(7)
    warm = []
    for direction in _DIRECTIONS:
        detector = config.new_detector(direction)
        for i in range(history):
            t = _START + i * window
            x = _value(rng, i)
            detector.score_one(x, t)
            detector.learn_one(x, t)
        warm.append(pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL))
    return warm


def _record(series: int, direction: str, start: datetime, value: float) -> KpiRecord:
    return KpiRecord(
        layer=Layer.BACKEND,
        service=f"svc-{series // 10:05d}",
        kpi=f"kpi_{series % 10}",
        dimension="speed",
        direction=direction,  # type: ignore[arg-type]
        unit="ms",
        window_start=start,
        window_end=start + timedelta(minutes=1),
        value=value,
        state="ok",
    )


def measure_series(series: int, history: int, config: FlowConfig) -> dict[str, Any]:
    """Build `series` warm detectors, score one window of each, report."""
    window = timedelta(seconds=config.window.length_s)
    warm = _warm(config, history, window)

    before = _rss_bytes()
    detectors: list[Detector] = [
        pickle.loads(warm[i % len(warm)]) for i in range(series)
    ]
    held = _rss_bytes() - before

    start = _START + history * window
    rng = random.Random(11)
    records = [
        _record(i, _DIRECTIONS[i % len(warm)], start, _value(rng, history))
        for i in range(series)
    ]
    wall, cpu = time.perf_counter(), time.process_time()
    anomalous = sum(
        score_window(d, config.threshold, r).anomalous
        for d, r in zip(detectors, records, strict=True)
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    return {
        "series": series,
        "detector": config.detector,
        "history_windows": history,
        "rss_mb": round(_rss_bytes() / 2**20, 1),
        "detectors_mb": round(held / 2**20, 1),
        "bytes_per_series": round(held / series),
        "snapshot_bytes_per_series": round(sum(map(len, warm)) / len(warm)),
        "score_window_s": round(wall, 2),
        "score_window_cpu_s": round(cpu, 2),
        "window_s": config.window.length_s,
        "fits_in_window": wall < config.window.length_s,
        "anomalous": anomalous,
    }


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command line: measure, print the figures."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m foreshock.benchmarks.series",
        description=(__doc__ or "").splitlines()[0],
    )
    parser.add_argument(
        "--series", type=int, default=100_000, help="live KPI series to keep"
    )
    parser.add_argument(
        "--history", type=int, default=1500, help="windows each detector learned"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)

    result = measure_series(args.series, args.history, FlowConfig())
    result["machine"] = machine()
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}  {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
