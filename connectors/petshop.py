"""PetShop root-cause cases as native events.

PetShop (Hardt et al., "The PetShop Dataset — Finding Causes of Performance
Issues across Microservices", CLeaR 2024; data under CC-BY-4.0) records an
AWS pet-adoption application through its X-Ray service map. A scenario
folder, as published::

    <scenario>/graph.csv                adjacency matrix of the call graph
    <scenario>/noissue/metrics.csv      normal operation
    <scenario>/<split>/issue_N/metrics.csv    the minutes around one issue
    <scenario>/<split>/issue_N/target.json    the user-facing target and the
                                              root-cause node

A metrics file has three header rows (node, metric, statistic), a row that
names the index (`unix_timestamp`), then one row per period (5 minutes) led
by its Unix time. Every non-empty cell becomes one `metric_sample` gauge of
its node named `<metric>_<statistic>` (`latency_p99`, `requests_sum`,
`availability_average`), so that the metric rules judge latencies as speed,
availabilities as availability and request counts as throughput.

In `graph.csv` the row is the caller and the column the callee: a non-zero
cell is an edge `row -> column`, the direction `Topology` uses.

Layers come from the node's name: X-Ray names a node `<name>_<AWS type>`,
or `<host>_remote` for an endpoint outside the traced application, or
`<name>_client` for a caller it does not trace. The nodes the cases name as
their target are the user-facing frontend; the others are mapped by type:

    ==================================================  ==============
    node                                                layer
    ==================================================  ==============
    named as a case's target                            frontend
    ApiGateway, ECS, EKS, EC2, Beanstalk, `_client`     api
    Lambda, Step Functions, no type                     backend
    DynamoDB, RDS, `Database::SQL`, S3, ElastiCache     database
    SQS, SNS, Kinesis, EventBridge, SSM, STS, other     infrastructure
    AWS services
    `_remote` (hosts outside the traced application)    third_party
    ==================================================  ==============

A case is the scenario's normal operation, replayed as warm-up history, then
the issue's rows. The normal operation was recorded months after the issues,
so the issue is moved in time to start one period after the history ends;
its target time moves with it, and `Case.shift` says by how much. Every case
of a scenario thus shares the same history, to the event.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

from connectors.iterables import event_batches
from connectors.messages import RawBatch
from foreshock.layers import Layer
from foreshock.schema import Event, MetricSample
from foreshock.topology import Topology

__all__ = [
    "SHARD",
    "Case",
    "Column",
    "IssueFault",
    "MetricTable",
    "Scenario",
    "layer_of",
    "load_scenario",
    "read_metrics",
    "read_topology",
]

SHARD = "petshop:0"

_HISTORY = "noissue"
_METRICS = "metrics.csv"
_TARGET = "target.json"
_GRAPH = "graph.csv"
_ISSUE = re.compile(r"issue_(\d+)")
_UNITS = {"latency": "s", "availability": "%"}

# The AWS resource type in a node name, first match wins: `_AWS::DynamoDB`,
# `_Database::SQL`, `AWS::StepFunctions::StateMachine`.
_TYPE_LAYERS: tuple[tuple[re.Pattern[str], Layer], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), layer)
    for pattern, layer in (
        (r"_remote$", Layer.THIRD_PARTY),
        (r"_client$", Layer.API),
        (r"ApiGateway|::ECS|::EKS|::EC2|ElasticBeanstalk", Layer.API),
        (r"::Lambda|StepFunctions", Layer.BACKEND),
        (r"DynamoDB|::RDS|Database::|::S3|ElastiCache", Layer.DATABASE),
        (r"AWS::", Layer.INFRASTRUCTURE),
    )
)


class Column(NamedTuple):
    """One metric column: the node it describes and the gauge it becomes."""

    node: str
    name: str
    unit: str | None


@dataclass(frozen=True, slots=True)
class MetricTable:
    """The rows of one metrics file: (time, value per column or None)."""

    columns: tuple[Column, ...]
    rows: tuple[tuple[datetime, tuple[float | None, ...]], ...]

    @property
    def period(self) -> timedelta | None:
        """The usual time between rows, or None with fewer than two rows."""
        gaps = sorted(b[0] - a[0] for a, b in pairwise(self.rows))
        return gaps[len(gaps) // 2] if gaps else None

    @property
    def nodes(self) -> list[str]:
        return sorted({c.node for c in self.columns})


class IssueFault(NamedTuple):
    """The issue of one case: its root cause and the target users felt."""

    time: datetime
    root_cause: str
    target: str
    target_metric: str


@dataclass(frozen=True)
class Case:
    """One issue of a scenario, replayed after the scenario's history."""

    scenario: str
    split: str
    issue: str
    fault: IssueFault
    topology: Topology
    history: MetricTable
    incident: MetricTable
    shift: timedelta

    @property
    def name(self) -> str:
        return f"{self.scenario}/{self.split}/{self.issue}"

    @property
    def issue_start(self) -> datetime:
        """The (moved) time of the issue's first row."""
        return self.incident.rows[0][0] + self.shift

    @property
    def issue_end(self) -> datetime:
        """The end of the issue's last period, moved like its rows."""
        period = self.incident.period or self.history.period or timedelta(0)
        return self.incident.rows[-1][0] + self.shift + period

    def events(self, *, history: bool = True, issue: bool = True) -> Iterator[Event]:
        """The history's samples then the issue's, in event-time order."""
        if history:
            yield from _events(self.history, self.topology.layers, timedelta(0))
        if issue:
            yield from _events(self.incident, self.topology.layers, self.shift)

    def batches(
        self,
        size: int,
        *,
        split_every: timedelta | None = None,
        history: bool = True,
        issue: bool = True,
    ) -> Iterator[RawBatch]:
        """The events as native JSON records, `size` to a batch, on one shard.

        With `split_every`, a batch also ends where event time crosses a
        multiple of it since the epoch, so that no batch spans two windows.
        """
        events = self.events(history=history, issue=issue)
        return event_batches(SHARD, events, size, split_every)


