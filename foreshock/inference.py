"""Call edges inferred from which services' trouble reliably comes first.

Where neither configuration nor traces give the call graph, the order in
which services turn anomalous still hints at it: when a callee slows down,
its callers follow within minutes, time after time. `LeadLag` counts, for
each pair of services, how often trouble in one was followed by trouble in
the other within `window_s`. A pair becomes an inferred edge, follower calls
leader, once the leader came first at least `min_support` times, in at least
`min_share` of the follower's episodes, and more often than the other way.

It is a hint, not a measurement: two services fed by one upstream look like
caller and callee. Inferred edges only fill in pairs the known graph says
nothing about, and the correlator keeps them apart (`Correlator.inferred`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = ["LeadLag"]


@dataclass
class LeadLag:
    """Counts of trouble in one service followed by trouble in another."""

    window_s: float = 300.0
    min_support: int = 3
    min_share: float = 0.5
    # (leader, follower) -> times the leader's trouble came first.
    led: dict[tuple[str, str], int] = field(default_factory=dict)
    # service -> episodes of trouble seen.
    episodes: dict[str, int] = field(default_factory=dict)
    _recent: dict[str, datetime] = field(default_factory=dict)

    def observe(self, service: str, onset: datetime) -> None:
        """Trouble started in `service` at `onset` (onsets come in time order)."""
        window = timedelta(seconds=self.window_s)
        self.episodes[service] = self.episodes.get(service, 0) + 1
        for other, started in self._recent.items():
            if other != service and timedelta(0) < onset - started <= window:
                pair = (other, service)
                self.led[pair] = self.led.get(pair, 0) + 1
        self._recent[service] = onset
        horizon = onset - window
        self._recent = {s: t for s, t in self._recent.items() if t >= horizon}

    def calls(self) -> set[tuple[str, str]]:
        """The inferred (caller, callee) edges: each follower calls its leader."""
        found = set()
        for (leader, follower), n in self.led.items():
            back = self.led.get((follower, leader), 0)
            share = n / max(self.episodes.get(follower, 0), 1)
            if n >= self.min_support and share >= self.min_share and n > back:
                found.add((follower, leader))
        return found
