"""Run the whole flow over labelled fault-injection data and score its incidents.

Each case (for Nezha, a day; for PetShop, an issue) is replayed in-process
through the main flow, with windows as long as the data's rows, the case's
call graph, and the same parameters for every case. Cases that continue the
same history of normal operation (PetShop's) share it: the flow runs over the
history once with recovery on, and each case resumes from a copy of that
state, exactly as if the history had been replayed in front of it. The
alerts published, incidents and early warnings alike (a fault that users
barely feel is still caught when the deep stack warns of it), are then
matched to the faults; `incidents_only` gives the same figures for the
incidents alone:

- An incident is judged by the root-cause ranking of its last record
  published no later than `SETTLE_S` after it opened: what an on-call
  engineer sees once the picture settles.
- A fault is detected by the first incident that opened within
  [fault time - `BEFORE_S`, fault time + `AFTER_S`], or when none did, by
  the first early warning (a case may set its own
  bounds: a PetShop issue's are its own rows); an incident in the windows of
  several faults counts for the nearest one only.
- top1 / top3 are the fractions of all faults whose incident ranks the
  faulty service first / among its first three root causes; avg5 is the mean
  of the top-k fractions for k = 1..5.
- median_lead_s is the median lead time of the detecting incidents that
  have one: how long the deep stack was anomalous before users felt it.
- An incident more than `AFTER_S` from every fault is a false incident, and
  so is every incident opened during a shared history.

Usage: `python -m foreshock.benchmarks.rca --dataset nezha --data DIR --json`,
or `--dataset petshop --data DIR [--scenario low_traffic]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from itertools import chain
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main

from connectors.iterables import IterableSource
from connectors.messages import RawBatch
from connectors.nezha import load_day
from connectors.petshop import Case as PetShopCase
from connectors.petshop import load_scenario
from flows.pipeline import FlowConfig, Record, build_flow
from foreshock.datasets import nezha_days, petshop_scenarios
from foreshock.records import EarlyWarning, Incident
from foreshock.topology import Topology
from foreshock.windows import EPOCH, WindowSpec

__all__ = [
    "AFTER_S",
    "BEFORE_S",
    "DATASETS",
    "SETTLE_S",
    "Case",
    "Dataset",
    "Detection",
    "Fault",
    "History",
    "Score",
    "main",
    "run_forked",
    "run_rca",
    "score",
    "settle",
    "summarise",
]

logger = logging.getLogger(__name__)

# The title an early warning carries once shaped as an alert for scoring.
WARNING_TITLE = "early warning"

SETTLE_S = 300.0
BEFORE_S = 60.0
AFTER_S = 600.0
_BATCH_SIZE = 2_000
_WINDOW = timedelta(minutes=1)
# One epoch for a whole history: its state is snapshotted once, at its end.
_ONE_EPOCH = timedelta(days=3650)


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected fault: when, into which service, of which type."""

    time: datetime
    service: str
    fault_type: str


@dataclass(frozen=True, eq=False)
class History:
    """Normal operation that several cases continue; run once, then forked."""

    name: str
    batches: Callable[[], Iterable[RawBatch]]


@dataclass(frozen=True, slots=True)
class Case:
    """One run of the flow: its input, call graph and the faults it holds.

    `window` is the length of the data's rows, windows are aligned to
    `align_to`, and `match_s` bounds how long before and after a fault an
    incident may open to detect it. With a `history`, `batches` holds only
    what follows it; `group` names the case's part of the dataset in the
    summary.
    """

    name: str
    batches: Callable[[], Iterable[RawBatch]]
    topology: Topology
    faults: list[Fault]
    window: timedelta = _WINDOW
    align_to: datetime = EPOCH
    match_s: tuple[float, float] = (BEFORE_S, AFTER_S)
    history: History | None = None
    group: str = ""


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

    def __add__(self, other: Score) -> Score:
        return Score(
            self.detections + other.detections,
            self.false_incidents + other.false_incidents,
        )


@dataclass(frozen=True, slots=True)
class Dataset:
    """How to read a dataset's cases, and how its summary names them.

    `unit` is what one case is called in the summary ("days"); with `group`,
    the summary adds a breakdown by `Case.group` under `per_<group>`.
    """

    load: Callable[[Path, str | None], list[Case]]
    unit: str
    group: str | None = field(default=None)