@dataclass(frozen=True)
class Scenario:
    """A scenario folder: its call graph, history and cases."""

    name: str
    topology: Topology
    history: MetricTable
    cases: list[Case]


def load_scenario(folder: Path) -> Scenario:
    """Read a scenario folder (`low_traffic`, say) and every issue under it."""
    graph = folder / _GRAPH
    if not graph.is_file():
        raise FileNotFoundError(
            f"no {_GRAPH} in {str(folder)!r}: expected a PetShop scenario folder "
            "such as dataset/low_traffic"
        )
    history = read_metrics(folder / _HISTORY / _METRICS)
    issues = _issue_folders(folder)
    targets = [_read_target(f / _TARGET) for f in issues]
    tables = [_read_issue(f / _METRICS) for f in issues]

    edges = read_topology(graph)
    names = {n for e in edges for n in e} | set(history.nodes)
    names.update(n for t in tables for n in t.nodes)
    user_facing = {t.target for t in targets}
    layers = {n: layer_of(n, user_facing) for n in sorted(names)}
    topology = Topology.from_edges(edges, layers)
    cases = [
        _case(folder.name, issue, target, table, topology, history)
        for issue, target, table in zip(issues, targets, tables, strict=True)
    ]
    return Scenario(folder.name, topology, history, cases)


def layer_of(node: str, user_facing: set[str]) -> Layer:
    """The layer of a node, from its X-Ray name (see the module's table)."""
    if node in user_facing:
        return Layer.FRONTEND
    for pattern, layer in _TYPE_LAYERS:
        if pattern.search(node):
            return layer
    return Layer.BACKEND


def read_topology(path: Path) -> list[tuple[str, str]]:
    """The edges `caller -> callee` of an adjacency matrix in CSV."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or len(rows[0]) < 2:
        raise ValueError(f"{str(path)!r} is not an adjacency matrix: no header row")
    callees = rows[0][1:]
    edges: list[tuple[str, str]] = []
    for row in rows[1:]:
        caller, cells = row[0], row[1:]
        if len(cells) != len(callees):
            raise ValueError(
                f"{str(path)!r}: the row of {caller!r} has {len(cells)} cells "
                f"for {len(callees)} columns"
            )
        try:
            edges += [
                (caller, b) for b, c in zip(callees, cells, strict=True) if _on(c)
            ]
        except ValueError as error:
            raise ValueError(f"{str(path)!r}, row of {caller!r}: {error}") from error
    return sorted({(a, b) for a, b in edges if a != b})


def read_metrics(path: Path) -> MetricTable:
    """One metrics file: three header rows, an index-name row, then data."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 4 or [r[0] for r in rows[:3]] != [
        "microservice",
        "metric",
        "statistic",
    ]:
        raise ValueError(
            f"{str(path)!r} does not start with the header rows microservice, "
            "metric, statistic: expected a PetShop metrics.csv"
        )
    columns = tuple(
        _column(node, metric, stat)
        for node, metric, stat in zip(
            rows[0][1:], rows[1][1:], rows[2][1:], strict=True
        )
    )
    data = tuple(_row(path, i, row, len(columns)) for i, row in enumerate(rows[4:], 5))
    return MetricTable(columns, tuple(sorted(data, key=lambda r: r[0])))


