"""One day of the Nezha Online Boutique data as native events.

A day folder, as the Nezha authors published it::

    <day>/<day>-fault_list.json     {"HH": [{"inject_timestamp", "inject_pod",
                                             "inject_type", ...}, ...], ...}
    <day>/metric/front_service.csv  the shop's user-facing KPIs, a row a minute
    <day>/metric/<pod>_metric.csv   one pod's metrics, a row a minute
    <day>/metric/dependency.csv     the call graph, `Source,Target[,Weight]`
    <day>/metric/source_50.csv      per call edge (`<caller>_<callee>`
    <day>/metric/destination_50.csv columns), the median latency of its
                                    calls as the caller and as the callee
                                    timed them, a row a minute

Every numeric cell becomes one `metric_sample` gauge named after its column
(`PodServerLatencyP95(s)` -> `pod_server_latency_p95_s`), so that the metric
rules judge latencies as speed and success rates as availability. The
user-facing KPIs belong to a service of the frontend layer, named apart from
the `frontend` pod it calls; a pod's latencies, workload and success rate are
its api layer, the rest (CPU, memory, syscalls, network, node) its
infrastructure layer, both under the pod's service name.

The per-edge latencies become gauges of the edge's series, named
`<caller>-><callee>` as trace edges are (`foreshock.topology.EDGE_SEPARATOR`),
at the caller's api layer: `client_latency_p50_s` from the caller's side,
`server_latency_p50_s` from the callee's. The two part where the network
sits between them: a delay on the wire moves the first only.

The `Time` column is the event time; `TimeStamp` is ignored, as it is wrong in
one of the published files.
"""

from __future__ import annotations

import csv
import heapq
import ipaddress
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from connectors.iterables import event_batches
from connectors.messages import RawBatch
from foreshock.layers import Layer
from foreshock.schema import Event, MetricSample
from foreshock.topology import EDGE_SEPARATOR, Topology

__all__ = [
    "SHARD",
    "InjectedFault",
    "NezhaDay",
    "edge_series",
    "load_day",
    "metric_name",
    "parse_time",
    "service_of_pod",
]

SHARD = "nezha:0"

_FRONT_FILE = "front_service.csv"
_POD_SUFFIX = "_metric.csv"
# Per-edge latency files: which side timed the calls, and the percentile.
_EDGE_FILE = re.compile(r"(source|destination)_(\d+)\.csv")
_EDGE_SIDES = {"source": "client", "destination": "server"}
_TIME_COLUMNS = ("Time", "time")
_IDENTITY_COLUMNS = frozenset(
    {*_TIME_COLUMNS, "TimeStamp", "timestamp", "PodName", "ServiceName"}
)
_API_COLUMNS = re.compile(r"Latency|Workload|Success")
# The load generator plays the users; its calls are not part of the shop.
_NOT_SERVICES = frozenset({"loadgenerator"})

# Go's time.Time text: `2022-08-22 03:51:19.573905004 +0000 UTC m=+0.0798`.
_GO_TIME = re.compile(
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d{1,9}))? ([+-]\d{4})(?: \S+)*$"
)
# A Kubernetes Deployment's pod: `<service>-<template hash>-<5 characters>`.
_POD_NAME = re.compile(r"(.+)-[a-z0-9]{6,10}-[a-z0-9]{5}")


class InjectedFault(NamedTuple):
    """One fault the experimenters injected, and where."""

    time: datetime
    pod: str
    service: str
    fault_type: str


@dataclass(frozen=True, slots=True)
class _Column:
    """A metric column of a CSV file and the gauge of a series it becomes."""

    header: str
    name: str
    unit: str | None
    layer: Layer
    service: str


@dataclass(frozen=True, slots=True)
class _MetricFile:
    path: Path
    columns: tuple[_Column, ...]


