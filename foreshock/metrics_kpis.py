"""KPIs for telemetry that arrives already aggregated, named after its metric.

A gauge's KPI is its mean over the window; a counter's is its increase per
second. How a metric hurts is read from its name by rules, first match wins,
so that `PodServerLatencyP95` is judged like a latency and `success_rate`
like an availability. Deployments add rules for their own naming.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from foreshock.kpis import Aggregate, Compute, Dimension, Direction, Kpi

__all__ = ["DEFAULT_METRIC_RULES", "MetricKpis", "MetricRule"]


@dataclass(frozen=True, slots=True)
class MetricRule:
    """Metrics whose name matches `pattern` (case-insensitive) hurt this way."""

    pattern: str
    dimension: Dimension
    direction: Direction


DEFAULT_METRIC_RULES: tuple[MetricRule, ...] = (
    MetricRule(r"success|availab|uptime|up$", "availability", "down"),
    MetricRule(r"error|fail|crash|exception|reject|drop", "functionality", "up"),
    MetricRule(r"latency|duration|time|delay|wait", "speed", "up"),
    MetricRule(r"cpu|memory|mem_|utili[sz]ation|saturation|queue", "utilisation", "up"),
    MetricRule(
        r"workload|throughput|requests|ops|count|total|bytes|rate", "throughput", "both"
    ),
)


def _gauge_mean(name: str) -> Compute:
    def compute(aggregate: Aggregate, window_s: float) -> float | None:
        values = aggregate.values.get(name)
        return math.fsum(values) / len(values) if values else None

    return compute


def _counter_rate(name: str) -> Compute:
    def compute(aggregate: Aggregate, window_s: float) -> float | None:
        increase = aggregate.sums.get(name)
        return None if increase is None else increase / window_s

    return compute


@dataclass
class MetricKpis:
    """Makes, and remembers, the KPI of each metric name a flow meets.

    A KPI holds code, so a snapshot keeps only which metrics had one made
    and whether each is a counter (`made`); a restored flow makes them again
    (`remake`) before it reports a silent service's metrics as `no_data`.
    """

    rules: tuple[MetricRule, ...] = DEFAULT_METRIC_RULES
    _kpis: dict[str, Kpi] = field(default_factory=dict)
    _counters: set[str] = field(default_factory=set)

    def names(self, aggregate: Aggregate, known: set[str]) -> Iterator[str]:
        """The metric KPIs a window of one service has, or had before."""
        for key in aggregate.values.keys() | aggregate.sums.keys():
            if key.startswith("metric:"):
                kpi = self._ensure(key[7:], counter=key in aggregate.sums)
                if kpi.name not in known:
                    yield kpi.name
        for name in known:
            if name in self._kpis:
                yield name

    def get(self, name: str) -> Kpi:
        return self._kpis[name]

    def made(self) -> dict[str, bool]:
        """Each metric whose KPI was made, and whether it is a counter."""
        return {metric: metric in self._counters for metric in self._kpis}

    def remake(self, made: Mapping[str, bool]) -> None:
        """Make again the KPIs that `made` lists."""
        for metric, counter in made.items():
            self._ensure(metric, counter=counter)

    def _ensure(self, metric: str, *, counter: bool) -> Kpi:
        kpi = self._kpis.get(metric)
        if kpi is None:
            dimension, direction = self._classify(metric)
            source = "metric:" + metric
            compute = _counter_rate(source) if counter else _gauge_mean(source)
            unit = "1/s" if counter else ""
            kpi = Kpi(metric, dimension, direction, unit, ("metric_sample",), compute)
            self._kpis[metric] = kpi
            if counter:
                self._counters.add(metric)
        return kpi

    def _classify(self, metric: str) -> tuple[Dimension, Direction]:
        for rule in self.rules:
            if re.search(rule.pattern, metric, re.IGNORECASE):
                return rule.dimension, rule.direction
        return "utilisation", "both"
