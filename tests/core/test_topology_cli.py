"""`foreshock topology`: the call graph in use, from configuration or a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from foreshock.cli import main
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
