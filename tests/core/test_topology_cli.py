"""`foreshock topology`: the call graph in use, from configuration or a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from foreshock.cli import main
from foreshock.config import load_settings
from foreshock.errors import UserError
from foreshock.jobs import flow_config
from foreshock.layers import Layer
from foreshock.topology import Topology
from tests.connectors.test_petshop import API, DB, PAY, WEB, write_scenario

SERVICES: dict[str, str | None] = {
    "web": "frontend",
    "app": "mobile",
    "checkout-api": "api",
    "search-api": "api",
    "batch-export": "backend",
    "orders-db": "database",
    "payments": "third_party",
}
CALLS = [
    ["web", "checkout-api"],
    ["web", "search-api"],
    ["app", "checkout-api"],
    ["checkout-api", "orders-db"],
    ["checkout-api", "payments"],
    ["search-api", "orders-db"],
    ["batch-export", "orders-db"],
    ["batch-export", "legacy"],
]

TEXT = """\
Topology from {graph} (correlation.topology, configuration {config})
8 services, 8 calls, 2 user-facing

Services by layer
  frontend     web
  mobile       app
  api          checkout-api, search-api
  backend      batch-export
  database     orders-db
  third_party  payments
  (no layer)   legacy

Calls (caller -> callee)
  app -> checkout-api
  batch-export -> legacy
  batch-export -> orders-db
  checkout-api -> orders-db
  checkout-api -> payments
  search-api -> orders-db
  web -> checkout-api
  web -> search-api

What each user-facing service depends on
  app [mobile]: depends on 3 services
    └── checkout-api [api]
        ├── orders-db [database]
        └── payments [third_party]
  web [frontend]: depends on 4 services
    ├── checkout-api [api]
    │   ├── orders-db [database]
    │   └── payments [third_party]
    └── search-api [api]
        └── orders-db [database] (see above)

Outside every user's path (never a root cause or a warning)
  batch-export, legacy