@dataclass(frozen=True)
class NezhaDay:
    """The metric files, call graph and faults of one day folder.

    Events are read from the files each time they are asked for, so a day
    costs little memory and a flow can be run over it more than once.
    """

    name: str
    user_service: str
    topology: Topology
    faults: list[InjectedFault]
    _files: tuple[_MetricFile, ...]

    @property
    def pods(self) -> list[str]:
        names = (f.path.name for f in self._files)
        return sorted(
            n.removesuffix(_POD_SUFFIX) for n in names if n.endswith(_POD_SUFFIX)
        )

    def events(self, until: datetime | None = None) -> Iterator[Event]:
        """Every metric sample of the day, in event-time order.

        With `until`, only the samples timed before it.
        """
        rows = heapq.merge(*(_rows(f) for f in self._files), key=lambda r: r[0])
        for time, events in rows:
            if until is not None and time >= until:
                return
            yield from events

    def batches(
        self,
        size: int,
        until: datetime | None = None,
        *,
        split_every: timedelta | None = None,
    ) -> Iterator[RawBatch]:
        """The events as native JSON records, `size` to a batch, on one shard.

        With `split_every`, a batch also ends where event time crosses a
        multiple of it since the epoch, so that no batch spans two windows.
        """
        return event_batches(SHARD, self.events(until), size, split_every)


def load_day(day_dir: Path) -> NezhaDay:
    """Read the layout of one day folder; the samples are read lazily."""
    metric_dir = day_dir / "metric"
    front = metric_dir / _FRONT_FILE
    if not front.is_file():
        raise FileNotFoundError(
            f"no {_FRONT_FILE} in {str(metric_dir)!r}: expected a Nezha day folder "
            "such as rca_data/2022-08-22"
        )
    user_service = _user_service(front)
    pods = tuple(_pod_file(p) for p in sorted(metric_dir.glob("*" + _POD_SUFFIX)))
    services = sorted({c.service for f in pods for c in f.columns})
    edges = tuple(
        _edge_file(p, match, services)
        for p in sorted(metric_dir.glob("*.csv"))
        if (match := _EDGE_FILE.fullmatch(p.name)) is not None
    )
    files = (_metric_file(front, user_service, Layer.FRONTEND), *pods, *edges)
    topology = _topology(metric_dir / "dependency.csv", user_service, services)
    faults = _faults(day_dir / f"{day_dir.name}-fault_list.json")
    return NezhaDay(day_dir.name, user_service, topology, faults, files)


def parse_time(text: str) -> datetime:
    """A Go `time.Time` string as an aware UTC datetime, to the microsecond."""
    match = _GO_TIME.match(text.strip())
    if match is None:
        raise ValueError(
            f"unreadable time {text!r}: expected e.g. "
            "'2022-08-22 03:51:19.573905004 +0000 UTC m=+0.07'"
        )
    stamp, fraction, offset = match.groups()
    micros = (fraction or "").ljust(6, "0")[:6]
    parsed = datetime.strptime(f"{stamp}.{micros} {offset}", "%Y-%m-%d %H:%M:%S.%f %z")
    return parsed.astimezone(UTC)


def service_of_pod(pod: str) -> str:
    """The service a Deployment's pod belongs to: its name less the hashes."""
    match = _POD_NAME.fullmatch(pod)
    return match.group(1) if match else pod


def metric_name(header: str) -> tuple[str, str | None]:
    """A column header as a snake_case metric name and its unit.

    `CpuUsageRate(%)` -> (`cpu_usage_rate_pct`, `%`); the unit stays in the
    name, as a gauge's KPI is known by its name alone.
    """
    base, _, rest = header.partition("(")
    unit = rest.rstrip(")") or None
    words = re.findall(r"[A-Z]+\d*(?![a-z])|[A-Z]?[a-z]+\d*|\d+", base)
    name = "_".join(w.lower() for w in words)
    if unit is None:
        return name, None
    suffix = "pct" if unit == "%" else re.sub(r"\W+", "_", unit.lower()).strip("_")
    return f"{name}_{suffix}", unit


# -- files ---------------------------------------------------------------------


def _user_service(front: Path) -> str:
    with front.open(newline="") as handle:
        first = next(csv.DictReader(handle), {})
    shop = (first.get("ServiceName") or "shop").strip().lower()
    return f"{shop}-web"


def _pod_file(path: Path) -> _MetricFile:
    pod = path.name.removesuffix(_POD_SUFFIX)
    return _metric_file(path, service_of_pod(pod), None)


