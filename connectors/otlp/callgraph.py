"""The call graph that traces reveal: which service calls which.

An edge points from caller to callee, as in `foreshock.topology`. It is
learned two ways: a span whose parent span belongs to another service (the
parent's service calls the child's), and a client span that names its target
(`peer.service`, `server.address`), which also reaches databases and third
parties that send no spans of their own. Parents and children often arrive in
different messages, in either order, so recent spans are remembered, and a
child whose parent is not yet known waits for it; both memories are bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TypeVar

from foreshock.layers import Layer
from foreshock.topology import Topology

__all__ = ["CallGraph", "SpanIndex"]

_V = TypeVar("_V")


@dataclass
class CallGraph:
    """Caller -> callee edges with how often each was seen, and known layers."""

    calls: dict[tuple[str, str], int] = field(default_factory=dict)
    layers: dict[str, Layer] = field(default_factory=dict)

    def add(self, caller: str, callee: str, n: int = 1) -> None:
        """Count a call; a service calling itself is not an edge."""
        if caller != callee:
            self.calls[(caller, callee)] = self.calls.get((caller, callee), 0) + n

    def place(self, service: str, layer: Layer) -> None:
        self.layers[service] = layer

    def merge(self, other: CallGraph) -> None:
        """Add the edges and layers another shard learned."""
        for (caller, callee), n in other.calls.items():
            self.add(caller, callee, n)
        self.layers.update(other.layers)

    def topology(self) -> Topology:
        """The graph as the correlation engine reads it."""
        return Topology.from_edges(self.calls, self.layers)


class SpanIndex:
    """Recent spans' services, and children still waiting for their parent."""

    def __init__(self, graph: CallGraph, max_spans: int) -> None:
        self._graph = graph
        self._max_spans = max_spans
        self._services: OrderedDict[bytes, str] = OrderedDict()
        self._orphans: OrderedDict[bytes, list[str]] = OrderedDict()

    def add(self, span_id: bytes, parent_id: bytes, service: str) -> None:
        """Record a span and learn the edges it completes."""
        if span_id:
            self._services[span_id] = service
            _bound(self._services, self._max_spans)
            for child in self._orphans.pop(span_id, ()):
                self._graph.add(service, child)
        if not parent_id:
            return
        parent = self._services.get(parent_id)
        if parent is not None:
            self._graph.add(parent, service)
        else:
            self._orphans.setdefault(parent_id, []).append(service)
            _bound(self._orphans, self._max_spans)


def _bound(memory: OrderedDict[bytes, _V], size: int) -> None:
    while len(memory) > size:
        memory.popitem(last=False)
