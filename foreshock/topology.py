"""The service topology: who calls whom, and at which layer each service sits.

Edges point from caller to callee (`web -> api -> orders-db`). A service
*depends on* everything it reaches along the edges, so a fault deep in the
stack can explain symptoms at every service above it. The graph comes from
configuration, and grows with the calls traces show (a span's service calling
another's: see `EDGE_SEPARATOR`); a service that nothing names still works,
as a graph of one.
"""

from __future__ import annotations

import csv
import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from foreshock.layers import USER_FACING, Layer

__all__ = ["EDGE_SEPARATOR", "Topology", "edge_of"]

# Series of one call edge, as traces give them, are named "caller->callee".
EDGE_SEPARATOR = "->"


def edge_of(service: str) -> tuple[str, str] | None:
    """The (caller, callee) a series name stands for, if it names an edge."""
    caller, separator, callee = service.partition(EDGE_SEPARATOR)
    if not separator or not caller or not callee:
        return None
    return caller, callee


@dataclass(frozen=True)
class Topology:
    """A directed call graph with a layer per service."""

    layers: Mapping[str, Layer] = field(default_factory=dict)
    calls: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def from_edges(
        cls, edges: Iterable[tuple[str, str]], layers: Mapping[str, Layer] | None = None
    ) -> Topology:
        return cls(dict(layers or {}), frozenset(edges))

    @classmethod
    def load(cls, path: Path) -> Topology:
        """Read a topology from JSON or CSV.

        JSON: ``{"services": {"web": "frontend", ...}, "calls": [["web",
        "api"], ...]}``. CSV: ``Source,Target`` rows (extra columns ignored),
        as call-graph exports usually are.
        """
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                rows = [(r["Source"], r["Target"]) for r in csv.DictReader(f)]
            return cls.from_edges(rows)
        document = json.loads(path.read_text())
        layers = {name: Layer(layer) for name, layer in document["services"].items()}
        edges = [(a, b) for a, b in document.get("calls", ())]
        return cls.from_edges(edges, layers)

    def with_calls(
        self, calls: Iterable[tuple[str, str]], layers: Mapping[str, Layer]
    ) -> Topology:
        """This graph with more calls; a configured layer wins over a seen one."""
        return Topology({**layers, **self.layers}, self.calls | frozenset(calls))

    @cached_property
    def _callees(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {}
        for caller, callee in sorted(self.calls):
            out.setdefault(caller, []).append(callee)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def _callers(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {}
        for caller, callee in sorted(self.calls):
            out.setdefault(callee, []).append(caller)
        return {k: tuple(v) for k, v in out.items()}

    def callees(self, service: str) -> tuple[str, ...]:
        return self._callees.get(service, ())

    def callers(self, service: str) -> tuple[str, ...]:
        return self._callers.get(service, ())

    def dependencies(self, service: str) -> dict[str, int]:
        """Every service `service` reaches, with its distance in calls."""
        return _walk(service, self.callees)

    def dependents(self, service: str) -> dict[str, int]:
        """Every service that reaches `service`, with its distance in calls."""
        return _walk(service, self.callers)

    def user_facing_dependents(self, service: str) -> list[str]:
        """The user-facing services a fault in `service` could reach."""
        return sorted(
            s for s in self.dependents(service) if self.layers.get(s) in USER_FACING
        )

    def services(self) -> list[str]:
        names = set(self.layers)
        for a, b in self.calls:
            names.update((a, b))
        return sorted(names)


def _walk(start: str, next_of: Callable[[str], tuple[str, ...]]) -> dict[str, int]:
    seen = {start: 0}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        for there in next_of(here):
            if there not in seen:
                seen[there] = seen[here] + 1
                queue.append(there)
    del seen[start]
    return seen
