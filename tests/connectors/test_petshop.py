"""Reading a PetShop scenario folder: call graph, layers, history, issues."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.petshop import (
    SHARD,
    IssueFault,
    Scenario,
    layer_of,
    load_scenario,
    read_metrics,
)
from foreshock.kpis import Aggregate
from foreshock.layers import Layer
from foreshock.metrics_kpis import MetricKpis
from foreshock.schema import EVENT_ADAPTER

WEB = "web"
API = "adopt_AWS::ECS::Container"
DB = "pets_AWS::DynamoDB::Table"
PAY = "pay.example.com_remote"

GRAPH = f""",{WEB},{API},{DB},{PAY}
{WEB},0,1,0,0
{API},0,0,1.0,1
{DB},0,0,0,0
{PAY},0,0,0,0
"""

# 2023-08-21 09:00, 09:05 and 09:10 UTC; one empty cell, a minute without
# traced requests.
HISTORY = f"""microservice,{WEB},{WEB},{API},{DB}
metric,latency,availability,latency,requests
statistic,Average,Average,p99,Sum
unix_timestamp,,,,
1692608400.0,0.1,100.0,0.05,12.0
1692608700.0,0.2,,0.06,14.0
1692609000.0,0.1,100.0,0.07,13.0
"""

# 2023-04-18 22:32 and 22:37 UTC, columns in another order.
ISSUE = f"""microservice,{DB},{WEB},{API},{WEB}
metric,requests,latency,latency,availability
statistic,Sum,Average,p99,Average
unix_timestamp,,,,
1681857120.0,11.0,0.9,1.5,99.0
1681857420.0,3.0,1.1,1.7,98.0
"""

TARGET = {
    "target": {
        "node": WEB,
        "metric": "latency",
        "agg": "Average",
        "timestamp": 1681857300,
    },
    "root_cause": {"node": DB, "metric": None},
}


def _at(hour: int, minute: int) -> datetime:
    return datetime(2023, 8, 21, hour, minute, tzinfo=UTC)


def write_scenario(folder: Path) -> Path:
    """A scenario of three services, three normal rows and one issue."""
    (folder / "noissue").mkdir(parents=True)
    (folder / "test" / "issue_0").mkdir(parents=True)
    (folder / "graph.csv").write_text(GRAPH)
    (folder / "noissue" / "metrics.csv").write_text(HISTORY)
    (folder / "test" / "issue_0" / "metrics.csv").write_text(ISSUE)
    (folder / "test" / "issue_0" / "target.json").write_text(json.dumps(TARGET))
    return folder


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    return load_scenario(write_scenario(tmp_path / "tiny"))


def test_the_graph_reads_rows_as_callers_and_columns_as_callees(
    scenario: Scenario,
) -> None:
    assert scenario.topology.calls == {(WEB, API), (API, DB), (API, PAY)}
    assert scenario.topology.dependencies(WEB) == {API: 1, DB: 2, PAY: 2}


def test_the_target_is_the_frontend_and_other_layers_come_from_names(
    scenario: Scenario,
) -> None:
    assert scenario.topology.layers == {
        WEB: Layer.FRONTEND,
        API: Layer.API,
        DB: Layer.DATABASE,
        PAY: Layer.THIRD_PARTY,
    }


@pytest.mark.parametrize(
    ("node", "layer"),
    [
        ("PetSite", Layer.FRONTEND),
        ("orders_AWS::ECS::Fargate", Layer.API),
        ("status/prod_AWS::ApiGateway::Stage", Layer.API),
        ("loadtest_client", Layer.API),
        ("resize_AWS::Lambda::Function", Layer.BACKEND),
        ("AWS::StepFunctions::StateMachine", Layer.BACKEND),
        ("worker", Layer.BACKEND),
        ("shop@db.rds.amazonaws.com_Database::SQL", Layer.DATABASE),
        ("S3_AWS::S3", Layer.DATABASE),
        (
            "https://sqs.eu-west-1.amazonaws.com/1/q_AWS::SQS::Queue",
            Layer.INFRASTRUCTURE,
        ),
        ("STS_AWS::STS", Layer.INFRASTRUCTURE),
        ("api.stripe.com_remote", Layer.THIRD_PARTY),
    ],
)
def test_layer_of_reads_the_x_ray_node_type(node: str, layer: Layer) -> None:
    assert layer_of(node, {"PetSite"}) is layer


def test_the_issue_moves_to_one_period_after_the_history(scenario: Scenario) -> None:
    (case,) = scenario.cases

    # History ends 09:10, so the issue starts 09:15; its target, 3 minutes
    # into it (22:35 in April), moves to 09:18; its last row ends at 09:25.
    assert case.name == "tiny/test/issue_0"
    assert case.issue_start == _at(9, 15)
    assert case.issue_end == _at(9, 25)
    assert case.shift == _at(9, 15) - datetime(2023, 4, 18, 22, 32, tzinfo=UTC)
    assert case.fault == IssueFault(_at(9, 18), DB, WEB, "latency")


def test_events_are_the_history_then_the_issue_one_gauge_per_cell(
    scenario: Scenario,
) -> None:
    (case,) = scenario.cases

    events = list(case.events())

    rows = [
        (e.time, e.service, e.layer, e.payload.name, e.payload.value, e.payload.unit)
        for e in events
        if e.payload.kind == "metric_sample"
    ]
    assert len(rows) == len(events) == 4 + 3 + 4 + 4 + 4
    assert rows[4:7] == [
        (_at(9, 5), WEB, Layer.FRONTEND, "latency_average", 0.2, "s"),
        (_at(9, 5), API, Layer.API, "latency_p99", 0.06, "s"),
        (_at(9, 5), DB, Layer.DATABASE, "requests_sum", 14.0, None),
    ]
    assert rows[-4:] == [
        (_at(9, 20), DB, Layer.DATABASE, "requests_sum", 3.0, None),
        (_at(9, 20), WEB, Layer.FRONTEND, "latency_average", 1.1, "s"),
        (_at(9, 20), API, Layer.API, "latency_p99", 1.7, "s"),
        (_at(9, 20), WEB, Layer.FRONTEND, "availability_average", 98.0, "%"),
    ]
    assert [e.time for e in events] == sorted(e.time for e in events)


def test_events_can_leave_out_the_history_or_the_issue(scenario: Scenario) -> None:
    (case,) = scenario.cases

    history = list(case.events(issue=False))
    issue = list(case.events(history=False))

    assert (len(history), len(issue)) == (11, 8)
    assert history + issue == list(case.events())


def test_batches_end_at_window_edges_and_carry_native_events(
    scenario: Scenario,
) -> None:
    (case,) = scenario.cases

    batches = list(case.batches(3, split_every=timedelta(minutes=5)))

    # Rows of 4, 3, 4 values (history), then 4 and 4 (issue).
    assert [len(b.messages) for b in batches] == [3, 1, 3, 3, 1, 3, 1, 3, 1]
    assert {b.shard for b in batches} == {SHARD}
    first = batches[0].messages[0]
    event = EVENT_ADAPTER.validate_json(first.value or b"")
    assert (first.key, first.timestamp_ms) == (WEB.encode(), 1692608400_000)
    assert event == next(case.events())


def test_batches_refuse_a_size_below_one(scenario: Scenario) -> None:
    with pytest.raises(ValueError, match="batch size must be at least 1, got 0"):
        next(scenario.cases[0].batches(0))


def test_metric_rules_judge_petshop_gauges_the_right_way() -> None:
    names = ["latency_average", "latency_p99", "availability_average", "requests_sum"]
    kpis = MetricKpis()
    aggregate = Aggregate()
    aggregate.values.update({f"metric:{name}": [1.0] for name in names})

    list(kpis.names(aggregate, set()))
    judged = {n: (kpis.get(n).dimension, kpis.get(n).direction) for n in names}

    assert judged == {
        "latency_average": ("speed", "up"),
        "latency_p99": ("speed", "up"),
        "availability_average": ("availability", "down"),
        "requests_sum": ("throughput", "both"),
    }


def test_read_metrics_keeps_empty_cells_as_missing(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(HISTORY)

    table = read_metrics(path)

    assert table.period == timedelta(minutes=5)
    assert table.nodes == sorted([WEB, API, DB])
    assert table.rows[1] == (_at(9, 5), (0.2, None, 0.06, 14.0))


def test_read_metrics_refuses_another_layout(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("timestamp,value\n1,2\n")

    with pytest.raises(ValueError, match="header rows microservice, metric"):
        read_metrics(path)


def test_read_metrics_names_the_line_of_a_short_row(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(HISTORY + "1692609300.0,0.1\n")

    with pytest.raises(ValueError, match="line 8: 1 values for 4 columns"):
        read_metrics(path)


def test_load_scenario_refuses_a_folder_without_a_graph(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no graph\.csv in"):
        load_scenario(tmp_path)


def test_load_scenario_refuses_a_target_without_a_root_cause(tmp_path: Path) -> None:
    folder = write_scenario(tmp_path / "tiny")
    target = folder / "test" / "issue_0" / "target.json"
    target.write_text(json.dumps({"target": TARGET["target"]}))

    with pytest.raises(ValueError, match="lacks 'root_cause'"):
        load_scenario(folder)


def test_load_scenario_names_the_row_of_a_bad_graph_cell(tmp_path: Path) -> None:
    folder = write_scenario(tmp_path / "tiny")
    (folder / "graph.csv").write_text(GRAPH.replace(f"{WEB},0,1,0,0", f"{WEB},0,x,0,0"))

    with pytest.raises(ValueError, match="row of 'web': could not convert"):
        load_scenario(folder)