# -- datasets --------------------------------------------------------------------


def _nezha_cases(data: Path, day: str | None) -> list[Case]:
    return [_nezha_case(folder) for folder in nezha_days(data, day)]


def _nezha_case(folder: Path) -> Case:
    nezha = load_day(folder)
    faults = [Fault(f.time, f.service, f.fault_type) for f in nezha.faults]
    # A batch that closes several windows has their scores passed on grouped
    # by series, out of window order, and the correlator would judge each
    # window on part of its scores; one window a batch keeps live order.
    batches = partial(nezha.batches, _BATCH_SIZE, split_every=_WINDOW)
    return Case(nezha.name, batches, nezha.topology, faults)


def _petshop_cases(data: Path, scenario: str | None) -> list[Case]:
    folders = petshop_scenarios(data, scenario)
    return [case for folder in folders for case in _petshop_scenario(folder)]


def _petshop_scenario(folder: Path) -> list[Case]:
    scenario = load_scenario(folder)
    if not scenario.cases:
        return []
    first = scenario.cases[0]
    window = first.history.period or first.incident.period or _WINDOW
    history = History(
        scenario.name,
        partial(first.batches, _BATCH_SIZE, split_every=window, issue=False),
    )
    align = first.history.rows[0][0] if first.history.rows else first.issue_start
    return [_petshop_case(c, history, window, align) for c in scenario.cases]


def _petshop_case(
    case: PetShopCase, history: History, window: timedelta, align: datetime
) -> Case:
    fault = Fault(case.fault.time, case.fault.root_cause, case.fault.target_metric)
    # The issue's own rows are its detection window: any incident they open.
    before = (fault.time - case.issue_start).total_seconds()
    after = (case.issue_end - fault.time).total_seconds()
    batches = partial(case.batches, _BATCH_SIZE, split_every=window, history=False)
    return Case(
        case.name,
        batches,
        case.topology,
        [fault],
        window=window,
        align_to=align,
        match_s=(before, after),
        history=history,
        group=case.scenario,
    )


DATASETS: dict[str, Dataset] = {
    "nezha": Dataset(_nezha_cases, "days"),
    "petshop": Dataset(_petshop_cases, "cases", "scenario"),
}


# -- running -----------------------------------------------------------------------


def run_rca(dataset: str, data: Path, subset: str | None = None) -> dict[str, object]:
    """Run the flow over every case of `dataset` in `data` and score it.

    `subset` limits the run to one day (Nezha) or scenario (PetShop).
    Returns the summary `summarise` makes, with the dataset's name, the
    number of cases, a breakdown by part when the dataset has parts, and the
    wall-clock seconds.
    """
    began = time.perf_counter()
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(DATASETS)}")
    spec = DATASETS[dataset]
    cases = spec.load(data, subset)

    by_group: dict[str, Score] = {}
    paged = Score([], 0)
    for group, outcome, incidents in _scores(cases):
        by_group[group] = by_group.get(group, Score([], 0)) + outcome
        paged = paged + incidents
    summary = summarise(sum(by_group.values(), Score([], 0)))
    summary["incidents_only"] = _figures(paged)
    if spec.group is not None:
        summary[f"per_{spec.group}"] = {
            group: _figures(outcome) for group, outcome in sorted(by_group.items())
        }
    return {
        "dataset": dataset,
        spec.unit: len(cases),
        **summary,
        "seconds": round(time.perf_counter() - began, 1),
    }


def _scores(cases: Sequence[Case]) -> Iterator[tuple[str, Score, Score]]:
    """Each case's score for every alert and for incidents alone, and the
    false alerts of each shared history."""
    shared: dict[History, list[Case]] = {}
    for case in cases:
        if case.history is None:
            yield case.group, *_score_case(case, run_case(case))
        else:
            shared.setdefault(case.history, []).append(case)

    for history, group in shared.items():
        before, runs = run_forked(history, group)
        yield (
            group[0].group,
            score(settle(before), []),
            score(settle(_incidents(before)), []),
        )
        for case, alerts in zip(group, runs, strict=True):
            yield case.group, *_score_case(case, alerts)


def _score_case(case: Case, alerts: Sequence[Incident]) -> tuple[Score, Score]:
    before_s, after_s = case.match_s
    return (
        score(settle(alerts), case.faults, before_s, after_s),
        score(settle(_incidents(alerts)), case.faults, before_s, after_s),
    )


