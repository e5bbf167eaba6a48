"""Run the whole flow over labelled fault-injection data and score its incidents.

Each case (for Nezha, a day) is replayed in-process through the main flow,
with one-minute windows aligned to the epoch and the case's call graph, and
the same parameters for every case. The incidents it publishes are then
matched to the faults injected:

- An incident is judged by the root-cause ranking of its last record
  published no later than `SETTLE_S` after it opened: what an on-call
  engineer sees once the picture settles.
- A fault is detected by the first incident that opened within
  [inject time - `BEFORE_S`, inject time + `AFTER_S`]; an incident in the
  windows of several faults counts for the nearest one only.
- top1 / top3 are the fractions of all faults whose incident ranks the
  faulty service first / among its first three root causes.
- An incident more than `AFTER_S` from every fault is a false incident.

Usage: `python -m foreshock.benchmarks.rca --dataset nezha --data DIR --json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from bytewax.testing import TestingSink, run_main

from connectors.iterables import IterableSource
from connectors.messages import RawBatch
from connectors.nezha import load_day
from flows.pipeline import FlowConfig, Record, build_flow
from foreshock.records import Incident
from foreshock.topology import Topology
from foreshock.windows import EPOCH, WindowSpec

__all__ = [
    "AFTER_S",
    "BEFORE_S",
    "DATASETS",
    "SETTLE_S",
    "Case",
    "Detection",
    "Fault",
    "Score",
    "main",
    "run_rca",
    "score",
    "settle",
    "summarise",
]

logger = logging.getLogger(__name__)

SETTLE_S = 300.0
BEFORE_S = 60.0
AFTER_S = 600.0
_BATCH_SIZE = 2_000
_WINDOW = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected fault: when, into which service, of which type."""

    time: datetime
    service: str
    fault_type: str


@dataclass(frozen=True, slots=True)
class Case:
    """One run of the flow: its input, call graph and the faults it holds."""

    name: str
    batches: Callable[[], Iterable[RawBatch]]
    topology: Topology
    faults: list[Fault]


@dataclass(frozen=True, slots=True)
class Detection:
    """A fault and the incident that detected it, if one did."""

    fault: Fault
    incident: Incident | None

    @property
    def delay_s(self) -> float | None:
        if self.incident is None:
            return None
        return (self.incident.opened_at - self.fault.time).total_seconds()

    def ranked_within(self, top: int) -> bool:
        if self.incident is None:
            return False
        ranked = [c.service for c in self.incident.root_causes[:top]]
        return self.fault.service in ranked


@dataclass(frozen=True, slots=True)
class Score:
    """Every fault's detection and the number of false incidents."""

    detections: list[Detection]
    false_incidents: int


# -- datasets --------------------------------------------------------------------


def _nezha_cases(data: Path, day: str | None) -> list[Case]:
    root = data / "rca_data"
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if day is not None:
        folders = [p for p in folders if p.name == day]
    if not folders:
        raise FileNotFoundError(
            f"no day folder {day or '*'!r} under {root!r}: expected "
            "rca_data/<day>/metric/*.csv from the Nezha data"
        )
    return [_nezha_case(folder) for folder in folders]


def _nezha_case(folder: Path) -> Case:
    nezha = load_day(folder)
    faults = [Fault(f.time, f.service, f.fault_type) for f in nezha.faults]
    # A batch that closes several windows has their scores passed on grouped
    # by series, out of window order, and the correlator would judge each
    # window on part of its scores; one window a batch keeps live order.
    batches = partial(nezha.batches, _BATCH_SIZE, split_every=_WINDOW)
    return Case(nezha.name, batches, nezha.topology, faults)


DATASETS: dict[str, Callable[[Path, str | None], list[Case]]] = {
    "nezha": _nezha_cases,
}


# -- running -----------------------------------------------------------------------


def run_rca(dataset: str, data: Path, day: str | None = None) -> dict[str, object]:
    """Run the flow over every case of `dataset` in `data` and score it.

    `day` limits the run to one case. Returns the summary `summarise` makes,
    with the dataset's name, the number of cases and the wall-clock seconds.
    """
    began = time.perf_counter()
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(DATASETS)}")
    cases = DATASETS[dataset](data, day)

    detections: list[Detection] = []
    false_incidents = 0
    for case in cases:
        outcome = score(settle(run_case(case)), case.faults)
        detections += outcome.detections
        false_incidents += outcome.false_incidents

    summary = summarise(Score(detections, false_incidents))
    return {
        "dataset": dataset,
        "days": len(cases),
        **summary,
        "seconds": round(time.perf_counter() - began, 1),
    }


