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
import io
import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from foreshock.errors import UserError
from foreshock.layers import USER_FACING, Layer

__all__ = ["EDGE_SEPARATOR", "Topology", "TopologyFileError", "edge_of"]

# Series of one call edge, as traces give them, are named "caller->callee".
EDGE_SEPARATOR = "->"

# What a topology file should hold, said with every file that does not.
_EXPECTED = (
    'give JSON such as {"services": {"web": "frontend", "api": "api"}, '
    '"calls": [["web", "api"]]}, or a .csv file with Source,Target columns '
    "and a row per call"
)

_LAYER_NAMES = frozenset(layer.value for layer in Layer)


class TopologyFileError(UserError, ValueError):
    """A topology file that cannot be read as a call graph."""


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
        as call-graph exports usually are. A file that is neither, or that
        names no service, raises `TopologyFileError`.
        """
        text = _text(path)
        if path.suffix == ".csv":
            topology = cls.from_edges(_csv_edges(path, text))
        else:
            layers, edges = _json_graph(path, text)
            topology = cls.from_edges(edges, layers)
        if not topology.services():
            # A configured graph that is empty is most often an export gone
            # wrong; running on it would quietly judge each service alone.
            raise _unreadable(path, "holds no services")
        return topology

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


def _unreadable(path: Path, problem: str) -> TopologyFileError:
    return TopologyFileError(f"topology file {str(path)!r} {problem}; {_EXPECTED}")


def _text(path: Path) -> str:
    # newline="" keeps line ends inside quoted CSV fields as they are.
    try:
        with path.open(newline="") as f:
            return f.read()
    except UnicodeDecodeError:
        raise _unreadable(path, "is not UTF-8 text") from None


def _csv_edges(path: Path, text: str) -> list[tuple[str, str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames
        if header is None:
            raise _unreadable(path, "is empty")
        if "Source" not in header or "Target" not in header:
            named = ",".join(header)
            raise _unreadable(
                path, f"has no Source,Target columns (its header: {named})"
            )
        edges: list[tuple[str, str]] = []
        for row in reader:
            caller, callee = row["Source"], row["Target"]
            if not caller or not callee:
                raise _unreadable(
                    path, f"has no Source or no Target on line {reader.line_num}"
                )
            edges.append((caller, callee))
    except csv.Error as error:
        raise _unreadable(path, f"is not CSV ({error})") from None
    return edges


def _json_graph(
    path: Path, text: str
) -> tuple[dict[str, Layer], list[tuple[str, str]]]:
    if not text.strip():
        raise _unreadable(path, "is empty")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise _unreadable(path, f"is not JSON ({error.msg} at {where})") from None
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        raise _unreadable(path, 'has no "services" object')
    layers: dict[str, Layer] = {}
    for name, layer in document["services"].items():
        # `foreshock topology --format json` writes null for a service whose
        # layer is not known yet: its events will say.
        if layer is None:
            continue
        if not isinstance(layer, str) or layer not in _LAYER_NAMES:
            known = ", ".join(Layer)
            raise _unreadable(
                path,
                f"gives {name!r} the layer {json.dumps(layer)}, which is none of "
                f"{known}",
            )
        layers[name] = Layer(layer)
    calls = document.get("calls", [])
    if not isinstance(calls, list):
        raise _unreadable(path, 'has "calls" that is not a list')
    edges: list[tuple[str, str]] = []
    for call in calls:
        if (
            not isinstance(call, list)
            or len(call) != 2
            or not all(isinstance(s, str) and s for s in call)
        ):
            raise _unreadable(
                path, f'has {json.dumps(call)} in "calls", not a [caller, callee] pair'
            )
        edges.append((call[0], call[1]))
    return layers, edges


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