def _incidents(alerts: Iterable[Incident]) -> list[Incident]:
    return [a for a in alerts if a.title != WARNING_TITLE]


def run_case(case: Case) -> list[Incident]:
    """Every incident record the flow publishes for one case, in order.

    A case with a history is run in one go, the history first.
    """
    logger.info("rca case start case=%s faults=%s", case.name, len(case.faults))
    batches = case.batches
    if case.history is not None:
        batches = partial(_after, case.history.batches(), case.batches)
    incidents = _run(batches, _flow_config(case))
    logger.info("rca case done case=%s records=%s", case.name, len(incidents))
    return incidents


def run_forked(
    history: History, cases: Sequence[Case]
) -> tuple[list[Incident], list[list[Incident]]]:
    """The incidents of a history, then those of each case that continues it.

    The flow runs over the history once, with recovery on, and stops at its
    end. Each case then resumes from a copy of that state with the history's
    batches in front of its own: the source skips what it already read, as
    after a crash, so each case sees what a run in one go would have seen.
    An incident still open from the history belongs to the history.
    """
    config = _flow_config(cases[0])
    if any(_flow_config(c) != config for c in cases):
        raise ValueError(
            f"the cases of history {history.name!r} differ in window or call "
            "graph; a shared history needs one flow configuration"
        )
    head = list(history.batches())
    logger.info("rca history start history=%s batches=%s", history.name, len(head))
    with tempfile.TemporaryDirectory(prefix="foreshock-rca-") as tmp:
        state = Path(tmp, "history")
        state.mkdir()
        init_db_dir(state, 1)  # type: ignore[no-untyped-call]
        before = _run(partial(iter, head), config, state)
        seen = {i.id for i in before}
        runs: list[list[Incident]] = []
        for n, case in enumerate(cases):
            found = _resume(state, Path(tmp, f"case-{n}"), head, case)
            runs.append([i for i in found if i.id not in seen])
    logger.info("rca history done history=%s cases=%s", history.name, len(cases))
    return before, runs


def _resume(
    state: Path, copy: Path, head: list[RawBatch], case: Case
) -> list[Incident]:
    shutil.copytree(state, copy)
    try:
        return _run(partial(_after, head, case.batches), _flow_config(case), copy)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _after(
    head: Iterable[RawBatch], tail: Callable[[], Iterable[RawBatch]]
) -> Iterator[RawBatch]:
    return chain(head, tail())


def _flow_config(case: Case) -> FlowConfig:
    return FlowConfig(
        # Each file holds one row a period, in time order: nothing comes late.
        window=WindowSpec(case.window.total_seconds(), 0.0, case.align_to),
        topology=case.topology,
    )


def _run(
    batches: Callable[[], Iterable[RawBatch]],
    config: FlowConfig,
    state: Path | None = None,
) -> list[Incident]:
    out: list[Record] = []
    flow = build_flow(IterableSource(batches), TestingSink(out), config)
    # bytewax's stubs leave its constructors and `run_main` bare.
    recovery: RecoveryConfig | None = None
    if state is not None:
        recovery = RecoveryConfig(state)  # type: ignore[no-untyped-call]
    run_main(  # type: ignore[no-untyped-call]
        flow, epoch_interval=_ONE_EPOCH, recovery_config=recovery
    )
    return _alerts(out)


def _alerts(records: Iterable[Record]) -> list[Incident]:
    """Incidents, and early warnings in the shape of one, in publishing order.

    A warning's first publication is when it opened; its ranked services
    are its root causes. Its title marks it, so the two can be told apart.
    """
    alerts: list[Incident] = []
    opened: dict[str, datetime] = {}
    for r in records:
        if isinstance(r, Incident):
            alerts.append(r)
        elif isinstance(r, EarlyWarning) and r.status != "ended":
            first = opened.setdefault(r.id, r.published_at)
            alerts.append(
                Incident(
                    id=r.id,
                    status="open",
                    title=WARNING_TITLE,
                    opened_at=first,
                    updated_at=r.published_at,
                    resolved_at=None,
                    user_facing=[],
                    root_causes=r.root_causes,
                    chain=r.evidence,
                    lead_time_s=None,
                    early_warnings=[],
                )
            )
    return alerts


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


