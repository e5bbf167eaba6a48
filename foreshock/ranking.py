"""Root-cause candidates of an incident or early warning, ranked with reasons.

Ranking, for each candidate service: the strength of its anomalies and where
it sits on the call graph. How long before the users a candidate turned
anomalous is given as a reason but not scored: a series that drifted or
changed level long ago (a standing condition) is early without being the
cause, while a fault and the symptoms it causes usually start in the same
few minutes; the order that matters is along the calls.

A candidate whose trouble can be explained by a dependency's is probably a
symptom of it and is ranked down: the dependency turned anomalous no later
than it did, its trouble could travel up to it (directly, or through
callers troubled too), and it is large enough (a few milliseconds more at a
database do not explain half a second more above it). A fall in request
rate alone is never a cause. A rise in request rate is demand: it is
followed up the call graph through callers whose own rate rose too, to
where it started (a service nobody calls, or callers whose rate held but who
now call more per request, as after a release). The services it started
from are credited with it; services that turned anomalous once that demand
arrived at them are ranked down as loaded by it. A third-party endpoint is
ranked a little below a service of our own at equal evidence. A deploy or
other change of a candidate shortly before its trouble raises it, and is
given as the first reason.

Speed and failures of a dependency reach its callers at once. Evidence of
that kind that was anomalous for a while before users were hit, and no
worse once they were (the correlator says which), shows what users put up
with, not why they are hit now: when another service of the deep stack has
trouble of its own that came with the users', a candidate is judged by its
other evidence, and one with none other is ranked down.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta

from foreshock.layers import USER_FACING, Layer
from foreshock.records import Anomaly, Candidate, Change, Evidence
from foreshock.topology import Topology

__all__ = ["FELT_BY_CALLERS", "is_symptom", "is_throughput_up", "rank_candidates"]

# An incident names its five likeliest causes.
_KEEP = 5
# A third-party endpoint is seen only through its callers' calls: its timing
# holds the network and whatever stands behind the host (often services of
# our own behind a load balancer). At equal evidence, a service of our own is
# the likelier cause.
_THIRD_PARTY = 0.9
# What callers feel of a dependency, at once: its speed and its failures.
FELT_BY_CALLERS = frozenset({"availability", "functionality", "speed"})
# A candidate whose evidence all held steady while users were fine is ranked
# as one that may be explained by its dependencies.
_STANDING = 0.6
_FAILURES = frozenset({"availability", "functionality"})


def rank_candidates(
    topology: Topology,
    users: set[str],
    users_hit: datetime,
    evidence: dict[str, list[Evidence]],
    changes: list[Change],
    window: timedelta,
    standing: Collection[tuple[str, str]] = (),
    users_affected: bool = True,
) -> list[Candidate]:
    """The five likeliest causes among the services with `evidence`.

    `users` are the user-facing services affected (or at risk), `users_hit`
    when their trouble started (for a warning, whose users are not affected
    yet, `users_affected` is False and `users_hit` is now), `changes` the deploys
    and other changes in scope, and `window` the window length. `standing`
    names the (service, KPI) of evidence that was as bad while users were
    still fine as since they were hit. It does not say why they are hit now
    as well as trouble that came with them: a candidate's strength comes
    from its other evidence, and one with no other is ranked down when
    another service of the deep stack has trouble of its own (nothing
    explains it) that came with the users'.
    """
    origins = _demand_origins(topology, evidence)
    passed_on = {s for s, found in origins.items() if s not in found}
    demand_onset: dict[str, datetime] = {}
    for rising, found in origins.items():
        start = min(e.onset for e in evidence[rising] if is_throughput_up(e))
        for o in found:
            demand_onset[o] = min(start, demand_onset.get(o, start))
    senders = set(demand_onset)
    # Services with standing evidence: the strength of the rest, if any.
    steady: dict[str, float | None] = {}
    news: set[str] = set()
    # (graph factor, onset, service, reasons, evidence cited)
    scored: list[tuple[float, datetime, str, list[str], list[Evidence]]] = []
    for service in sorted(evidence.keys() | senders):
        ev = evidence.get(service, [])
        reasons: list[str] = []
        own = [e for e in ev if not is_throughput_up(e)]
        if service in origins and service not in passed_on:
            own += [e for e in ev if is_throughput_up(e)]
        sent = sorted(
            s for s, found in origins.items() if service in found and s != service
        )
        induced = [e for s in sent for e in evidence[s] if is_throughput_up(e)]
        if induced:
            reasons.append(
                "the extra requests its callees received started here: "
                + ", ".join(sent)
            )
        cited = own + induced
        # A fall in request rate alone is less demand from the callers, or
        # callers that fail before calling: a symptom, never a cause.
        if all(e.dimension == "throughput" and e.direction == "down" for e in cited):
            continue
        onset = min(e.onset for e in cited)
        fresh = [e for e in cited if (e.service, e.kpi) not in standing]
        lead = (users_hit - onset).total_seconds()
        if lead > 0 and users_affected:
            reasons.append(f"anomalous {lead / 60:.0f} min before users were affected")
        elif lead > 0:
            reasons.append(f"anomalous for {lead / 60:.0f} min")
        # A dependency that turned anomalous once this service's extra
        # requests reached it is loaded by them, not an explanation; one they
        # did not reach still explains it.
        sent_from = demand_onset.get(service)
        # What a dependency can explain is trouble: a shift in traffic that
        # came first (more bytes received, say) does not make it later.
        troubled_at = min(
            (e.onset for e in own if e.dimension != "throughput"), default=onset
        )
        explained_by = [
            d
            for d in _troubled_reach(topology, service, evidence)
            if (d_onset := _felt_by_callers(evidence.get(d, []))) is not None
            and d not in origins
            and d_onset <= troubled_at
            and (
                sent_from is None
                or d_onset < sent_from
                or not _reached(d, service, origins, topology)
            )
            and _can_explain(evidence.get(d, []), own)
        ]
        loaded_by = sorted(
            o
            for o, start in demand_onset.items()
            if o != service
            and start <= onset
            and _reached(service, o, origins, topology)
        )
        graph = 0.6 if explained_by or loaded_by else 1.0
        if explained_by:
            reasons.append(
                "may be explained by its dependencies: "
                + ", ".join(sorted(explained_by))
            )
        elif not loaded_by:
            reasons.append("no earlier trouble of a dependency explains it")
        if loaded_by:
            reasons.append(
                "may be load from the extra requests sent by " + ", ".join(loaded_by)
            )
        if service in passed_on:
            graph *= 0.5
            reasons.append(
                "its request rate rose: demand sent by "
                + ", ".join(sorted(origins[service]))
            )
        layer = topology.layers.get(service, cited[0].layer)
        if graph == 1.0 and layer not in USER_FACING and _troubled(fresh):
            news.add(service)
        if len(fresh) < len(cited):
            steady[service] = _strength(fresh) if fresh else None
        if topology.layers.get(service, cited[0].layer) is Layer.THIRD_PARTY:
            graph *= _THIRD_PARTY
        change = _cause_of(changes, service, onset, window)
        if change is not None:
            graph *= 1.25
            before = (onset - change.time).total_seconds() / 60
            reasons.insert(
                0,
                f"{change.describe()}, {max(before, 0):.0f} min before its trouble",
            )
        scored.append((graph, onset, service, reasons, cited))

    ranked: list[tuple[float, datetime, str, list[str], list[Evidence]]] = []
    for graph, onset, service, reasons, cited in scored:
        strength = _strength(cited)
        if service in steady and news - {service}:
            rest = steady[service]
            if rest is None:
                reasons.append(
                    "its trouble was as bad before users were affected, while "
                    "they were fine"
                )
            strength = rest if rest is not None else strength * _STANDING
        ranked.append((strength * graph, onset, service, reasons, cited))
    ranked.sort(key=lambda t: (-t[0], t[1], t[2]))
    distances = _distances(topology, users)
    return [
        Candidate(
            service=service,
            layer=topology.layers.get(service, cited[0].layer),
            rank=i + 1,
            score=round(score, 4),
            onset=onset,
            distance=distances.get(service),
            reasons=reasons,
            evidence=cited,
        )
        for i, (score, onset, service, reasons, cited) in enumerate(ranked[:_KEEP])
    ]


def _troubled(evidence: list[Evidence]) -> bool:
    # Traffic alone is no trouble of a service's own: it is demand, judged
    # apart.
    return any(e.dimension != "throughput" for e in evidence)


def _strength(evidence: list[Evidence]) -> float:
    # The strongest anomaly, and a little for each further series that shows
    # it, up to four.
    return max(e.score for e in evidence) + 0.05 * min(len(evidence) - 1, 4)


def _demand_origins(
    topology: Topology, evidence: dict[str, list[Evidence]]
) -> dict[str, set[str]]:
    """For each service whose request rate rose, where that demand came from.

    Demand is followed up the call graph through callers whose own request
    rate rose too. It stops at a service nobody calls (users came, or a
    client started calling more: the demand starts there) or at callers whose
    rate stayed put (they call more per request of their own, say after a
    release: the demand starts with them, not with the service they load).
    """
    rising = {s for s, ev in evidence.items() if any(map(is_throughput_up, ev))}
    origins: dict[str, set[str]] = {}

    def trace(service: str, path: frozenset[str]) -> set[str]:
        if service in origins:
            return origins[service]
        callers = [c for c in topology.callers(service) if c not in path]
        if not callers:
            found = {service}
        else:
            up = [c for c in callers if c in rising]
            found = (
                set().union(*(trace(c, path | {c}) for c in up)) if up else set(callers)
            )
        origins[service] = found
        return found

    for service in sorted(rising):
        trace(service, frozenset({service}))
    return {s: origins[s] for s in rising}


def _felt_by_callers(evidence: list[Evidence]) -> datetime | None:
    """When a dependency's trouble started in a way its callers can feel.

    Callers feel a dependency through its calls: their speed, errors,
    availability. How busy it is (memory, CPU, bytes sent, request rate)
    reaches no caller by itself; when only that is anomalous, the
    dependency explains none of its callers' trouble.
    """
    felt = [e.onset for e in evidence if e.dimension in FELT_BY_CALLERS]
    return min(felt, default=None)


def _troubled_reach(
    topology: Topology, service: str, evidence: dict[str, list[Evidence]]
) -> set[str]:
    """The dependencies whose trouble could have reached `service`.

    Trouble travels up the calls waiting on it: a dependency reaches the
    service directly, or through callers that are troubled themselves. A
    deep dependency behind healthy services explains nothing above them.
    """
    found: set[str] = set()
    frontier = [service]
    while frontier:
        here = frontier.pop()
        for callee in topology.callees(here):
            if callee in found or callee == service:
                continue
            found.add(callee)
            if _felt_by_callers(evidence.get(callee, [])) is not None:
                frontier.append(callee)
    return found


def _reached(
    service: str, origin: str, origins: dict[str, set[str]], topology: Topology
) -> bool:
    """Whether extra requests sent by `origin` arrived at `service`.

    They arrive at a service whose request rate rose with them, or at the
    callees of one. A caller that sends more per request need not send more
    to each of its callees: a callee whose rate held, behind no caller whose
    rate rose, is not known to have received any of them.
    """
    if service in origins and origin in origins[service]:
        return True
    carriers = {s for s, found in origins.items() if origin in found}
    return any(c in carriers for c in topology.callers(service))


def _added_delay(evidence: list[Evidence]) -> float | None:
    """The largest delay a service's speed evidence adds over its expected value."""
    added = [
        e.value - e.expected
        for e in evidence
        if e.dimension == "speed" and e.direction == "up" and e.expected is not None
    ]
    return max(added, default=None)