"""

DOT = """\
digraph topology {
  rankdir=LR;
  node [shape=box];
  "app" [label="app\\nmobile", peripheries=2];
  "batch-export" [label="batch-export\\nbackend"];
  "checkout-api" [label="checkout-api\\napi"];
  "legacy" [label="legacy\\n?"];
  "orders-db" [label="orders-db\\ndatabase"];
  "payments" [label="payments\\nthird_party"];
  "search-api" [label="search-api\\napi"];
  "web" [label="web\\nfrontend", peripheries=2];
  "app" -> "checkout-api";
  "batch-export" -> "legacy";
  "batch-export" -> "orders-db";
  "checkout-api" -> "orders-db";
  "checkout-api" -> "payments";
  "search-api" -> "orders-db";
  "web" -> "checkout-api";
  "web" -> "search-api";
}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    graph = tmp_path / "topology.json"
    graph.write_text(json.dumps({"services": SERVICES, "calls": CALLS}))
    path = tmp_path / "foreshock.toml"
    path.write_text(f'[correlation]\ntopology = "{graph}"\n')
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["topology", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_text_shows_layers_calls_and_a_tree_per_user_facing_service(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(["--config", str(config)], capsys)

    assert code == 0
    assert out == TEXT.format(graph=config.parent / "topology.json", config=config)


def test_json_gives_layers_calls_and_dependencies_with_distances(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(["--config", str(config), "--format", "json"], capsys)

    document = json.loads(out)
    assert code == 0
    assert document["services"] == {**SERVICES, "legacy": None}
    assert document["calls"] == sorted(CALLS)
    assert document["user_facing"] == {
        "app": {"checkout-api": 1, "orders-db": 2, "payments": 2},
        "web": {"checkout-api": 1, "search-api": 1, "orders-db": 2, "payments": 2},
    }
    assert document["unreached"] == ["batch-export", "legacy"]


def test_the_json_it_writes_is_a_graph_a_job_can_use(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = _run(["--config", str(config), "--format", "json"], capsys)
    written = tmp_path / "written.json"
    written.write_text(out)

    graph = Topology.load(written)

    # "legacy" is only ever called, so its layer is unknown (null) and its
    # events will give it; the rest keep theirs.
    assert graph.layers == {
        name: Layer(layer) for name, layer in SERVICES.items() if layer
    }
    assert sorted(map(list, graph.calls)) == sorted(CALLS)


def test_dot_draws_every_service_and_call(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(["--config", str(config), "--format", "dot"], capsys)

    assert code == 0
    assert out == DOT


def test_dot_keeps_colons_and_escapes_quotes_in_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = tmp_path / "calls.json"
    graph.write_text(json.dumps({"services": {}, "calls": [['a "b"', "t_AWS::S3"]]}))
    config = tmp_path / "foreshock.toml"
    config.write_text(f'[correlation]\ntopology = "{graph}"\n')

    _, out, _ = _run(["--config", str(config), "--format", "dot"], capsys)

    assert out.splitlines()[-2] == '  "a \\"b\\"" -> "t_AWS::S3";'


def test_a_petshop_scenario_shows_its_own_graph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_scenario(tmp_path / "dataset" / "tiny")
    argv = ["--dataset", "petshop", "--data", str(tmp_path), "--format", "json"]

    code, out, _ = _run(argv, capsys)

    document = json.loads(out)
    assert code == 0
    assert document["source"].startswith("PetShop scenario tiny")
    assert document["user_facing"] == {WEB: {API: 1, DB: 2, PAY: 2}}


def test_without_a_configured_graph_it_says_how_to_set_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "foreshock.toml"
    config.write_text("[window]\nlength_s = 30\n")

    code, out, _ = _run(["--config", str(config)], capsys)

    assert code == 0
    assert out.splitlines()[:2] == [
        f"Topology from configuration {config}: no correlation.topology set",
        "0 services, 0 calls, 0 user-facing",
    ]
    assert "Set correlation.topology" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "petshop"], "--dataset petshop needs --data"),
        (["--data", "x"], "--data needs --dataset"),
        (
            ["--dataset", "nezha", "--data", "nowhere"],
            "no day folders in 'nowhere/rca_data': give --data a Nezha folder",
        ),
    ],
)
def test_bad_sources_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(argv, capsys)

    assert (code, out) == (2, "")
    assert err.startswith("foreshock topology: ")
    assert message in err


def test_a_configured_graph_that_is_missing_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "foreshock.toml"
    config.write_text(f'[correlation]\ntopology = "{tmp_path / "nope.json"}"\n')

    code, _, err = _run(["--config", str(config)], capsys)

    assert code == 2
    assert "which is not a file" in err


# What every refused topology file is told to hold instead.
EXPECTED = (
    'give JSON such as {"services": {"web": "frontend", "api": "api"}, '
    '"calls": [["web", "api"]]}, or a .csv file with Source,Target columns '
    "and a row per call"
)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("t.json", "", "is empty"),
        ("t.json", "\n  \n", "is empty"),
        (
            "t.json",
            '{"services": ',
            "is not JSON (Expecting value at line 1 column 14)",
        ),
        ("t.json", '{"calls": [["web", "api"]]}', 'has no "services" object'),
        ("t.json", '[["web", "api"]]', 'has no "services" object'),
        ("t.json", '{"services": ["web"]}', 'has no "services" object'),
        ("t.json", '{"services": {}}', "holds no services"),
        ("t.json", '{"services": {}, "calls": []}', "holds no services"),
        (
            "t.json",
            '{"services": {"web": "browser"}}',
            "gives 'web' the layer \"browser\", which is none of frontend, "
            "mobile, synthetic, api, backend, database, infrastructure, "
            "third_party",
        ),
        (
            "t.json",
            '{"services": {"web": "frontend"}, "calls": [["web"]]}',
            'has ["web"] in "calls", not a [caller, callee] pair',
        ),
        (
            "t.json",
            '{"services": {"web": "frontend"}, "calls": {"web": "api"}}',
            'has "calls" that is not a list',
        ),
        ("t.csv", "", "is empty"),
        ("t.csv", "Source,Target\n", "holds no services"),
        (
            "t.csv",
            "From,To\nweb,api\n",
            "has no Source,Target columns (its header: From,To)",
        ),
        (
            "t.csv",
            "Source,Target\nweb,api\napi\n",
            "has no Source or no Target on line 3",
        ),
    ],
)
def test_a_configured_graph_that_cannot_be_read_is_one_line(
    name: str,
    content: str,
    problem: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    graph = tmp_path / name
    graph.write_text(content)
    config = tmp_path / "foreshock.toml"
    config.write_text(f'[correlation]\ntopology = "{name}"\n')

    code, out, err = _run(["--config", str(config)], capsys)

    assert (code, out) == (2, "")
    assert err == f"foreshock topology: topology file '{graph}' {problem}; {EXPECTED}\n"


def test_a_graph_that_is_not_utf8_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = tmp_path / "t.json"
    graph.write_bytes(b"\xff\xfe{}")
    config = tmp_path / "foreshock.toml"
    config.write_text('[correlation]\ntopology = "t.json"\n')

    code, _, err = _run(["--config", str(config)], capsys)

    assert code == 2
    assert err == (
        f"foreshock topology: topology file '{graph}' is not UTF-8 text; {EXPECTED}\n"
    )


def test_a_csv_graph_reads_its_source_and_target_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = tmp_path / "calls.csv"
    graph.write_text("Source,Target,Count\nweb,api,12\napi,orders-db,3\n")
    config = tmp_path / "foreshock.toml"
    config.write_text('[correlation]\ntopology = "calls.csv"\n')

    code, out, _ = _run(["--config", str(config), "--format", "json"], capsys)

    document = json.loads(out)
    assert code == 0
    assert document["calls"] == [["api", "orders-db"], ["web", "api"]]
    assert document["services"] == {"api": None, "orders-db": None, "web": None}


def test_a_job_refuses_a_graph_without_services_before_it_starts(
    tmp_path: Path,
) -> None:
    graph = tmp_path / "t.json"
    graph.write_text('{"calls": []}')
    config = tmp_path / "foreshock.toml"
    config.write_text('[correlation]\ntopology = "t.json"\n')

    with pytest.raises(UserError) as refused:
        flow_config(load_settings(config))

    assert str(refused.value) == (
        f"topology file '{graph}' has no \"services\" object; {EXPECTED}"
    )