def score(
    incidents: Sequence[Incident],
    faults: Sequence[Fault],
    before_s: float = BEFORE_S,
    after_s: float = AFTER_S,
) -> Score:
    """Match settled incidents to faults; count the incidents no fault explains.

    An incident detects a fault when it opened between `before_s` before and
    `after_s` after it.
    """
    claims: dict[int, list[Incident]] = {}
    false_incidents = 0
    for incident in incidents:
        nearest = _nearest_fault(incident.opened_at, faults, before_s, after_s)
        if nearest is not None:
            claims.setdefault(nearest, []).append(incident)
        elif _distance_s(incident.opened_at, faults) > after_s:
            false_incidents += 1

    # The page an on-call engineer works from is the incident: when users
    # were hit within the fault's window, its incident is what is judged,
    # else the first early warning.
    detections = [
        Detection(
            f,
            min(claims[i], key=lambda c: (c.title == WARNING_TITLE, c.opened_at))
            if i in claims
            else None,
        )
        for i, f in enumerate(faults)
    ]
    return Score(detections, false_incidents)


def _nearest_fault(
    opened: datetime, faults: Sequence[Fault], before_s: float, after_s: float
) -> int | None:
    """The index of the nearest fault whose window holds `opened`."""
    best: tuple[float, int] | None = None
    for index, fault in enumerate(faults):
        offset = (opened - fault.time).total_seconds()
        if -before_s <= offset <= after_s and (best is None or abs(offset) < best[0]):
            best = (abs(offset), index)
    return None if best is None else best[1]


def _distance_s(opened: datetime, faults: Sequence[Fault]) -> float:
    return min(
        (abs((opened - f.time).total_seconds()) for f in faults), default=float("inf")
    )


def summarise(outcome: Score) -> dict[str, object]:
    """The figures of one score, overall and per fault type."""
    detections = outcome.detections
    per_type: dict[str, dict[str, object]] = {}
    for fault_type in sorted({d.fault.fault_type for d in detections}):
        mine = [d for d in detections if d.fault.fault_type == fault_type]
        per_type[fault_type] = _counts(mine)
    return {**_figures(outcome), "per_type": per_type}


def _figures(outcome: Score) -> dict[str, object]:
    detections = outcome.detections
    delays = [d.delay_s for d in detections if d.delay_s is not None]
    leads = [
        d.incident.lead_time_s
        for d in detections
        if d.incident is not None and d.incident.lead_time_s is not None
    ]
    return {
        **_counts(detections),
        "median_delay_s": statistics.median(delays) if delays else None,
        "median_lead_s": statistics.median(leads) if leads else None,
        "false_incidents": outcome.false_incidents,
    }


def _counts(detections: list[Detection]) -> dict[str, object]:
    total = len(detections)
    # avg5: the mean of the top-k fractions for k = 1..5.
    within = [sum(d.ranked_within(k) for d in detections) for k in range(1, 6)]
    return {
        "faults": total,
        "detected": sum(d.incident is not None for d in detections),
        "top1": _fraction(within[0], total),
        "top3": _fraction(within[2], total),
        "avg5": _fraction(sum(within), 5 * total),
    }


def _fraction(part: int, whole: int) -> float:
    return round(part / whole, 3) if whole else 0.0


# -- command line --------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command line: run the benchmark and report its figures."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m foreshock.benchmarks.rca",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--dataset", choices=sorted(DATASETS), required=True, help="dataset format"
    )
    parser.add_argument("--data", type=Path, required=True, help="dataset folder")
    parser.add_argument("--day", help="Nezha: run one day only")
    parser.add_argument(
        "--scenario", help="PetShop: run one scenario only (low_traffic, high_traffic)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    _check_subset(parser, args)

    subset = args.day if args.dataset == "nezha" else args.scenario
    result = run_rca(args.dataset, args.data, subset)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}  {json.dumps(value)}")
    return 0


# The option that picks one case folder of each dataset.
_SUBSET_OPTION = {"nezha": "--day", "petshop": "--scenario"}


def _check_subset(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a --day for PetShop, or a --scenario for Nezha."""
    own = _SUBSET_OPTION[args.dataset]
    for option, value in (("--day", args.day), ("--scenario", args.scenario)):
        if value is not None and option != own:
            parser.error(
                f"{option} does not apply to --dataset {args.dataset}; "
                f"pick its part with {own}"
            )


if __name__ == "__main__":
    sys.exit(main())