def _can_explain(dependency: list[Evidence], own: list[Evidence]) -> bool:
    """Whether a dependency's trouble is large enough to explain a caller's.

    A caller waits on its dependency, so a slow dependency can explain a slow
    caller only by the delay it adds: a few milliseconds more at a database
    do not explain half a second more at the service calling it. A slow
    dependency makes its callers fail only through their timeouts, and a
    caller that waits that long is slow itself: failures of a caller that is
    no slower are its own, not the dependency's.

    Delays are compared as their KPIs give them, since evidence carries no
    unit: a system whose services report speed in different units (seconds
    here, milliseconds there) is misjudged until its KPIs share one.
    """
    felt = {e.dimension for e in dependency if e.dimension in FELT_BY_CALLERS}
    if felt != {"speed"}:
        return True
    mine, theirs = _added_delay(own), _added_delay(dependency)
    if mine is None or mine <= 0:
        slow = any(e.dimension == "speed" and e.direction == "up" for e in own)
        return slow or not any(e.dimension in _FAILURES for e in own)
    return theirs is not None and theirs >= 0.5 * mine


def _cause_of(
    changes: list[Change], service: str, onset: datetime, window: timedelta
) -> Change | None:
    """The latest change of `service` before its first anomalous window ended."""
    before = [c for c in changes if c.service == service and c.time < onset + window]
    return before[-1] if before else None


def _distances(topology: Topology, user_services: Iterable[str]) -> dict[str, int]:
    best: dict[str, int] = {s: 0 for s in user_services}
    for s in user_services:
        for d, n in topology.dependencies(s).items():
            best[d] = min(best.get(d, n), n)
    return best


def is_symptom(e: Anomaly | Evidence) -> bool:
    # What users feel: availability, errors, speed of a user-facing service.
    # Its traffic is context: a rise is demand that may cause trouble, a fall
    # is seen as well by the availability of the synthetic checks.
    return e.layer in USER_FACING and e.dimension != "throughput"


def is_throughput_up(e: Anomaly | Evidence) -> bool:
    # Network bytes of a container rise with any work; only request rates of
    # services say that more was asked of them.
    return (
        e.dimension == "throughput"
        and e.direction == "up"
        and e.layer is not Layer.INFRASTRUCTURE
    )