# -- files ---------------------------------------------------------------------


def _column(node: str, metric: str, statistic: str) -> Column:
    name = re.sub(r"\W+", "_", f"{metric}_{statistic}".lower()).strip("_")
    return Column(node, name, _UNITS.get(metric.lower()))


def _row(
    path: Path, line: int, row: list[str], width: int
) -> tuple[datetime, tuple[float | None, ...]]:
    if len(row) != width + 1:
        raise ValueError(
            f"{str(path)!r} line {line}: {len(row) - 1} values for {width} columns"
        )
    try:
        time = datetime.fromtimestamp(float(row[0]), UTC)
        values = tuple(_number(cell) for cell in row[1:])
    except ValueError as error:
        raise ValueError(f"{str(path)!r} line {line}: {error}") from error
    return time, values


def _number(cell: str) -> float | None:
    # An empty cell is a period in which the node served no traced request.
    if not cell.strip():
        return None
    value = float(cell)
    return value if math.isfinite(value) else None


def _on(cell: str) -> bool:
    return bool(cell.strip()) and float(cell) != 0.0


def _issue_folders(folder: Path) -> list[Path]:
    found = [
        issue
        for split in sorted(p for p in folder.iterdir() if p.is_dir())
        for issue in split.iterdir()
        if _ISSUE.fullmatch(issue.name) and (issue / _TARGET).is_file()
    ]
    return sorted(found, key=lambda p: (p.parent.name, _issue_number(p)))


def _issue_number(folder: Path) -> int:
    match = _ISSUE.fullmatch(folder.name)
    return int(match.group(1)) if match else -1


class _Target(NamedTuple):
    time: datetime
    target: str
    metric: str
    root_cause: str


def _read_target(path: Path) -> _Target:
    document = json.loads(path.read_text())
    try:
        target, cause = document["target"], document["root_cause"]
        return _Target(
            datetime.fromtimestamp(float(target["timestamp"]), UTC),
            str(target["node"]),
            str(target["metric"]),
            str(cause["node"]),
        )
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"{str(path)!r} lacks {error}: expected target.node, target.metric, "
            "target.timestamp and root_cause.node"
        ) from error


def _read_issue(path: Path) -> MetricTable:
    table = read_metrics(path)
    if not table.rows:
        raise ValueError(f"{str(path)!r} has no data rows: an issue needs at least one")
    return table


def _case(
    scenario: str,
    folder: Path,
    target: _Target,
    incident: MetricTable,
    topology: Topology,
    history: MetricTable,
) -> Case:
    shift = _shift(history, incident)
    fault = IssueFault(
        target.time + shift, target.root_cause, target.target, target.metric
    )
    return Case(
        scenario,
        folder.parent.name,
        folder.name,
        fault,
        topology,
        history,
        incident,
        shift,
    )


def _shift(history: MetricTable, incident: MetricTable) -> timedelta:
    """How far the issue moves to start one period after the history ends."""
    if not history.rows:
        return timedelta(0)
    period = history.period or incident.period or timedelta(0)
    return history.rows[-1][0] + period - incident.rows[0][0]


# -- events ----------------------------------------------------------------------


def _events(
    table: MetricTable, layers: Mapping[str, Layer], shift: timedelta
) -> Iterator[Event]:
    for time, values in table.rows:
        moved = time + shift
        for column, value in zip(table.columns, values, strict=True):
            if value is None:
                continue
            yield Event(
                time=moved,
                layer=layers.get(column.node, Layer.BACKEND),
                service=column.node,
                payload=MetricSample(name=column.name, value=value, unit=column.unit),
            )
