"""The root-cause benchmark: settling incidents, matching faults, scoring."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Literal

import pytest

from connectors.nezha import load_day
from foreshock.benchmarks.rca import (
    Case,
    Fault,
    main,
    run_case,
    score,
    settle,
    summarise,
)
from foreshock.layers import Layer
from foreshock.records import Candidate, Incident

DATA = Path(
    os.environ.get("FORESHOCK_DATA", Path(__file__).parents[3] / "shared" / "data")
)
NEZHA = DATA / "nezha"
T0 = datetime(2022, 8, 22, 10, 0, tzinfo=UTC)
_POD = "frontend-5f6585d649-fnmft"


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _incident(
    name: str,
    opened: float,
    causes: list[str],
    updated: float | None = None,
    status: Literal["open", "updated", "resolved"] = "open",
) -> Incident:
    return Incident(
        id=name,
        status=status,
        title="",
        opened_at=_at(opened),
        updated_at=_at(opened if updated is None else updated),
        resolved_at=None,
        user_facing=[],
        root_causes=[
            Candidate(
                service=service,
                layer=Layer.API,
                rank=rank,
                score=1.0,
                onset=_at(opened),
                distance=1,
                reasons=[],
                evidence=[],
            )
            for rank, service in enumerate(causes, start=1)
        ],
        chain=[],
        lead_time_s=None,
        early_warnings=[],
    )


FAULTS = [
    Fault(_at(0), "cart", "cpu"),
    Fault(_at(8), "checkout", "delay"),
    Fault(_at(60), "email", "cpu"),
    Fault(_at(120), "ads", "delay"),
]


def test_settle_keeps_each_incident_as_published_five_minutes_after_opening() -> None:
    records = [
        _incident("a", 0, ["x"]),
        _incident("b", 2, ["y"]),
        _incident("a", 0, ["cart"], updated=3, status="updated"),
        _incident("a", 0, ["cart", "x"], updated=5, status="updated"),
        _incident("a", 0, ["z"], updated=6, status="updated"),
        _incident("a", 0, ["z"], updated=20, status="resolved"),
    ]

    settled = settle(records)

    assert [(i.id, i.updated_at, i.root_causes[0].service) for i in settled] == [
        ("a", _at(5), "cart"),
        ("b", _at(2), "y"),
    ]


def test_score_matches_each_fault_to_its_first_nearest_incident() -> None:
    incidents = [
        # 2 min after the cart fault: detects it, cart ranked first.
        _incident("i1", 2, ["cart", "checkout"]),
        # Also in the cart fault's window, but later: not its detection.
        _incident("i3", 5, ["cart"]),
        # 7.5 min after cart, 0.5 min before checkout: nearest is checkout.
        _incident("i2", 7.5, ["x", "y", "checkout"]),
        # 20 min after the email fault: a false incident.
        _incident("i4", 80, ["email"]),
        # 5 min before the ads fault: outside its window, yet not false.
        _incident("i5", 115, ["ads"]),
    ]

    result = score(incidents, FAULTS)

    matched = [
        (d.fault.service, d.incident and d.incident.id) for d in result.detections
    ]
    assert matched == [
        ("cart", "i1"),
        ("checkout", "i2"),
        ("email", None),
        ("ads", None),
    ]
    assert [d.delay_s for d in result.detections] == [120.0, -30.0, None, None]
    assert result.false_incidents == 1


def test_summarise_gives_fractions_of_all_faults_overall_and_per_type() -> None:
    incidents = [
        _incident("i1", 2, ["cart", "checkout"]),
        _incident("i2", 7.5, ["x", "y", "checkout"]),
        _incident("i4", 80, ["email"]),
    ]

    summary = summarise(score(incidents, FAULTS))

    # avg5: cart ranked 1st counts for k = 1..5, checkout 3rd for k = 3..5,
    # so (5 + 3) / (5 * 4) overall, 5 / 10 for cpu and 3 / 10 for delay.
    assert summary == {
        "faults": 4,
        "detected": 2,
        "top1": 0.25,
        "top3": 0.5,
        "avg5": 0.4,
        "median_delay_s": 45.0,
        "median_lead_s": None,
        "false_incidents": 1,
        "per_type": {
            "cpu": {"faults": 2, "detected": 1, "top1": 0.5, "top3": 0.5, "avg5": 0.5},
            "delay": {
                "faults": 2,
                "detected": 1,
                "top1": 0.0,
                "top3": 0.5,
                "avg5": 0.3,
            },
        },
    }


def test_summarise_without_detections_has_no_delay() -> None:
    summary = summarise(score([], FAULTS[:1]))

    assert summary["detected"] == 0
    assert summary["median_delay_s"] is None
    assert summary["top1"] == summary["top3"] == 0.0


@pytest.fixture(scope="module")
def nezha_day() -> Path:
    day = NEZHA / "rca_data" / "2022-08-22"
    if not day.is_dir():
        pytest.skip(f"the Nezha data is not at {day}; set FORESHOCK_DATA")
    return day


def test_run_case_runs_the_flow_over_an_hour_of_a_day(nezha_day: Path) -> None:
    day = load_day(nezha_day)
    until = datetime(2022, 8, 22, 4, 51, tzinfo=UTC)
    faults = [Fault(f.time, f.service, f.fault_type) for f in day.faults]
    case = Case(day.name, partial(day.batches, 500, until), day.topology, faults)

    incidents = run_case(case)

    assert all(isinstance(i, Incident) for i in incidents)
    assert all(i.opened_at <= until + timedelta(minutes=1) for i in incidents)
    assert {s for i in incidents for s in (c.service for c in i.root_causes)} <= set(
        day.topology.services()
    )


def test_main_refuses_a_missing_day(nezha_day: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no day folder '1999-01-01'"):
        main(["--dataset", "nezha", "--data", str(NEZHA), "--day", "1999-01-01"])


def test_main_prints_one_json_line_for_a_tiny_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_tiny_day(tmp_path / "rca_data" / "2022-01-01")

    main(["--dataset", "nezha", "--data", str(tmp_path), "--json"])
    lines = capsys.readouterr().out.splitlines()

    result = json.loads(lines[0])
    assert len(lines) == 1
    assert list(result) == [
        "dataset",
        "days",
        "faults",
        "detected",
        "top1",
        "top3",
        "avg5",
        "median_delay_s",
        "median_lead_s",
        "false_incidents",
        "per_type",
        "incidents_only",
        "seconds",
    ]
    assert (result["dataset"], result["days"], result["faults"]) == ("nezha", 1, 1)


def _write_tiny_day(day: Path) -> None:
    """Thirty quiet minutes of a shop of two services, and one fault."""
    metric = day / "metric"
    metric.mkdir(parents=True)
    start = datetime(2022, 1, 1, 0, 0, 19, tzinfo=UTC)
    times = [start + timedelta(minutes=m) for m in range(30)]
    stamp = "%Y-%m-%d %H:%M:%S.000000001 +0000 UTC m=+0.1"

    front = ["Time,TimeStamp,ServiceName,SuccessRate(%),LatencyP90(s)"]
    front += [f"{t:{stamp}},0,Frontend,100,0.{4 + m % 3}" for m, t in enumerate(times)]
    (metric / "front_service.csv").write_text("\n".join(front) + "\n")

    pod = ["Time,TimeStamp,PodName,CpuUsageRate(%),PodServerLatencyP90(s)"]
    pod += [f"{t:{stamp}},0,x,{10 + m % 4},0.0{1 + m % 2}" for m, t in enumerate(times)]
    (metric / f"{_POD}_metric.csv").write_text("\n".join(pod) + "\n")

    (metric / "dependency.csv").write_text("Source,Target\nloadgenerator,frontend\n")
    fault = {
        "inject_timestamp": str(int(times[20].timestamp())),
        "inject_pod": _POD,
        "inject_type": "cpu_contention",
    }
    (day / f"{day.name}-fault_list.json").write_text(json.dumps({"00": [fault]}))
