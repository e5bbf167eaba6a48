"""From anomalies across layers to incidents with a ranked root cause.

The correlator reads every scored KPI window (not only anomalies: it needs to
see user-facing KPIs come back to normal). It works window by window: the
records of a window are gathered and handled together once a later window
shows up, so the result does not depend on the order records arrive in.

- A user-facing anomaly (frontend, mobile, synthetic) opens an incident, or
  joins the open incident its services share dependencies with. Anomalies of
  the services it depends on, within the lookback, become root-cause
  candidates.
- A deep-stack anomaly on a path to users, with no incident open for it, is
  published as an early warning; if users are hit later, the incident cites
  the warning and records the lead time.
- An incident resolves once every user-facing KPI that was anomalous has been
  back to normal for `resolve_after_windows` windows of real data. Missing
  data never counts as recovery.

Ranking, for each candidate service: the strength of its anomalies, how early
its first one started compared to users' first symptom, and where it sits on
the call graph. A candidate whose dependencies turned anomalous no later than
it did is probably a symptom of them and is ranked down. A rise in a service's
request rate is demand: it points at the callers that sent it, so a release
that multiplies calls is blamed on the caller, not on the callee it loads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from foreshock.layers import USER_FACING, Layer
from foreshock.records import (
    Anomaly,
    Candidate,
    EarlyWarning,
    Evidence,
    Incident,
    KpiScore,
    stable_id,
)
from foreshock.topology import Topology

__all__ = ["CorrelationConfig", "Correlator"]

Output = Incident | EarlyWarning


@dataclass(frozen=True, slots=True)
class CorrelationConfig:
    lookback_s: float = 900.0
    resolve_after_windows: int = 5
    cooldown_s: float = 1800.0
    confirm_windows: int = 1
    # An anomalous series whose next anomaly comes within this gap continues
    # the same episode: its onset stays the first window.
    episode_gap_s: float = 300.0


@dataclass(slots=True)
class _Episode:
    """A run of anomalous windows of one series."""

    onset: datetime
    last: Anomaly


@dataclass(slots=True)
class _Open:
    incident: Incident
    user_services: set[str]
    symptoms: dict[tuple[Layer, str, str], int]
    onset: datetime
    emitted_top: tuple[str, ...] = ()


@dataclass
class Correlator:
    """Turns scored KPI windows into incidents and early warnings."""

    topology: Topology = field(default_factory=Topology)
    config: CorrelationConfig = field(default_factory=CorrelationConfig)
    _pending: dict[datetime, list[KpiScore]] = field(default_factory=dict)
    _episodes: dict[tuple[Layer, str, str], _Episode] = field(default_factory=dict)
    _open: list[_Open] = field(default_factory=list)
    _warnings: dict[str, EarlyWarning] = field(default_factory=dict)
    _runs: dict[tuple[Layer, str, str], int] = field(default_factory=dict)

    def observe(self, score: KpiScore) -> list[Output]:
        """Take one scored window; handle every window older than it."""
        end = score.kpi.window_end
        self._pending.setdefault(end, []).append(score)
        ready = [w for w in self._pending if w < end]
        return [out for w in sorted(ready) for out in self._handle(w)]

    def flush(self) -> list[Output]:
        """Handle every window still gathered: the input has ended."""
        return [out for w in sorted(self._pending) for out in self._handle(w)]

    # -- one window at a time -------------------------------------------------

    def _handle(self, window_end: datetime) -> Iterator[Output]:
        scores = self._pending.pop(window_end)
        anomalies = [Anomaly.from_score(s) for s in self._confirmed(scores)]
        for a in anomalies:
            self._extend_episode(a)
        self._expire(window_end)

        user = [a for a in anomalies if a.layer in USER_FACING]
        yield from self._open_or_join(user, window_end)
        yield from self._update_open(window_end)
        deep = [a for a in anomalies if a.layer not in USER_FACING]
        yield from self._warn(deep, window_end)
        yield from self._resolve(scores, window_end)

    def _confirmed(self, scores: list[KpiScore]) -> Iterator[KpiScore]:
        # One anomalous window is often noise: a series takes part only once
        # it has been anomalous for `confirm_windows` windows in a row.
        for s in scores:
            key = (s.kpi.layer, s.kpi.service, s.kpi.kpi)
            run = self._runs.get(key, 0) + 1 if s.anomalous else 0
            self._runs[key] = run
            if run >= self.config.confirm_windows:
                yield s

    def _extend_episode(self, a: Anomaly) -> None:
        key = (a.layer, a.service, a.kpi)
        episode = self._episodes.get(key)
        gap = timedelta(seconds=self.config.episode_gap_s)
        if episode is None or a.window_start - episode.last.window_end > gap:
            length = a.window_end - a.window_start
            onset = a.window_start - (self.config.confirm_windows - 1) * length
            self._episodes[key] = _Episode(onset, a)
        else:
            episode.last = a

    def _expire(self, now: datetime) -> None:
        horizon = now - timedelta(seconds=self.config.lookback_s)
        for key in [
            k for k, e in self._episodes.items() if e.last.window_end < horizon
        ]:
            del self._episodes[key]

    # -- incidents --------------------------------------------------------------

    def _open_or_join(self, user: list[Anomaly], now: datetime) -> Iterator[Output]:
        by_service: dict[str, list[Anomaly]] = defaultdict(list)
        for a in user:
            by_service[a.service].append(a)
        for service, found in sorted(by_service.items()):
            current = self._incident_for(service)
            if current is None:
                current = self._start(service, found, now)
                self._open.append(current)
                yield current.incident
            current.user_services.add(service)
            for a in found:
                current.symptoms[(a.layer, a.service, a.kpi)] = 0

    def _incident_for(self, service: str) -> _Open | None:
        # Users of the web and of the app hit by one failed dependency share
        # one incident: they join when they share a dependency.
        mine = set(self.topology.dependencies(service))
        for current in self._open:
            if service in current.user_services or mine & self._scope(current):
                return current
        return None

    def _start(self, service: str, found: list[Anomaly], now: datetime) -> _Open:
        onset = min(self._onset(a) for a in found)
        incident_id = stable_id("incident", service, onset.isoformat())
        current = _Open(
            incident=Incident(
                id=incident_id,
                status="open",
                title="",
                opened_at=now,
                updated_at=now,
                resolved_at=None,
                user_facing=[],
                root_causes=[],
                chain=[],
                lead_time_s=None,
                early_warnings=[],
            ),
            user_services={service},
            symptoms={},
            onset=onset,
        )
        current.incident = self._picture(current, now, "open")
        current.emitted_top = _top(current.incident)
        return current

    def _update_open(self, now: datetime) -> Iterator[Output]:
        for current in self._open:
            if current.incident.opened_at == now:
                continue
            picture = self._picture(current, now, "updated")
            if _top(picture) != current.emitted_top or len(picture.chain) != len(
                current.incident.chain
            ):
                current.emitted_top = _top(picture)
                current.incident = picture
                yield picture

    def _resolve(self, scores: list[KpiScore], now: datetime) -> Iterator[Output]:
        for s in scores:
            key = (s.kpi.layer, s.kpi.service, s.kpi.kpi)
            for current in self._open:
                if key not in current.symptoms:
                    continue
                # A lone anomalous window does not undo a recovery (the same
                # hysteresis that keeps it from opening an incident).
                confirmed = self._runs.get(key, 0) >= self.config.confirm_windows
                healthy = s.kpi.state == "ok" and not confirmed
                current.symptoms[key] = current.symptoms[key] + 1 if healthy else 0
        done = [
            c
            for c in self._open
            if min(c.symptoms.values(), default=0) >= self.config.resolve_after_windows
        ]
        for current in done:
            self._open.remove(current)
            final = self._picture(current, now, "resolved")
            yield final.model_copy(update={"resolved_at": now})

    # -- early warnings -----------------------------------------------------------

    def _warn(self, deep: list[Anomaly], now: datetime) -> Iterator[Output]:
        cooldown = timedelta(seconds=self.config.cooldown_s)
        for service in sorted({a.service for a in deep}):
            at_risk = self.topology.user_facing_dependents(service)
            if not at_risk or any(service in self._scope(c) for c in self._open):
                continue
            last = self._warnings.get(service)
            if last is not None and now - last.published_at < cooldown:
                continue
            evidence = self._evidence_of(service)
            onset = min(e.onset for e in evidence)
            warning = EarlyWarning(
                id=stable_id("early-warning", service, onset.isoformat()),
                service=service,
                layer=evidence[0].layer,
                onset=onset,
                published_at=now,
                at_risk=at_risk,
                evidence=evidence,
            )
            self._warnings[service] = warning
            yield warning

    # -- the picture of an incident -------------------------------------------------

    def _scope(self, current: _Open) -> set[str]:
        scope = set(current.user_services)
        for s in current.user_services:
            scope |= set(self.topology.dependencies(s))
        return scope

    def _onset(self, a: Anomaly) -> datetime:
        episode = self._episodes.get((a.layer, a.service, a.kpi))
        return episode.onset if episode is not None else a.window_start

    def _evidence_of(self, service: str) -> list[Evidence]:
        found = [
            Evidence.from_anomaly(e.last, e.onset)
            for (layer, s, kpi), e in self._episodes.items()
            if s == service
        ]
        return sorted(found, key=lambda e: (e.onset, -e.score, e.kpi))

    def _picture(self, current: _Open, now: datetime, status: str) -> Incident:
        scope = self._scope(current)
        evidence = {s: ev for s in sorted(scope) if (ev := self._evidence_of(s))}
        user = [
            e
            for s in sorted(current.user_services)
            for e in evidence.get(s, [])
            if e.layer in USER_FACING
        ]
        ranked = _rank(self.topology, current, evidence)
        chain = sorted(
            (min(ev, key=lambda e: e.onset) for ev in evidence.values()),
            key=lambda e: (e.onset, e.service),
        )
        first_user = min((e.onset for e in user), default=current.onset)
        first_deep = min(
            (e.onset for e in chain if e.layer not in USER_FACING), default=None
        )
        lead = (
            (first_user - first_deep).total_seconds()
            if first_deep is not None and first_deep < first_user
            else None
        )
        warned = sorted(
            w.id for s, w in self._warnings.items() if s in scope and w.onset <= now
        )
        title = _title(user, ranked)
        return current.incident.model_copy(
            update={
                "status": status,
                "title": title,
                "updated_at": now,
                "user_facing": user,
                "root_causes": ranked,
                "chain": chain,
                "lead_time_s": lead,
                "early_warnings": warned,
            }
        )


def _top(incident: Incident) -> tuple[str, ...]:
    return tuple(c.service for c in incident.root_causes[:3])


def _title(user: list[Evidence], ranked: list[Candidate]) -> str:
    felt = ", ".join(sorted({f"{e.service} {e.kpi}" for e in user})[:3]) or "users"
    if not ranked:
        return f"{felt} degraded"
    return f"{felt} degraded; probable root cause {ranked[0].service}"


def _rank(
    topology: Topology, current: _Open, evidence: dict[str, list[Evidence]]
) -> list[Candidate]:
    demand = {s for s, ev in evidence.items() if _is_demand(ev)}
    scored: list[tuple[float, datetime, str, list[str], list[Evidence]]] = []
    for service, ev in evidence.items():
        reasons: list[str] = []
        own = [e for e in ev if not _is_throughput_up(e)]
        induced = [
            e
            for callee in topology.callees(service)
            if callee in demand
            for e in evidence[callee]
            if _is_throughput_up(e)
        ]
        if induced and service not in demand:
            reasons.append(
                "its callees received more requests than usual: "
                + ", ".join(sorted({e.service for e in induced}))
            )
        cited = own + induced
        if not cited:
            continue
        onset = min(e.onset for e in cited)
        strength = max(e.score for e in cited) + 0.05 * min(len(cited) - 1, 4)
        lead = (current.onset - onset).total_seconds()
        earliness = 1.0 + 0.5 * max(-1.0, min(1.0, lead / 900.0))
        if lead > 0:
            reasons.append(f"anomalous {lead / 60:.0f} min before users were affected")
        explained_by = [
            d
            for d in topology.dependencies(service)
            if d in evidence
            and d not in demand
            and min(e.onset for e in evidence[d]) <= onset
        ]
        graph = 0.6 if explained_by else 1.0
        if explained_by:
            reasons.append(
                "may be explained by its dependencies: "
                + ", ".join(sorted(explained_by))
            )
        else:
            reasons.append("no dependency of it was anomalous earlier")
        if service in demand:
            graph *= 0.5
            reasons.append("its request rate rose: demand from its callers")
        scored.append((strength * earliness * graph, onset, service, reasons, cited))

    scored.sort(key=lambda t: (-t[0], t[1], t[2]))
    distances = _distances(topology, current.user_services)
    return [
        Candidate(
            service=service,
            layer=cited[0].layer,
            rank=i + 1,
            score=round(score, 4),
            onset=onset,
            distance=distances.get(service),
            reasons=reasons,
            evidence=cited,
        )
        for i, (score, onset, service, reasons, cited) in enumerate(scored[:5])
    ]


def _distances(topology: Topology, user_services: Iterable[str]) -> dict[str, int]:
    best: dict[str, int] = {s: 0 for s in user_services}
    for s in user_services:
        for d, n in topology.dependencies(s).items():
            best[d] = min(best.get(d, n), n)
    return best


def _is_throughput_up(e: Evidence) -> bool:
    # Network bytes of a container rise with any work; only request rates of
    # services say that more was asked of them.
    return (
        e.dimension == "throughput"
        and e.direction == "up"
        and e.layer is not Layer.INFRASTRUCTURE
    )


def _is_demand(ev: list[Evidence]) -> bool:
    return any(_is_throughput_up(e) for e in ev)
