"""Which end of a troubled call edge is to blame.

A call edge's series (`caller->callee`, as traces or per-edge metrics give
them) times calls from the caller's side: a slow callee, a slow network
between the two, or a caller starved of network all show there, and often
minutes before the service at fault shows it in its own series. A delay
injected on a pod's network, for one, leaves that pod's own latency as it
was, while every caller's view of its calls slows down at once.

The end to blame is the one the troubled edges have in common. A callee
whose calls are slow from several callers, or from its only caller, is the
suspect; a caller is blamed instead when a larger share of its own calls is
slow than of the calls into any callee it waits on, as when its own network
is what delays them. A tie goes to the callee, the usual reason for a slow
call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from foreshock.topology import Topology, edge_of

__all__ = ["suspect_of", "suspects"]


def suspects(troubled: Iterable[str], topology: Topology) -> dict[str, str]:
    """The service to blame for each troubled edge series among `troubled`.

    `troubled` holds series names; those that name no edge are left out of
    the result.
    """
    named = {name: e for name in troubled if (e := edge_of(name)) is not None}
    edges = set(named.values())
    slow_out = Counter(caller for caller, _ in edges)
    slow_in = Counter(callee for _, callee in edges)
    found: dict[str, str] = {}
    for name, (caller, callee) in named.items():
        out_share = slow_out[caller] / _count(topology.callees(caller), callee)
        in_share = slow_in[callee] / _count(topology.callers(callee), caller)
        blamed = caller if slow_out[caller] > 1 and out_share > in_share else callee
        found[name] = blamed
    return found


def suspect_of(name: str, troubled: Iterable[str], topology: Topology) -> str:
    """The service series `name` is trouble of: its own, or an edge's suspect."""
    if edge_of(name) is None:
        return name
    return suspects([name, *troubled], topology)[name]


def _count(neighbours: tuple[str, ...], other: str) -> int:
    # The graph may not know the edge yet: it counts as one neighbour.
    return len({*neighbours, other})