def _metric_file(path: Path, service: str, layer: Layer | None) -> _MetricFile:
    columns = tuple(_column(h, service, layer) for h in _metric_headers(path))
    return _MetricFile(path, columns)


def _metric_headers(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        headers = next(csv.reader(handle), [])
    if not set(_TIME_COLUMNS) & set(headers):
        raise ValueError(f"{str(path)!r} has no Time column; its header is {headers!r}")
    return [h for h in headers if h and h not in _IDENTITY_COLUMNS]


def _column(header: str, service: str, layer: Layer | None) -> _Column:
    name, unit = metric_name(header)
    if layer is None:
        api = _API_COLUMNS.search(header)
        layer = Layer.API if api else Layer.INFRASTRUCTURE
    return _Column(header, name, unit, layer, service)


def _edge_file(path: Path, match: re.Match[str], services: list[str]) -> _MetricFile:
    side, percentile = match.groups()
    name = f"{_EDGE_SIDES[side]}_latency_p{percentile}_s"
    columns = tuple(
        _Column(h, name, "s", Layer.API, edge_series(h, services, path))
        for h in _metric_headers(path)
    )
    return _MetricFile(path, columns)


def edge_series(header: str, services: list[str], path: Path) -> str:
    """The series name of an edge column `<caller>_<callee>`.

    Service names may hold underscores themselves, so the column is split
    where both halves name a service that has a pod file.
    """
    known = set(services)
    for at in (i for i, c in enumerate(header) if c == "_"):
        caller, callee = header[:at], header[at + 1 :]
        if caller in known and callee in known:
            return f"{caller}{EDGE_SEPARATOR}{callee}"
    raise ValueError(
        f"column {header!r} of {str(path)!r} names no call between two of the "
        f"services with pod files {sorted(known)!r}; expected <caller>_<callee>"
    )


def _rows(source: _MetricFile) -> Iterator[tuple[datetime, list[Event]]]:
    with source.path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            stamp = next(row[c] for c in _TIME_COLUMNS if c in row)
            time = parse_time(stamp)
            yield time, list(_samples(source, row, time))


def _samples(
    source: _MetricFile, row: dict[str, str], time: datetime
) -> Iterator[Event]:
    for column in source.columns:
        value = _number(row.get(column.header))
        if value is None:
            continue
        sample = MetricSample(name=column.name, value=value, unit=column.unit)
        yield Event(
            time=time, layer=column.layer, service=column.service, payload=sample
        )


def _number(cell: str | None) -> float | None:
    # An empty cell is a minute without that measurement (no traced request).
    if cell is None or not cell.strip():
        return None
    value = float(cell)
    return value if math.isfinite(value) else None


# -- call graph and faults -------------------------------------------------------


def _topology(path: Path, user_service: str, services: list[str]) -> Topology:
    with path.open(newline="") as handle:
        rows = [(r["Source"], r["Target"]) for r in csv.DictReader(handle)]
    edges = {
        (a, b)
        for a, b in rows
        if not _is_address(b) and not {a, b} & _NOT_SERVICES and a != b
    }
    # The user-facing service calls whatever the shop is entered by: the
    # services that no other service calls.
    entries = ({a for a, _ in edges} | set(services)) - {b for _, b in edges}
    edges |= {(user_service, e) for e in entries}
    layers = {s: Layer.API for s in services}
    layers[user_service] = Layer.FRONTEND
    return Topology.from_edges(sorted(edges), layers)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _faults(path: Path) -> list[InjectedFault]:
    by_hour: dict[str, list[dict[str, str]]] = json.loads(path.read_text())
    faults = [_fault(item) for items in by_hour.values() for item in items]
    return sorted(faults)


def _fault(item: dict[str, str]) -> InjectedFault:
    # `inject_timestamp` (Unix seconds) is used: `inject_time` is a minute
    # later than it once, on 2022-08-22, and the metrics side with the former.
    time = datetime.fromtimestamp(int(item["inject_timestamp"]), UTC)
    pod = item["inject_pod"]
    return InjectedFault(time, pod, service_of_pod(pod), item["inject_type"])