def run_case(case: Case) -> list[Incident]:
    """Every incident record the flow publishes for one case, in order."""
    logger.info("rca case start case=%s faults=%s", case.name, len(case.faults))
    out: list[Record] = []
    config = FlowConfig(
        # Each file holds one row a minute, in time order: nothing comes late.
        window=WindowSpec(_WINDOW.total_seconds(), 0.0, EPOCH),
        topology=case.topology,
    )
    flow = build_flow(IterableSource(case.batches), TestingSink(out), config)
    run_main(flow)  # type: ignore[no-untyped-call]  # bytewax's stub leaves it bare
    incidents = [r for r in out if isinstance(r, Incident)]
    logger.info("rca case done case=%s records=%s", case.name, len(incidents))
    return incidents


# -- scoring -----------------------------------------------------------------------


def settle(records: Iterable[Incident], settle_s: float = SETTLE_S) -> list[Incident]:
    """Each incident as last published within `settle_s` of opening.

    `records` are in the order they were published; the result is in the
    order the incidents opened.
    """
    settled: dict[str, Incident] = {}
    for record in records:
        horizon = record.opened_at + timedelta(seconds=settle_s)
        if record.updated_at <= horizon:
            settled[record.id] = record
    return sorted(settled.values(), key=lambda i: (i.opened_at, i.id))


def score(incidents: Sequence[Incident], faults: Sequence[Fault]) -> Score:
    """Match settled incidents to faults; count the incidents no fault explains."""
    claims: dict[int, list[Incident]] = {}
    false_incidents = 0
    for incident in incidents:
        nearest = _nearest_fault(incident.opened_at, faults)
        if nearest is not None:
            claims.setdefault(nearest, []).append(incident)
        elif _distance_s(incident.opened_at, faults) > AFTER_S:
            false_incidents += 1

    detections = [
        Detection(f, min(claims[i], key=lambda c: c.opened_at) if i in claims else None)
        for i, f in enumerate(faults)
    ]
    return Score(detections, false_incidents)


def _nearest_fault(opened: datetime, faults: Sequence[Fault]) -> int | None:
    """The index of the nearest fault whose window holds `opened`."""
    best: tuple[float, int] | None = None
    for index, fault in enumerate(faults):
        offset = (opened - fault.time).total_seconds()
        if -BEFORE_S <= offset <= AFTER_S and (best is None or abs(offset) < best[0]):
            best = (abs(offset), index)
    return None if best is None else best[1]


def _distance_s(opened: datetime, faults: Sequence[Fault]) -> float:
    return min(
        (abs((opened - f.time).total_seconds()) for f in faults), default=float("inf")
    )


def summarise(outcome: Score) -> dict[str, object]:
    """The figures of one score, overall and per fault type."""
    detections = outcome.detections
    delays = [d.delay_s for d in detections if d.delay_s is not None]
    per_type: dict[str, dict[str, object]] = {}
    for fault_type in sorted({d.fault.fault_type for d in detections}):
        mine = [d for d in detections if d.fault.fault_type == fault_type]
        per_type[fault_type] = _counts(mine)
    return {
        **_counts(detections),
        "median_delay_s": statistics.median(delays) if delays else None,
        "false_incidents": outcome.false_incidents,
        "per_type": per_type,
    }


def _counts(detections: list[Detection]) -> dict[str, object]:
    total = len(detections)
    return {
        "faults": total,
        "detected": sum(d.incident is not None for d in detections),
        "top1": _fraction(sum(d.ranked_within(1) for d in detections), total),
        "top3": _fraction(sum(d.ranked_within(3) for d in detections), total),
    }


def _fraction(part: int, whole: int) -> float:
    return round(part / whole, 3) if whole else 0.0


# -- command line --------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark and report its figures."""
    parser = argparse.ArgumentParser(
        prog="python -m foreshock.benchmarks.rca", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder")
    parser.add_argument("--day", default=None, help="run one case (day) only")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)

    result = run_rca(args.dataset, args.data, args.day)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}  {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
