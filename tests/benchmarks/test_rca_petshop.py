"""The root-cause benchmark on PetShop-shaped data: cases, forking, matching."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from foreshock.benchmarks.rca import (
    AFTER_S,
    DATASETS,
    Fault,
    main,
    run_case,
    run_forked,
    score,
)
from foreshock.layers import Layer
from foreshock.records import Incident
from tests.connectors.test_petshop import DB, WEB, write_scenario

T0 = datetime(2023, 8, 21, 9, 0, tzinfo=UTC)
API = "adopt_AWS::ECS::Container"
# Ten hours of quiet five-minute rows, then an issue of five rows.
HISTORY_ROWS = 120


def _incident(name: str, opened: datetime) -> Incident:
    return Incident(
        id=name,
        status="open",
        title="",
        opened_at=opened,
        updated_at=opened,
        resolved_at=None,
        user_facing=[],
        root_causes=[],
        chain=[],
        lead_time_s=None,
        early_warnings=[],
    )


def test_score_uses_the_bounds_a_case_gives() -> None:
    fault = Fault(T0, DB, "latency")
    late = _incident("late", T0 + timedelta(seconds=800))
    early = _incident("early", T0 - timedelta(seconds=200))

    default = score([early, late], [fault])
    own = score([early, late], [fault], 180.0, 900.0)

    # 800 s after is past the default 600 s; 200 s before is outside both.
    assert AFTER_S == 600.0
    assert [d.incident for d in default.detections] == [None]
    assert default.false_incidents == 1
    assert [d.incident and d.incident.id for d in own.detections] == ["late"]
    assert own.false_incidents == 0


def test_petshop_cases_cover_the_issue_rows_and_share_the_history(
    tmp_path: Path,
) -> None:
    write_scenario(tmp_path / "dataset" / "tiny")

    (case,) = DATASETS["petshop"].load(tmp_path, None)

    # The issue's rows run 09:15-09:25 and its target moved to 09:18.
    assert case.name == "tiny/test/issue_0"
    assert case.faults == [Fault(T0 + timedelta(minutes=18), DB, "latency")]
    assert case.match_s == (180.0, 420.0)
    assert (case.window, case.align_to, case.group) == (
        timedelta(minutes=5),
        T0,
        "tiny",
    )
    assert case.history is not None
    history = [m for b in case.history.batches() for m in b.messages]
    own = [m for b in case.batches() for m in b.messages]
    assert (len(history), len(own)) == (11, 8)


def test_petshop_cases_refuse_a_missing_scenario(tmp_path: Path) -> None:
    write_scenario(tmp_path / "dataset" / "tiny")

    with pytest.raises(FileNotFoundError, match="no scenario folder 'huge'"):
        DATASETS["petshop"].load(tmp_path, "huge")


def test_a_forked_case_sees_what_a_run_in_one_go_sees(tmp_path: Path) -> None:
    _write_quiet_shop(tmp_path / "dataset" / "shop")
    cases = DATASETS["petshop"].load(tmp_path, None)
    assert [c.name for c in cases] == ["shop/test/issue_0", "shop/test/issue_1"]
    history = cases[0].history
    assert history is not None

    before, forked = run_forked(history, cases)
    whole = [_after_history(run_case(c), before) for c in cases]

    assert forked == whole
    assert all(forked), "each issue should open an incident"


def test_main_prints_one_json_line_with_a_breakdown_per_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_scenario(tmp_path / "dataset" / "tiny")

    main(["--dataset", "petshop", "--data", str(tmp_path), "--json"])
    lines = capsys.readouterr().out.splitlines()

    result = json.loads(lines[0])
    assert len(lines) == 1
    assert list(result) == [
        "dataset",
        "cases",
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
        "per_scenario",
        "seconds",
    ]
    assert (result["cases"], result["faults"]) == (1, 1)
    assert list(result["per_type"]) == ["latency"]
    assert list(result["per_scenario"]) == ["tiny"]


def _after_history(incidents: list[Incident], before: list[Incident]) -> list[Incident]:
    seen = {i.id for i in before}
    return [i for i in incidents if i.id not in seen]


def _write_quiet_shop(folder: Path) -> None:
    """Ten quiet hours of web -> api -> db, then a slow database, a slow api."""
    nodes = [WEB, API, DB]
    (folder / "noissue").mkdir(parents=True)
    (folder / "graph.csv").write_text(
        f",{WEB},{API},{DB}\n{WEB},0,1,0\n{API},0,0,1\n{DB},0,0,0\n"
    )
    start = T0.timestamp()
    quiet = [
        (start + 300 * i, [0.10 + 0.01 * (i % 5), 0.05 + 0.01 * (i % 3), 0.01])
        for i in range(HISTORY_ROWS)
    ]
    _write_metrics(folder / "noissue" / "metrics.csv", nodes, quiet)
    # Row by row from the issue's start, x20 where the slowness has reached.
    slow_db = [[1, 1, 1], [1, 20, 20], [20, 20, 20], [20, 20, 20], [20, 20, 20]]
    slow_api = [[1, 1, 1], [1, 20, 1], [20, 20, 1], [20, 20, 1], [20, 20, 1]]
    for n, (cause, factors) in enumerate([(DB, slow_db), (API, slow_api)]):
        issue = folder / "test" / f"issue_{n}"
        issue.mkdir(parents=True)
        begin = 1681857000.0 + 3600 * n
        rows = [
            (
                begin + 300 * i,
                [v * f for v, f in zip([0.1, 0.05, 0.01], row, strict=True)],
            )
            for i, row in enumerate(factors)
        ]
        _write_metrics(issue / "metrics.csv", nodes, rows)
        target = {
            "target": {"node": WEB, "metric": "latency", "timestamp": begin + 400},
            "root_cause": {"node": cause},
        }
        (issue / "target.json").write_text(json.dumps(target))


def _write_metrics(
    path: Path, nodes: list[str], rows: list[tuple[float, list[float]]]
) -> None:
    lines = [
        ",".join(["microservice", *nodes]),
        ",".join(["metric"] + ["latency"] * len(nodes)),
        ",".join(["statistic"] + ["Average"] * len(nodes)),
        "unix_timestamp" + "," * len(nodes),
    ]
    lines += [",".join([str(t), *(str(v) for v in values)]) for t, values in rows]
    path.write_text("\n".join(lines) + "\n")


def test_layers_of_the_quiet_shop(tmp_path: Path) -> None:
    _write_quiet_shop(tmp_path / "dataset" / "shop")

    case = DATASETS["petshop"].load(tmp_path, "shop")[0]

    assert case.topology.layers == {
        WEB: Layer.FRONTEND,
        API: Layer.API,
        DB: Layer.DATABASE,
    }
