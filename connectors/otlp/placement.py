"""Which service and layer OTLP telemetry belongs to.

The service is the resource's `service.name` (OpenTelemetry semantic
conventions), qualified by `service.namespace` when configured. Telemetry
without one (a host or cluster receiver's) is named after the workload, pod,
container or host that produced it and sits at the infrastructure layer. The
layer comes from the first placement rule that matches (see
`connectors.otlp.settings`), else from the configured default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from connectors.otlp.settings import DEFAULT_RULES, OtlpSettings, PlacementRule
from foreshock.layers import Layer
from foreshock.schema import Attribute

__all__ = ["Place", "Placer", "attributes_of"]

Attributes = dict[str, Attribute]

# Where a name comes from when the resource has no service.name, most specific
# first: the workload outlives its pods, a pod its containers.
_WORKLOAD_KEYS = (
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
    "k8s.pod.name",
    "container.name",
    "host.name",
    "k8s.node.name",
)
_UNKNOWN_SERVICE = "unknown_service"
# Resource attributes copied onto every event, under shorter names.
_KEPT = {
    "service.instance.id": "instance",
    "deployment.environment.name": "environment",
    "deployment.environment": "environment",
    "k8s.namespace.name": "k8s.namespace",
    "host.name": "host",
}


def attributes_of(pairs: Iterable[KeyValue]) -> Attributes:
    """OTLP key-value pairs as plain values; arrays and maps become strings."""
    out: Attributes = {}
    for pair in pairs:
        value = pair.value
        kind = value.WhichOneof("value")
        if kind == "string_value":
            out[pair.key] = value.string_value
        elif kind == "int_value":
            out[pair.key] = value.int_value
        elif kind == "double_value":
            out[pair.key] = value.double_value
        elif kind == "bool_value":
            out[pair.key] = value.bool_value
        elif kind is not None:
            out[pair.key] = str(getattr(value, kind)).strip()
    return out


@dataclass(frozen=True, slots=True)
class Place:
    """Where telemetry counts: a service at a layer, or nowhere (`excluded`)."""

    service: str
    layer: Layer
    attributes: Mapping[str, Attribute]
    excluded: bool = False


@dataclass(frozen=True, slots=True)
class _Rule:
    patterns: tuple[tuple[str, re.Pattern[str]], ...]
    rule: PlacementRule

    def matches(self, *sources: Mapping[str, Attribute]) -> bool:
        for key, pattern in self.patterns:
            value = _lookup(key, sources)
            if value is None or pattern.fullmatch(str(value)) is None:
                return False
        return True


def _lookup(key: str, sources: tuple[Mapping[str, Attribute], ...]) -> Attribute | None:
    for source in sources:
        value = source.get(key)
        if value is not None:
            return value
    return None


class Placer:
    """Places resources and the items in them, by rules compiled once."""

    def __init__(self, settings: OtlpSettings) -> None:
        self._settings = settings
        self._rules = tuple(
            _Rule(tuple((k, re.compile(p)) for k, p in r.match.items()), r)
            for r in (*settings.rules, *DEFAULT_RULES)
        )
        # Keys that rules read, so that an item whose attributes hold none of
        # them can reuse the placement of its resource.
        self.rule_keys = frozenset(k for r in self._rules for k, _ in r.patterns)

    def place(
        self, resource: Attributes, *items: Mapping[str, Attribute]
    ) -> Place | None:
        """The place of an item (metric, point or span) of `resource`.

        `items` are the item's own attributes, most specific first, with
        "metric.name" or "span.name" among them. None when no name for the
        service can be found.
        """
        sources = (*items, resource)
        rule = next((r.rule for r in self._rules if r.matches(*sources)), None)
        named = self._service(resource, rule)
        if named is None:
            return None
        service, from_workload = named

        if rule is not None and rule.layer is not None:
            layer = rule.layer
        elif from_workload:
            layer = Layer.INFRASTRUCTURE
        else:
            layer = self._settings.default_layer
        excluded = rule is not None and rule.exclude
        return Place(service, layer, _kept(resource), excluded)

    def _service(
        self, resource: Attributes, rule: PlacementRule | None
    ) -> tuple[str, bool] | None:
        if rule is not None and rule.service_from is not None:
            value = resource.get(rule.service_from)
            if value is not None and str(value):
                return str(value), False
        name = resource.get("service.name")
        if isinstance(name, str) and name and not name.startswith(_UNKNOWN_SERVICE):
            return self._qualified(name, resource), False
        for key in _WORKLOAD_KEYS:
            value = resource.get(key)
            if isinstance(value, str) and value:
                return value, True
        if isinstance(name, str) and name:
            return name, False
        return None

    def _qualified(self, name: str, resource: Attributes) -> str:
        namespace = resource.get("service.namespace")
        if self._settings.qualify_with_namespace and namespace:
            return f"{namespace}/{name}"
        return name


def _kept(resource: Attributes) -> dict[str, Attribute]:
    return {short: resource[key] for key, short in _KEPT.items() if key in resource}
