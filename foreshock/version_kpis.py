"""The crash rate of each mobile app version, beside the service's overall one.

A new release that crashes hides in the overall crash rate while few users
have it, and a crash uploaded by the next release must not be charged to
it: an app uploads a crash report when it is launched again, often after
the update. So launches and crashes are also counted per version they
happened in (`launches@5.2.0`, see `foreshock.measure`), and each version
gets its own KPI, `crash_rate@5.2.0`: crashes of that version per launch of
that version in the window. The versions one window counts apart are
bounded; the rest share the version `other`.

These KPIs are a breakdown of the service's crash rate, published to tell
which version crashed, and not judged by a detector: a version with a few
launches per window swings from 0 to several per cent on one crash, which
the detectors of continuous KPIs take for anomalies. The overall crash rate
is judged and pages as before. They can be judged once a detector meant
for small counts (one that tests a version's crashes against the service's
rate) is among the models.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from foreshock.kpis import Aggregate, Kpi, ratio

__all__ = ["VERSIONED", "VersionKpis", "is_breakdown"]

# The KPI that is split by version, and the counters it is made of.
VERSIONED = "crash_rate@"
_COUNTERS = ("launches@", "crashes@")


def is_breakdown(kpi: str) -> bool:
    """Whether the KPI named `kpi` is one version's share of a service's."""
    return kpi.startswith(VERSIONED)


@dataclass
class VersionKpis:
    """Makes, and remembers, the KPI of each app version a flow meets."""

    _kpis: dict[str, Kpi] = field(default_factory=dict)

    def names(self, aggregate: Aggregate, known: set[str]) -> Iterator[str]:
        """The version KPIs a window of one service has, or had before."""
        names = {
            VERSIONED + counter.partition("@")[2]
            for counter in aggregate.counts
            if counter.startswith(_COUNTERS)
        }
        names.update(name for name in known if name.startswith(VERSIONED))
        yield from sorted(names)

    def get(self, name: str) -> Kpi | None:
        """The KPI of `name`, made from the name alone if it is a version's.

        Made from the name, so that a store restored from a snapshot knows
        the versions its series memory lists.
        """
        if not name.startswith(VERSIONED):
            return None
        kpi = self._kpis.get(name)
        if kpi is None:
            version = name[len(VERSIONED) :]
            compute = ratio(f"crashes@{version}", f"launches@{version}")
            sources = ("app_launch", "app_crash")
            kpi = Kpi(name, "functionality", "up", "1", sources, compute)
            self._kpis[name] = kpi
        return kpi
