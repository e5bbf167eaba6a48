"""The `[otlp]` configuration section: how OTLP telemetry is placed and read.

Placement (which service, which layer) follows the OpenTelemetry semantic
conventions first and `rules` for what they cannot say. A rule matches
attributes by regular expression (full match): resource attributes, the data
point's or span's attributes, and `metric.name` or `span.name`. User rules are
tried before the built-in ones, first match wins::

    [[otlp.rules]]
    match = {"k8s.namespace.name" = "payments"}
    layer = "backend"

    [[otlp.rules]]
    match = {"deployment.environment.name" = "staging|dev"}
    exclude = true
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from foreshock.layers import Layer

__all__ = ["DEFAULT_RULES", "OtlpSettings", "PlacementRule", "Signal"]

Signal = Literal["metrics", "traces"]


class PlacementRule(BaseModel):
    """Telemetry whose attributes fully match every pattern of `match`.

    It is put at `layer`, named after the value of the attribute
    `service_from`, or, with `exclude`, kept out of every KPI (counted as an
    "excluded" rejection).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: dict[str, str] = Field(min_length=1)
    layer: Layer | None = None
    service_from: str | None = None
    exclude: bool = False

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: dict[str, str]) -> dict[str, str]:
        for key, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"match[{key!r}] = {pattern!r} is not a regular expression "
                    f"({error}); escape special characters such as '.' and '*'"
                ) from error
        return value


def _rule(match: dict[str, str], layer: Layer) -> PlacementRule:
    return PlacementRule(match=match, layer=layer)


# Conventions that hold in most deployments; a deployment overrides any of them
# with its own rules, which are tried first.
DEFAULT_RULES: tuple[PlacementRule, ...] = (
    _rule({"db.system.name": ".+"}, Layer.DATABASE),
    _rule({"db.system": ".+"}, Layer.DATABASE),
    _rule({"telemetry.sdk.language": "webjs"}, Layer.FRONTEND),
    _rule({"os.name": "(?i)android|ios|ipados"}, Layer.MOBILE),
    _rule({"metric.name": r"(system|container|k8s|host)\..+"}, Layer.INFRASTRUCTURE),
    _rule({"service.name": r"(?i).*(db|database)"}, Layer.DATABASE),
    _rule(
        {"service.name": r"(?i)(.*[-_.])?(api|gateway|bff|edge)([-_.].*)?"}, Layer.API
    ),
)

# Host names that never leave the deployment: Kubernetes service names,
# private DNS zones, loopback and the private IPv4 ranges of RFC 1918.
DEFAULT_INTERNAL_ADDRESSES: tuple[str, ...] = (
    r".*\.svc(\.cluster\.local)?",
    r".*\.(internal|local|localdomain)",
    r"localhost",
    r"(10|127)(\.\d{1,3}){3}",
    r"192\.168(\.\d{1,3}){2}",
    r"172\.(1[6-9]|2\d|3[01])(\.\d{1,3}){2}",
)


def _collector_topics() -> dict[str, Signal]:
    return {"otlp_metrics": "metrics", "otlp_spans": "traces"}


class OtlpSettings(BaseModel):
    """How OTLP metrics and traces become Foreshock events."""

    model_config = ConfigDict(extra="forbid")

    # Tried before DEFAULT_RULES; the first rule that matches wins.
    rules: list[PlacementRule] = Field(default_factory=list)
    default_layer: Layer = Layer.BACKEND
    # Prefix service names with `service.namespace` ("shop/checkout") where
    # several namespaces reuse the same service names.
    qualify_with_namespace: bool = False
    # The signal of each topic whose format is a bare "otlp_proto" or
    # "otlp_json"; the defaults are the Collector's kafka exporter topics.
    signals: dict[str, Signal] = Field(default_factory=_collector_topics)
    # Percentiles derived from histograms and summaries, in percent.
    percentiles: list[float] = Field(default_factory=lambda: [50.0, 95.0, 99.0])
    # A cumulative series met for the first time counts its whole value only if
    # it started at most this long before its point; an older one is a
    # baseline, since its value mostly happened before Foreshock was looking.
    new_series_max_age_s: float = Field(default=120.0, ge=0)
    # Series remembered for cumulative sums and histograms, least recently
    # seen forgotten first.
    max_series: int = Field(default=100_000, ge=1)
    # Spans remembered to link a child span to its parent's service.
    max_spans: int = Field(default=200_000, ge=1)
    # Client spans to internal services also make KPIs of the call edge,
    # under the service name "caller->callee".
    edge_kpis: bool = True
    # Client-span targets (peer.service, server.address) that are ours, by
    # name, besides every service seen in a resource and the address patterns.
    internal_services: list[str] = Field(default_factory=list)
    internal_addresses: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INTERNAL_ADDRESSES)
    )

    @field_validator("percentiles")
    @classmethod
    def _in_range(cls, value: list[float]) -> list[float]:
        for q in value:
            if not 0 < q <= 100:
                raise ValueError(f"percentiles must be in (0, 100], got {q!r}")
        return value

    @field_validator("internal_addresses")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"internal_addresses: {pattern!r} is not a regular expression "
                    f"({error})"
                ) from error
        return value
