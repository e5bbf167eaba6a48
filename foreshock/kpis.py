"""KPI definitions: what each window of telemetry says about a service.

Per event, a flow does only cheap work: it adds the event's measurements to the
`Aggregate` of its (layer, service) and window. When the window closes, every
KPI in the registry whose inputs that aggregate saw is computed from it. A KPI
is a name, the dimension of experience it measures, the direction in which it
hurts, and a function of the aggregate and the window length.

Adding a KPI is a few lines::

    from foreshock.kpis import DEFAULT_REGISTRY, Kpi, percentile

    DEFAULT_REGISTRY.register(
        Kpi("query_time_p90_ms", "speed", "up", "ms", ("db_query",),
            percentile("query_ms", 90))
    )
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_REGISTRY",
    "Aggregate",
    "Dimension",
    "Direction",
    "Kpi",
    "KpiRegistry",
    "nearest_rank",
    "per_second",
    "percentile",
    "ratio",
]

Dimension = Literal[
    "availability", "functionality", "speed", "throughput", "utilisation"
]
# The direction in which a KPI hurts users: "up" for latency and error rates,
# "down" for availability, "both" where either way is a change worth a look.
Direction = Literal["up", "down", "both"]
# Values in ascending order: a list, or a numpy array for many values.
Ordered = list[float] | NDArray[np.float64]


@dataclass(slots=True)
class Aggregate:
    """What one window holds for one (layer, service).

    `counts` are named event counters (requests, errors, crashes), `values`
    named measurements kept whole so percentiles are exact, `sums` totals such
    as counter increases, `kinds` the payload kinds seen, and `rejected` the
    measurements dropped as impossible, by field.
    """

    events: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    kinds: set[str] = field(default_factory=set)
    rejected: dict[str, int] = field(default_factory=dict)
    # Each measurement sorted once for all of its percentiles, with the
    # number of values it was sorted from: remade when more arrived since (a
    # late event restating the window).
    _ordered: dict[str, tuple[int, Ordered]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def ordered(self, measurement: str) -> Ordered:
        """The values of `measurement` in ascending order."""
        values = self.values.get(measurement, [])
        held = self._ordered.get(measurement)
        if held is not None and held[0] == len(values):
            return held[1]
        # numpy's sort wins once converting the list costs less than sorting
        # it in Python.
        ordered: Ordered = sorted(values) if len(values) < 64 else np.sort(values)
        self._ordered[measurement] = (len(values), ordered)
        return ordered

    def merge(self, other: Aggregate) -> None:
        """Add `other`, an aggregate of the same window, into this one."""
        self.events += other.events
        for name, n in other.counts.items():
            self.counts[name] = self.counts.get(name, 0) + n
        for name, vs in other.values.items():
            self.values.setdefault(name, []).extend(vs)
        for name, s in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + s
        self.kinds |= other.kinds
        for name, n in other.rejected.items():
            self.rejected[name] = self.rejected.get(name, 0) + n


Compute = Callable[[Aggregate, float], float | None]


@dataclass(frozen=True, slots=True)
class Kpi:
    """One KPI: computed per window from the aggregate of one (layer, service)."""

    name: str
    dimension: Dimension
    direction: Direction
    unit: str
    sources: tuple[str, ...]
    compute: Compute
    # A static bound, as a service-level objective: a window past it on the
    # harmful side is anomalous whatever the detector learned, so a plain
    # breach pages even before the detector has history.
    objective: float | None = None

    def breaches(self, value: float | None) -> bool:
        """Whether `value` lies past the objective on the harmful side."""
        if self.objective is None or value is None:
            return False
        if self.direction == "down":
            return value < self.objective
        if self.direction == "up":
            return value > self.objective
        return False

    def applies_to(self, aggregate: Aggregate) -> bool:
        return not aggregate.kinds.isdisjoint(self.sources)


def nearest_rank(ordered: Ordered, q: float) -> float:
    """The `q`-th percentile (0 < q <= 100) of values in ascending order, by
    the nearest-rank method."""
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


def percentile(measurement: str, q: float) -> Compute:
    """A KPI: the nearest-rank percentile of a measurement, None without any."""

    def compute(aggregate: Aggregate, window_s: float) -> float | None:
        if not aggregate.values.get(measurement):
            return None
        return nearest_rank(aggregate.ordered(measurement), q)

    return compute


def mean(measurement: str) -> Compute:
    """A KPI: the mean of a measurement, None without any."""

    def compute(aggregate: Aggregate, window_s: float) -> float | None:
        values = aggregate.values.get(measurement)
        return math.fsum(values) / len(values) if values else None

    return compute


def ratio(numerator: str, denominator: str, *, complement: bool = False) -> Compute:
    """A KPI: counts[numerator] / counts[denominator], None when nothing happened.

    With `complement`, 1 minus that: the share that went right.
    """

    def compute(aggregate: Aggregate, window_s: float) -> float | None:
        total = aggregate.counts.get(denominator, 0)
        if total == 0:
            return None
        share = aggregate.counts.get(numerator, 0) / total
        return 1.0 - share if complement else share

    return compute


def per_second(counter: str) -> Compute:
    """A KPI: how many times per second something happened in the window."""

    def compute(aggregate: Aggregate, window_s: float) -> float | None:
        return aggregate.counts.get(counter, 0) / window_s

    return compute


class KpiRegistry:
    """The KPIs a flow computes, by name."""

    def __init__(self, kpis: tuple[Kpi, ...] = ()) -> None:
        self._kpis: dict[str, Kpi] = {}
        for kpi in kpis:
            self.register(kpi)

    def register(self, kpi: Kpi) -> None:
        if kpi.name in self._kpis:
            raise ValueError(
                f"a KPI named {kpi.name!r} is registered already; "
                "choose another name or remove the first one"
            )
        self._kpis[kpi.name] = kpi

    def __getitem__(self, name: str) -> Kpi:
        return self._kpis[name]

    def get(self, name: str) -> Kpi | None:
        return self._kpis.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._kpis

    def __iter__(self) -> Iterator[Kpi]:
        return iter(self._kpis.values())

    def __len__(self) -> int:
        return len(self._kpis)

    def copy(self) -> KpiRegistry:
        return KpiRegistry(tuple(self))


_P = percentile

DEFAULT_REGISTRY = KpiRegistry(
    (
        # Browsers of real users: Web Vitals are judged at the 75th percentile.
        Kpi(
            "page_views_per_s",
            "throughput",
            "both",
            "1/s",
            ("page_view",),
            per_second("page_views"),
        ),
        Kpi("page_load_p75_ms", "speed", "up", "ms", ("page_view",), _P("load_ms", 75)),
        Kpi("ttfb_p75_ms", "speed", "up", "ms", ("page_view",), _P("ttfb_ms", 75)),
        Kpi("lcp_p75_ms", "speed", "up", "ms", ("page_view",), _P("lcp_ms", 75)),
        Kpi("inp_p75_ms", "speed", "up", "ms", ("page_view",), _P("inp_ms", 75)),
        Kpi("cls_p75", "speed", "up", "1", ("page_view",), _P("cls", 75)),
        Kpi(
            "js_execution_p75_ms",
            "speed",
            "up",
            "ms",
            ("page_view",),
            _P("js_execution_ms", 75),
        ),
        Kpi(
            "js_error_rate",
            "functionality",
            "up",
            "1",
            ("page_view",),
            ratio("pages_with_js_errors", "page_views"),
        ),
        # Mobile apps.
        Kpi(
            "launches_per_s",
            "throughput",
            "both",
            "1/s",
            ("app_launch",),
            per_second("launches"),
        ),
        Kpi(
            "crash_rate",
            "functionality",
            "up",
            "1",
            ("app_launch", "app_crash"),
            ratio("crashes", "launches"),
        ),
        Kpi("launch_p95_ms", "speed", "up", "ms", ("app_launch",), _P("launch_ms", 95)),
        # Synthetic checks.
        Kpi(
            "check_success_ratio",
            "availability",
            "down",
            "1",
            ("synthetic_check",),
            ratio("failed_checks", "checks", complement=True),
            # Most locations failing is an outage, with or without history.
            objective=0.5,
        ),
        Kpi(
            "check_duration_p95_ms",
            "speed",
            "up",
            "ms",
            ("synthetic_check",),
            _P("check_ms", 95),
        ),
        # Requests served at the api and backend layers.
        Kpi(
            "requests_per_s",
            "throughput",
            "both",
            "1/s",
            ("http_request",),
            per_second("requests"),
        ),
        Kpi(
            "availability",
            "availability",
            "down",
            "1",
            ("http_request",),
            ratio("server_errors", "requests", complement=True),
        ),
        Kpi(
            "error_rate",
            "functionality",
            "up",
            "1",
            ("http_request",),
            ratio("errors", "requests"),
        ),
        Kpi(
            "latency_p50_ms",
            "speed",
            "up",
            "ms",
            ("http_request",),
            _P("request_ms", 50),
        ),
        Kpi(
            "latency_p95_ms",
            "speed",
            "up",
            "ms",
            ("http_request",),
            _P("request_ms", 95),
        ),
        Kpi(
            "latency_p99_ms",
            "speed",
            "up",
            "ms",
            ("http_request",),
            _P("request_ms", 99),
        ),
        # Databases.
        Kpi(
            "queries_per_s",
            "throughput",
            "both",
            "1/s",
            ("db_query",),
            per_second("queries"),
        ),
        Kpi(
            "query_error_rate",
            "functionality",
            "up",
            "1",
            ("db_query",),
            ratio("query_errors", "queries"),
        ),
        Kpi(
            "query_time_p50_ms", "speed", "up", "ms", ("db_query",), _P("query_ms", 50)
        ),
        Kpi(
            "query_time_p95_ms", "speed", "up", "ms", ("db_query",), _P("query_ms", 95)
        ),
        Kpi(
            "query_time_p99_ms", "speed", "up", "ms", ("db_query",), _P("query_ms", 99)
        ),
        # Containers and hosts.
        Kpi(
            "cpu_utilisation",
            "utilisation",
            "up",
            "1",
            ("resource_sample",),
            mean("cpu_utilisation"),
        ),
        Kpi(
            "memory_utilisation",
            "utilisation",
            "up",
            "1",
            ("resource_sample",),
            mean("memory_utilisation"),
        ),
        Kpi(
            "network_rx_bytes_per_s",
            "throughput",
            "both",
            "B/s",
            ("resource_sample",),
            mean("network_rx_bytes_per_s"),
        ),
        Kpi(
            "network_tx_bytes_per_s",
            "throughput",
            "both",
            "B/s",
            ("resource_sample",),
            mean("network_tx_bytes_per_s"),
        ),
        # Third-party providers.
        Kpi(
            "calls_per_s",
            "throughput",
            "both",
            "1/s",
            ("third_party_call",),
            per_second("calls"),
        ),
        Kpi(
            "call_error_rate",
            "functionality",
            "up",
            "1",
            ("third_party_call",),
            ratio("call_errors", "calls"),
        ),
        Kpi(
            "call_latency_p95_ms",
            "speed",
            "up",
            "ms",
            ("third_party_call",),
            _P("call_ms", 95),
        ),
    )
)
