"""From anomalies across layers to incidents with a ranked root cause.

The correlator reads every scored KPI window (not only anomalies: it needs to
see user-facing KPIs come back to normal). It works window by window: the
records of a window are gathered and handled together once a later window
shows up, so the result does not depend on the order records arrive in.

- A user-facing symptom (availability, errors or speed of a frontend, mobile
  or synthetic service; their traffic is context, not a symptom) opens an
  incident, or joins the open incident its services share dependencies
  with. Anomalies of the services it depends on, within the lookback, become
  root-cause candidates; an open incident keeps the evidence it has seen, so
  a long one keeps its chain and lead time.
- Deep-stack trouble on a path to users, with no incident open for it, is
  published as an early warning once a series has been anomalous for
  `warn_confirm_windows` windows, or at once when one window shows the
  service troubled in two independent ways (two kinds of trouble, or two
  callers timing its calls slow). A memory or CPU series barely off its
  level is no trouble, however rare the step; a series that keeps showing
  lone anomalous windows needs one window more. Trouble in the same or a
  neighbouring service (caller or callee), starting within an episode gap
  of a warning's first trouble, joins it (same id, status "updated")
  instead of warning anew, and so does any trouble threatening the same
  users that starts in the very window the warning's did; so does a new
  series of a member service, of a dimension it was warned about, while
  that episode goes on. If users are hit later, the incident cites the
  warning and records the lead time.
- An incident resolves once every user-facing KPI that was anomalous has been
  back to normal for `resolve_after_windows` windows of real data: not
  anomalous, and back near its level from before the incident (what it
  still lacks of that level is at most `resolve_excess_share` of what it
  lacked when it joined), since a detector that learns a long failure as
  normal stops flagging it while users still suffer. Missing data never
  counts as recovery. While an incident is open, each series' evidence is
  its strongest window so far: what the failure showed does not wear away
  as detectors adapt, and neither does the ranking built on it. Within the
  cool-down after, its tail opens no warning: trouble in its scope that
  began while it was open, and trouble of the service it blamed first. Its
  tail can join a warning that new trouble opened. Users hit again reopen
  it.
- A service whose every series has no data is evidence in an incident when
  its users fail, and otherwise a data gap for the telemetry pipeline's
  owners (`DataGap`), never a page.
- Deploys and other changes (`Change`) hold the changed service's anomalies
  for `change_grace_s`; when the grace ends its series are compared with
  their level before the change. A change shortly before a candidate's
  trouble is offered as its probable cause.
- Anomalies of a detector still warming up come from its plain fallback
  rule; they page like any other unless `page_while_warming_up` is off. A
  static objective breached (`Kpi.objective`) is an anomaly whatever the
  detector learned.
- A backfill window (`KpiRecord.backfill`: old news when it closed, as when
  a backlog is replayed after downtime) is scored and learned, and its
  anomalies are published with the mark, but it never pages or warns.
- A call edge's series (`caller->callee`) is trouble of the end the troubled
  edges share, the callee unless a caller's calls are slow across the board
  (`foreshock.edges`): a delay on a service's network warns of it before
  its own series move.
- The call graph is the configured one, grown by the calls span edge series
  show, and, if `infer_calls` is on, by edges inferred from which services'
  trouble reliably comes first (`foreshock.inference`).

Ranking is `foreshock.ranking`'s. For an incident, the correlator tells it
which evidence felt through calls (speed, errors, availability) was
anomalous for `standing_windows` windows before users were hit and has not
grown by `standing_growth` since: a level users put up with.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from foreshock.edges import suspects
from foreshock.feedback import SuppressionBook
from foreshock.inference import LeadLag
from foreshock.layers import USER_FACING, Layer
from foreshock.ranking import FELT_BY_CALLERS, is_symptom, rank_candidates
from foreshock.records import (
    Anomaly,
    Candidate,
    Change,
    DataGap,
    EarlyWarning,
    Evidence,
    Incident,
    KpiScore,
    stable_id,
)
from foreshock.topology import Topology, edge_of

__all__ = ["CorrelationConfig", "Correlator", "Output", "ShardProgress"]

EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)

Output = Incident | EarlyWarning | DataGap


@dataclass(frozen=True, slots=True)
class ShardProgress:
    """How far one input shard (a Kafka partition) has closed its windows.

    A flow's window step sends one for each batch of windows it closes:
    `records` counts the KPI records it emitted per window end (corrections
    of closed windows left out), and `closed_through` is the end of its
    latest closed window, or None while the shard holds nothing back (idle
    past its timeout, or at the end of its input). Once shards report, the
    correlator judges a window only when every shard has closed it and
    every score of it has arrived: however the shards are spread over
    processes, and whatever their timing, each window is judged whole.
    """

    shard: str
    closed_through: datetime | None
    records: Mapping[datetime, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CorrelationConfig:
    lookback_s: float = 900.0
    resolve_after_windows: int = 5
    # A user-facing KPI is back to its baseline when what it still lacks of
    # its level before the incident is at most this share of what it lacked
    # when it joined the incident. The detector's verdict alone is not
    # enough: one that has learned a long outage as normal stops flagging
    # it while users still suffer.
    resolve_excess_share: float = 0.25
    cooldown_s: float = 1800.0
    confirm_windows: int = 1
    # An anomalous series whose next anomaly comes within this gap (or one
    # window, if longer) continues the same episode: its onset stays the
    # first window. Beyond it, trouble is new and warns anew.
    episode_gap_s: float = 180.0
    # A detector still warming up judges by a plain rule (see models/); its
    # anomalies page unless this is off, when they are only published.
    page_while_warming_up: bool = True
    # A service silent (every series `no_data`) for this many windows is
    # evidence in an incident, or else a data gap.
    silence_windows: int = 2
    # Deep metrics are noisier than what users feel: a deep series warns only
    # after this many anomalous windows in a row.
    warn_confirm_windows: int = 2
    # A service warns after one window when the window its trouble starts in
    # shows it troubled in this many independent ways: kinds of trouble
    # (slower and busier), or callers whose calls into it are slow. 0 turns
    # this off.
    warn_witnesses: int = 2
    # A series with this many lone anomalous windows (one window, then
    # normal again) within `warn_noisy_lookback_s` is noisy for now: two
    # anomalous windows in a row come by chance there, so it needs one more
    # to warn. 0 turns this off.
    warn_noisy_blips: int = 3
    warn_noisy_lookback_s: float = 10_800.0
    # A memory or CPU series of a flat level finds a step of a percent rare,
    # yet a resource a percent busier threatens nobody: a deep utilisation
    # series is trouble only once it moved by this share of its expected value.
    warn_min_utilisation_change: float = 0.05
    # After a deploy or other change of a service, its anomalies wait this
    # long before they page: a rollout's brief spike settles by itself, a
    # regression outlasts it and pages with its true onset.
    change_grace_s: float = 300.0
    # A change this long before a service's trouble is offered as its cause.
    change_lookback_s: float = 1800.0
    # When a change's grace ends, a series of its service whose median over
    # the grace is this many times worse than its expected value before the
    # change has regressed, even if its detector already learned the level.
    change_regression_ratio: float = 1.5
    # Callers feel a dependency's speed and errors at once. A dependency as
    # slow, or failing as often, as it was while users were still fine does
    # not explain why they are hit now: evidence anomalous before users were
    # hit counts for the ranking of an incident only if its excess over the
    # expected value grew by this share once they were. Users' KPIs can take
    # a window to show what they already feel: only evidence anomalous for
    # `standing_windows` windows before they were hit is judged so.
    standing_growth: float = 0.5
    standing_windows: int = 2
    # Where neither configuration nor traces give the call graph, infer
    # edges from which services' trouble reliably comes first.
    infer_calls: bool = False
    # Without `ShardProgress` (scores fed directly, as the benchmarks do):
    # how many later windows to wait for before judging one.
    settle_windows: int = 0


_S = TypeVar("_S")


def _stronger(kept: Evidence | None, found: Evidence) -> Evidence:
    """A series' evidence in an open incident: its strongest window so far,
    from its earliest onset.

    Evidence only grows while an incident is open: a detector that learns a
    long failure as normal scores its later windows lower, and that must
    not wear away what the failure showed, nor the ranking built on it. For
    the same reason its baseline stays the one it was judged against first:
    later expectations have learned some of the failure.
    """
    if kept is None:
        return found
    strongest = found if found.score >= kept.score else kept
    first = kept if kept.onset <= found.onset else found
    update = {"onset": first.onset, "expected": first.expected}
    if all(getattr(strongest, k) == v for k, v in update.items()):
        return strongest
    return strongest.model_copy(update=update)


def _resumable(cls: type[_S]) -> type[_S]:
    """Let state kept in a snapshot resume in a later version that added a
    field to it: the field a snapshot lacks takes its default.

    Every class of the correlator's state is marked so, since a job is
    upgraded by resuming its last snapshot.
    """

    def resume(self: Any, state: tuple[Any, dict[str, Any]]) -> None:
        _, kept = state
        for f in fields(self):
            if f.name in kept:
                value = kept[f.name]
            elif f.default_factory is not MISSING:
                value = f.default_factory()
            elif f.default is not MISSING:
                value = f.default
            else:
                raise ValueError(
                    f"a snapshot of {cls.__name__} lacks {f.name!r}, which has no "
                    "default; it was taken by another version of Foreshock"
                )
            setattr(self, f.name, value)

    cls.__setstate__ = resume  # type: ignore[attr-defined]
    return cls


@_resumable
@dataclass(slots=True)
class _Episode:
    """A run of anomalous windows of one series.

    `excess` holds, for its anomalous windows within the lookback, how far
    each value was past its expected value on the harmful side.
    """

    onset: datetime
    last: Anomaly
    excess: list[tuple[datetime, float]] = field(default_factory=list)


@_resumable
@dataclass(slots=True)
class _Open:
    incident: Incident
    user_services: set[str]
    symptoms: dict[tuple[Layer, str, str], int]
    onset: datetime
    emitted_top: tuple[str, ...] = ()
    # Evidence seen while open, by series: an incident longer than the
    # lookback keeps its early evidence, and with it its chain and lead time.
    seen: dict[tuple[Layer, str, str], Evidence] = field(default_factory=dict)
    resolved_at: datetime | None = None
    # For evidence that users felt through their calls and that began before
    # they were hit: its worst excess while they were still fine, and its
    # worst excess since (`_standing`).
    tolerated: dict[tuple[Layer, str, str], float] = field(default_factory=dict)
    since_hit: dict[tuple[Layer, str, str], float] = field(default_factory=dict)
    # Per user-facing symptom, as it first joined: (its expected value then,
    # the baseline recovery is judged by; how far it was past it; +1 when
    # higher is worse, -1 when lower is).
    baselines: dict[tuple[Layer, str, str], tuple[float, float, int]] = field(
        default_factory=dict
    )


@_resumable
@dataclass(slots=True)
class _Warning:
    """An early warning still gathering services, and when it last grew."""

    warning: EarlyWarning
    last_seen: datetime
    # When each member service's trouble started, and the episode onset of
    # each series that took part: a later episode of a series warns anew.
    onsets: dict[str, datetime] = field(default_factory=dict)
    series: dict[tuple[Layer, str, str], datetime] = field(default_factory=dict)


@_resumable
@dataclass(slots=True)
class _ChangeCheck:
    """A change under watch: its series' levels before, their values since."""

    change: Change
    before: dict[tuple[Layer, str, str], float] = field(default_factory=dict)
    since: dict[tuple[Layer, str, str], list[KpiScore]] = field(default_factory=dict)

    def take(
        self, scores: list[KpiScore], levels: dict[tuple[Layer, str, str], float]
    ) -> None:
        for s in scores:
            if s.kpi.window_end <= self.change.time or s.kpi.value is None:
                continue
            key = (s.kpi.layer, s.kpi.service, s.kpi.kpi)
            if key not in self.before and key in levels:
                self.before[key] = levels[key]
            self.since.setdefault(key, []).append(s)

    def regressions(self, ratio: float) -> Iterator[Anomaly]:
        for key, seen in self.since.items():
            before = self.before.get(key)
            k = seen[0].kpi
            if before is None or before <= 0 or k.direction == "both":
                continue
            worse = [
                s
                for s in seen
                if s.kpi.value is not None
                and (
                    s.kpi.value >= before * ratio
                    if k.direction == "up"
                    else s.kpi.value <= before / ratio
                )
            ]
            if len(worse) * 2 <= len(seen):
                continue
            first, last = worse[0], seen[-1]
            yield Anomaly(
                id=stable_id("anomaly", "change", self.change.id, k.series),
                layer=k.layer,
                service=k.service,
                kpi=k.kpi,
                dimension=k.dimension,
                direction=k.direction,
                window_start=first.kpi.window_start,
                window_end=last.kpi.window_end,
                value=statistics.median(
                    s.kpi.value for s in seen if s.kpi.value is not None
                ),
                expected=before,
                score=1.0,
                detector="change-check",
                detector_state="ready",
            )


@dataclass
class Correlator:
    """Turns scored KPI windows into incidents and early warnings."""

    topology: Topology = field(default_factory=Topology)
    config: CorrelationConfig = field(default_factory=CorrelationConfig)
    # What on-call engineers said back: a suppressed series neither pages
    # nor warns (its anomalies are still published by the flow).
    suppressions: SuppressionBook = field(default_factory=SuppressionBook)
    _pending: dict[datetime, list[KpiScore]] = field(default_factory=dict)
    _episodes: dict[tuple[Layer, str, str], _Episode] = field(default_factory=dict)
    _open: list[_Open] = field(default_factory=list)
    # Incidents resolved within the cool-down: trouble in their scope is
    # their tail, and users hit again reopen them.
    _recent: list[_Open] = field(default_factory=list)
    _warnings: list[_Warning] = field(default_factory=list)
    _runs: dict[tuple[Layer, str, str], int] = field(default_factory=dict)
    _run_starts: dict[tuple[Layer, str, str], datetime] = field(default_factory=dict)
    # When each series' recent lone anomalous windows started.
    _blips: dict[tuple[Layer, str, str], list[datetime]] = field(default_factory=dict)
    _changes: dict[str, list[Change]] = field(default_factory=dict)
    _window: timedelta = timedelta(minutes=1)
    _latest: datetime | None = None
    # The detector's expected value of each series at its last window.
    _levels: dict[tuple[Layer, str, str], float] = field(default_factory=dict)
    _checks: list[_ChangeCheck] = field(default_factory=list)
    lead_lag: LeadLag = field(default_factory=LeadLag)
    # The calls inferred so far, kept apart from those configured or seen.
    inferred: set[tuple[str, str]] = field(default_factory=set)
    # Silent services: (layer, start of the first silent window, windows).
    _silent: dict[str, tuple[Layer, datetime, int]] = field(default_factory=dict)
    _gaps: dict[str, DataGap] = field(default_factory=dict)
    # The service each troubled call edge's series blames (`foreshock.edges`),
    # as judged while its episode went on.
    _blamed: dict[str, str] = field(default_factory=dict)
    # The services in trouble (`_is_trouble`) in the last window judged.
    _troubled_before: set[str] = field(default_factory=set)
    # What shards reported (`ShardProgress`); None until one does.
    _shards: dict[str, datetime | None] | None = None
    # Per window end: scores the shards announced, and scores arrived.
    _expected: dict[datetime, int] = field(default_factory=dict)
    _received: dict[datetime, int] = field(default_factory=dict)
    _handled_through: datetime | None = None
    # Scores of windows judged already, judged with the next window.
    _stragglers: list[KpiScore] = field(default_factory=list)

    def observe(self, score: KpiScore) -> list[Output]:
        """Take one scored window; handle every window it shows complete.

        Once shards report their progress (`observe_progress`), a window is
        complete when every shard has closed it and all its scores have
        arrived. Before that, a window is complete once a window
        `settle_windows` later has been seen. A restated window was judged
        when it first closed; its correction is published as it is and
        takes no part in incidents. A score of a window judged already (it
        came after its window looked whole) is judged with the next window,
        so that no window is judged twice.
        """
        if score.kpi.restated:
            return []
        end = score.kpi.window_end
        self._window = end - score.kpi.window_start
        if self._handled_through is not None and end <= self._handled_through:
            self._stragglers.append(score)
            return []
        self._pending.setdefault(end, []).append(score)
        self._received[end] = self._received.get(end, 0) + 1
        if self._shards is not None:
            return self._settled()
        self._latest = max(self._latest or end, end)
        horizon = self._latest - self.config.settle_windows * self._window
        ready = [w for w in self._pending if w < horizon]
        return [out for w in sorted(ready) for out in self._handle(w)]

    def expect_shards(self, names: Iterable[str]) -> None:
        """Wait for these shards' progress before judging any window."""
        shards = self._shards if self._shards is not None else {}
        for name in names:
            shards.setdefault(name, EPOCH_UTC)
        if shards:
            self._shards = shards

    def observe_progress(self, progress: ShardProgress) -> list[Output]:
        """Take a shard's progress; handle every window it shows complete."""
        if self._shards is None:
            self._shards = {}
        self._shards[progress.shard] = progress.closed_through
        done = self._handled_through
        for end, count in progress.records.items():
            if done is None or end > done:
                self._expected[end] = self._expected.get(end, 0) + count
        return self._settled()

    def _settled(self) -> list[Output]:
        """Handle complete windows in order, up to the first incomplete one."""
        out: list[Output] = []
        for end in sorted(self._pending):
            if not self._complete(end):
                break
            out.extend(self._handle(end))
        return out

    def _complete(self, end: datetime) -> bool:
        """Whether every shard has closed the window and its scores are in.

        A window is whole only once some shard has counted its records: a
        shard that reported itself idle and then got events again sends
        scores that can overtake the progress counting them, and judging
        at each such score would judge the window piecemeal, once a score.
        """
        assert self._shards is not None
        expected = self._expected.get(end)
        if expected is None:
            return False
        closed = all(t is None or t >= end for t in self._shards.values())
        return closed and self._received.get(end, 0) >= expected

    def observe_change(self, change: Change) -> None:
        """Take a deploy or other change: context from now on."""
        known = self._changes.setdefault(change.service, [])
        if all(c.id != change.id for c in known):
            known.append(change)
            known.sort(key=lambda c: c.time)
            self._checks.append(_ChangeCheck(change))

    def flush(self) -> list[Output]:
        """Handle every window still gathered: the input has ended."""
        if self._stragglers and self._handled_through is not None:
            self._pending.setdefault(self._handled_through, [])
        return [out for w in sorted(self._pending) for out in self._handle(w)]

    # -- one window at a time -------------------------------------------------

    def _handle(self, window_end: datetime) -> Iterator[Output]:
        scores = self._pending.pop(window_end)
        if self._stragglers:
            scores += self._stragglers
            self._stragglers = []
        self._expected.pop(window_end, None)
        self._received.pop(window_end, None)
        if self._handled_through is None or window_end > self._handled_through:
            self._handled_through = window_end
        self._learn_calls(scores)
        returned = self._track_silence(scores)
        anomalies = [Anomaly.from_score(s) for s in self._confirmed(scores)]
        anomalies += self._check_changes(scores, window_end)
        for a in anomalies:
            self._extend_episode(a)
        self._blame_edges(window_end)
        if self.config.infer_calls:
            self._infer_calls()
        self._expire(window_end)

        user = [a for a in anomalies if is_symptom(a)]
        yield from self._open_or_join(user, window_end)
        yield from self._update_open(window_end)
        deep = [a for a in anomalies if a.layer not in USER_FACING]
        yield from self._warn(deep, window_end)
        yield from self._data_gaps(returned, window_end)
        yield from self._resolve(scores, window_end)

    def _confirmed(self, scores: list[KpiScore]) -> Iterator[KpiScore]:
        # One anomalous window is often noise: a series takes part only once
        # it has been anomalous for `confirm_windows` windows in a row.
        for s in scores:
            key = (s.kpi.layer, s.kpi.service, s.kpi.kpi)
            counts = (
                s.anomalous
                and not s.kpi.backfill
                and not s.kpi.restated
                and (s.detector_state == "ready" or self.config.page_while_warming_up)
                and self.suppressions.suppressed(*key, s.kpi.window_start) is None
            )
            run = self._runs.get(key, 0) + 1 if counts else 0
            if run == 0 and self._runs.get(key) == 1:
                # A run of one window just ended: a lone blip.
                self._note_blip(key, self._run_starts[key])
            self._runs[key] = run
            if run == 1:
                self._run_starts[key] = s.kpi.window_start
            if run >= self.config.confirm_windows and not self._in_grace(s):
                yield s

    def _note_blip(self, key: tuple[Layer, str, str], start: datetime) -> None:
        since = start - timedelta(seconds=self.config.warn_noisy_lookback_s)
        recent = [t for t in self._blips.get(key, ()) if t >= since]
        self._blips[key] = [*recent, start]

    def _noisy(self, key: tuple[Layer, str, str], now: datetime) -> bool:
        """Whether `key` had `warn_noisy_blips` lone anomalous windows lately."""
        needed = self.config.warn_noisy_blips
        since = now - timedelta(seconds=self.config.warn_noisy_lookback_s)
        recent = sum(t >= since for t in self._blips.get(key, ()))
        return needed > 0 and recent >= needed

    def _in_grace(self, s: KpiScore) -> bool:
        grace = timedelta(seconds=self.config.change_grace_s)
        k = s.kpi
        return any(
            k.window_end > c.time and k.window_start < c.time + grace
            for c in self._changes.get(k.service, ())
        )

    def _extend_episode(self, a: Anomaly) -> None:
        key = (a.layer, a.service, a.kpi)
        episode = self._episodes.get(key)
        gap = self._episode_gap()
        if episode is None or a.window_start - episode.last.window_end > gap:
            if self.config.infer_calls and not self._troubled(a.service, a, gap):
                self.lead_lag.observe(
                    a.service, self._run_starts.get(key, a.window_start)
                )
            # The episode starts with the run that confirmed it, which may
            # have waited for confirmation or a change's grace period.
            onset = min(self._run_starts.get(key, a.window_start), a.window_start)
            episode = self._episodes[key] = _Episode(onset, a)
        else:
            episode.last = a
        if a.expected is not None:
            since = a.window_start - timedelta(seconds=self.config.lookback_s)
            kept = [x for x in episode.excess if x[0] >= since]
            episode.excess = [*kept, (a.window_start, _excess(a))]

    def _first_deep_trouble(
        self, cause: str | None, chain: list[Evidence], first_user: datetime
    ) -> datetime | None:
        """When the deep stack first showed an incident's failure.

        That is the first trouble of the likeliest `cause` or of what it
        depends on, in the incident's `chain` or in an early warning still
        held whose trouble went on into it. Trouble elsewhere (another
        fault, minutes before), and an earlier trouble of the same services
        that had stopped, gave no warning of this one.
        """
        if cause is None:
            return None
        related = {cause, *self.topology.dependencies(cause)}
        onsets = [
            e.onset
            for e in chain
            if e.layer not in USER_FACING and e.service in related
        ]
        began = min(onsets, default=first_user)
        gap = self._episode_gap()
        onsets += [
            onset
            for g in self._warnings
            if g.last_seen >= began - gap
            for service, onset in g.onsets.items()
            if service in related
        ]
        return min(onsets, default=None)

    def _episode_gap(self) -> timedelta:
        # One quiet window between two anomalous ones never ends an episode,
        # however long windows are.
        return max(timedelta(seconds=self.config.episode_gap_s), self._window)

    def _blame_edges(self, now: datetime) -> None:
        # Edges troubled now are judged together: which end they share.
        gap = self._episode_gap()
        ongoing = {
            s
            for (_, s, _), e in self._episodes.items()
            if now - e.last.window_end <= gap
        }
        self._blamed.update(suspects(ongoing, self.topology))

    def _place(self, service: str) -> str:
        """The service a series' trouble is of: its own, or an edge's suspect."""
        edge = edge_of(service)
        if edge is None:
            return service
        return self._blamed.get(service, edge[1])

    def _troubled(self, service: str, a: Anomaly, gap: timedelta) -> bool:
        """Whether another series of `service` is in an episode already."""
        return any(
            s == service and a.window_start - e.last.window_end <= gap
            for (_, s, _), e in self._episodes.items()
        )

    def _infer_calls(self) -> None:
        known = self.topology.calls
        new = {
            (a, b)
            for a, b in self.lead_lag.calls()
            if (a, b) not in known and (b, a) not in known
        }
        if new:
            self.inferred |= new
            self.topology = self.topology.with_calls(new, {})

    def _expire(self, now: datetime) -> None:
        horizon = now - timedelta(seconds=self.config.lookback_s)
        for key in [
            k for k, e in self._episodes.items() if e.last.window_end < horizon
        ]:
            del self._episodes[key]
        alive = {s for _, s, _ in self._episodes}
        since = now - timedelta(seconds=self.config.warn_noisy_lookback_s)
        self._blips = {k: b for k, b in self._blips.items() if b[-1] >= since}
        self._blamed = {s: b for s, b in self._blamed.items() if s in alive}
        keep = timedelta(
            seconds=max(self.config.lookback_s, self.config.change_lookback_s)
        )
        for service, known in list(self._changes.items()):
            known[:] = [c for c in known if c.time >= now - keep]
            if not known:
                del self._changes[service]

    # -- the call graph ---------------------------------------------------------------

    def _learn_calls(self, scores: list[KpiScore]) -> None:
        """Add the calls that span edge series show to the topology."""
        layers = {s.kpi.service: s.kpi.layer for s in scores}
        calls = {
            edge
            for service in layers
            if (edge := edge_of(service)) is not None
            and edge not in self.topology.calls
        }
        if calls:
            seen = {s: layer for s, layer in layers.items() if edge_of(s) is None}
            self.topology = self.topology.with_calls(calls, seen)

    # -- changes --------------------------------------------------------------------

    def _check_changes(
        self, scores: list[KpiScore], window_end: datetime
    ) -> list[Anomaly]:
        """Compare each changed service, once its grace is over, with before.

        A detector adapts to a new level within a few windows, so a regression
        that starts with a deploy may look normal to it by the time the grace
        ends. Before the change each series had an expected value; the grace
        windows' median against it says whether the change made it worse.
        """
        grace = timedelta(seconds=self.config.change_grace_s)
        ratio = self.config.change_regression_ratio
        found: list[Anomaly] = []
        for check in list(self._checks):
            mine = [s for s in scores if s.kpi.service == check.change.service]
            window_start = window_end - self._window
            if window_start < check.change.time + grace:
                check.take(mine, self._levels)
                continue
            self._checks.remove(check)
            for a in check.regressions(ratio):
                key = (a.layer, a.service, a.kpi)
                self._run_starts[key] = a.window_start
                found.append(a)
        for s in scores:
            if s.expected is not None and s.detector_state == "ready":
                self._levels[(s.kpi.layer, s.kpi.service, s.kpi.kpi)] = s.expected
        return found

    # -- silence ------------------------------------------------------------------

    def _track_silence(self, scores: list[KpiScore]) -> set[str]:
        """Note which services sent nothing this window; return those back."""
        states: dict[str, set[str]] = defaultdict(set)
        first: dict[str, KpiScore] = {}
        for s in scores:
            states[s.kpi.service].add(s.kpi.state)
            first.setdefault(s.kpi.service, s)
        returned = set()
        for service, seen in states.items():
            if seen == {"no_data"}:
                k = first[service].kpi
                layer, since, n = self._silent.get(
                    service, (k.layer, k.window_start, 0)
                )
                self._silent[service] = (layer, since, n + 1)
            elif self._silent.pop(service, None) is not None:
                returned.add(service)
        return returned

    def _silence_of(self, service: str) -> Evidence | None:
        layer, since, n = self._silent.get(service, (Layer.API, EPOCH_UTC, 0))
        if n < self.config.silence_windows:
            return None
        return Evidence.silence(layer, service, since)

    def _data_gaps(self, returned: set[str], now: datetime) -> Iterator[Output]:
        for service in sorted(returned & self._gaps.keys()):
            gap = self._gaps.pop(service)
            yield gap.model_copy(
                update={"status": "closed", "until": now, "published_at": now}
            )
        for service in sorted(self._silent):
            silence = self._silence_of(service)
            if silence is None or service in self._gaps:
                continue
            if any(service in self._scope(c) for c in self._open):
                continue
            gap = DataGap(
                id=stable_id("data-gap", service, silence.onset.isoformat()),
                status="open",
                service=service,
                layer=silence.layer,
                since=silence.onset,
                until=None,
                published_at=now,
                users=self.topology.user_facing_dependents(service),
            )
            self._gaps[service] = gap
            yield gap

    # -- incidents --------------------------------------------------------------

    def _open_or_join(self, user: list[Anomaly], now: datetime) -> Iterator[Output]:
        by_service: dict[str, list[Anomaly]] = defaultdict(list)
        for a in user:
            by_service[a.service].append(a)
        for service, found in sorted(by_service.items()):
            current = self._incident_for(service)
            if current is None:
                # Users hit again within the cool-down: the same failure.
                current = self._incident_for(service, self._recent)
                if current is not None:
                    self._recent.remove(current)
                    current.incident = self._picture(current, now, "open")
                    current.incident = current.incident.model_copy(
                        update={"resolved_at": None}
                    )
                    current.emitted_top = _top(current.incident)
                else:
                    current = self._start(service, found, now)
                self._open.append(current)
                yield current.incident
            current.user_services.add(service)
            for a in found:
                key = (a.layer, a.service, a.kpi)
                current.symptoms[key] = 0
                if a.expected is not None and key not in current.baselines:
                    side = 1 if a.direction == "up" else -1
                    excess = (a.value - a.expected) * side
                    current.baselines[key] = (a.expected, excess, side)

    def _incident_for(
        self, service: str, among: list[_Open] | None = None
    ) -> _Open | None:
        # Users of the web and of the app hit by one failed dependency share
        # one incident: they join when they share a dependency.
        mine = set(self.topology.dependencies(service))
        for current in self._open if among is None else among:
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
                service=service,
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
                healthy = (
                    s.kpi.state == "ok"
                    and not confirmed
                    and self._back_to_baseline(current, key, s.kpi.value)
                )
                current.symptoms[key] = current.symptoms[key] + 1 if healthy else 0
        done = [
            c
            for c in self._open
            if min(c.symptoms.values(), default=0) >= self.config.resolve_after_windows
        ]
        for current in done:
            self._open.remove(current)
            final = self._picture(current, now, "resolved")
            current.incident = final.model_copy(update={"resolved_at": now})
            current.resolved_at = now
            self._recent.append(current)
            yield current.incident

    def _back_to_baseline(
        self, current: _Open, key: tuple[Layer, str, str], value: float | None
    ) -> bool:
        """Whether a symptom's value is back near its level before the
        incident (see `resolve_excess_share`); with no level known, the
        detector's verdict stands alone."""
        found = current.baselines.get(key)
        if found is None or value is None:
            return True
        baseline, excess, side = found
        if excess <= 0:
            return True
        return (value - baseline) * side <= self.config.resolve_excess_share * excess

    # -- early warnings -----------------------------------------------------------

    def _still_troubled(
        self, group: _Warning, key: tuple[Layer, str, str], onset: datetime
    ) -> bool:
        """Whether `group` warned about an episode that `key` continues.

        That is a series of the same service and the same dimension (speed,
        say) whose warned-about episode is still its current one, with its
        last anomaly within an episode gap of `onset`: a service's p95
        latency turning anomalous while its median already is shows more of
        the same trouble, not a new one.
        """
        gap = self._episode_gap()
        mine = self._episodes.get(key)
        if mine is None:
            return False
        for member, began in group.series.items():
            episode = self._episodes.get(member)
            if (
                member[1] == key[1]
                and episode is not None
                and episode.onset == began
                and episode.last.dimension == mine.last.dimension
                and onset - episode.last.window_end <= gap
            ):
                return True
        return False

    def _adjacent(self, service: str, members: Iterable[str]) -> bool:
        """Whether `service` calls, or is called by, one of `members`."""
        near = {*self.topology.callers(service), *self.topology.callees(service)}
        return not near.isdisjoint(members)

    def _same_trouble(
        self, group: _Warning, service: str, onset: datetime, gap: timedelta
    ) -> bool:
        """Whether trouble of `service` from `onset` on is `group`'s trouble.

        It is when it starts within an episode gap of the group's first
        trouble in a member or a neighbour of one. Trouble that starts in the
        very window the group's did, among services sharing users at risk,
        is one failure seen in several places (a service and the endpoints
        in front of it, say), neighbours or not.
        """
        first = min(group.onsets.values())
        if onset == first:
            return True
        near = service in group.onsets or self._adjacent(service, group.onsets)
        return onset - first <= gap and near

    def _corroborated(self, deep: list[Anomaly]) -> set[str]:
        """The services this window shows in trouble by independent witnesses.

        One window of one kind of reading is often a blip: a pause moves
        every latency percentile of a service at once, and its memory in
        bytes and in percent are one reading. Trouble of two kinds at once
        (slower and busier, say), or calls slow on two call edges that
        blame the service (two callers timing it, `foreshock.edges`), are
        seldom a coincidence: such a service need not wait for
        `warn_confirm_windows` windows to warn. This holds for the window its
        trouble starts in; trouble of a service already in trouble the
        window before is more of the same, and confirms as usual.
        """
        needed = self.config.warn_witnesses
        if needed < 1:
            return set()

        kinds: dict[str, set[str]] = defaultdict(set)
        edges: dict[str, set[str]] = defaultdict(set)
        for a in deep:
            place = self._place(a.service)
            if not self._is_trouble(a) or place in self._troubled_before:
                continue
            kinds[place].add(a.dimension)
            if edge_of(a.service) is not None:
                edges[place].add(a.service)

        return {s for s in kinds if len(kinds[s]) >= needed or len(edges[s]) >= needed}

    def _is_trouble(self, a: Anomaly) -> bool:
        """Whether a deep anomaly can make a warning.

        A shift in traffic alone is not trouble; it is evidence once
        something breaks. Nor is a resource that is barely busier than
        expected, however rare the step is for its series.
        """
        if a.dimension == "throughput":
            return False
        if a.dimension != "utilisation" or not a.expected:
            return True
        change = abs(a.value - a.expected) / abs(a.expected)
        return change >= self.config.warn_min_utilisation_change

    def _confirmed_run(self, a: Anomaly, now: datetime) -> bool:
        """Whether a deep series has been anomalous long enough to warn."""
        key = (a.layer, a.service, a.kpi)
        needed = self.config.warn_confirm_windows
        if self._noisy(key, now):
            needed += 1
        return self._runs.get(key, 0) >= needed

    def _warn(self, deep: list[Anomaly], now: datetime) -> Iterator[Output]:
        # Deep trouble that starts within an episode gap of a warning's first
        # trouble, in the same or a neighbouring service sharing users at
        # risk, is that warning: services join it instead of paging one by
        # one. So is a new series of a member service continuing trouble of
        # its kind that was warned about (`_still_troubled`). Otherwise a new episode
        # of a service already warned about is new trouble.
        quiet = timedelta(seconds=self.config.cooldown_s)
        gap = self._episode_gap()
        # A warning none of whose series was troubled for the cool-down is
        # over: said once more, so that whoever shows it can clear it.
        ongoing = []
        for g in self._warnings:
            if now - g.last_seen < quiet:
                ongoing.append(g)
            else:
                yield g.warning.model_copy(
                    update={"status": "ended", "published_at": now}
                )
        self._warnings = ongoing
        self._recent = [
            c for c in self._recent if c.resolved_at and now - c.resolved_at < quiet
        ]
        corroborated = self._corroborated(deep)
        self._troubled_before = {
            self._place(a.service) for a in deep if self._is_trouble(a)
        }
        troubles = sorted(
            (self._onset(a), self._place(a.service), (a.layer, a.service, a.kpi))
            for a in deep
            if self._is_trouble(a)
            and (self._confirmed_run(a, now) or self._place(a.service) in corroborated)
        )
        for onset, service, key in troubles:
            at_risk = self.topology.user_facing_dependents(service)
            if not at_risk or any(service in self._scope(c) for c in self._open):
                continue
            # An incident's tail opens no warning, but joins one that new
            # trouble opened: it may be what that trouble comes from.
            tail = any(self._is_tail(c, service, onset) for c in self._recent)
            known = [g for g in self._warnings if g.series.get(key) == onset]
            for g in known:
                g.last_seen = now
            if known:
                continue
            group = next(
                (
                    g
                    for g in self._warnings
                    if set(g.warning.at_risk) & set(at_risk)
                    and (
                        self._still_troubled(g, key, onset)
                        or self._same_trouble(g, service, onset, gap)
                    )
                ),
                None,
            )
            if group is not None:
                group.series[key] = onset
                group.last_seen = now
                if service in group.onsets:
                    continue
            evidence = self._evidence_of(service)
            if group is None and tail:
                continue
            if group is None:
                group = _Warning(
                    warning=EarlyWarning(
                        id=stable_id("early-warning", service, onset.isoformat()),
                        service=service,
                        layer=evidence[0].layer,
                        onset=onset,
                        published_at=now,
                        at_risk=at_risk,
                        evidence=[],
                    ),
                    last_seen=now,
                )
                self._warnings.append(group)
                status = "open"
            else:
                status = "updated"
            group.onsets[service] = onset
            group.series[key] = onset
            group.last_seen = now
            old = group.warning
            members = {*group.onsets}
            found = {m: ev for m in members if (ev := self._ongoing(m, now))}
            ranked = rank_candidates(
                self.topology,
                set(old.at_risk) | set(at_risk),
                now,
                found,
                self._changes_before(members, min(group.onsets.values())),
                self._window,
                users_affected=False,
            )
            group.warning = old.model_copy(
                update={
                    "root_causes": ranked,
                    "status": status,
                    "published_at": now,
                    "at_risk": sorted(set(old.at_risk) | set(at_risk)),
                    "services": [*old.services, service],
                    "evidence": [*old.evidence, *evidence],
                    "changes": self._changes_before(
                        group.onsets, min(group.onsets.values())
                    ),
                }
            )
            yield group.warning

    # -- the picture of an incident -------------------------------------------------

    def _is_tail(self, recent: _Open, service: str, onset: datetime) -> bool:
        """Whether trouble of `service` from `onset` belongs to `recent`.

        Trouble that began while the incident was open, within its scope, is
        what it leaves behind; so is any trouble of the service it blamed
        first, the same fault acting up again. Trouble elsewhere that begins
        after it resolved is news.
        """
        blamed = [c.service for c in recent.incident.root_causes[:1]]
        if service in blamed:
            return True
        resolved = recent.resolved_at
        began_before = resolved is not None and onset < resolved
        return began_before and service in self._scope(recent)

    def _scope(self, current: _Open) -> set[str]:
        scope = set(current.user_services)
        for s in current.user_services:
            scope |= set(self.topology.dependencies(s))
        return scope

    def _onset(self, a: Anomaly) -> datetime:
        episode = self._episodes.get((a.layer, a.service, a.kpi))
        return episode.onset if episode is not None else a.window_start

    def _evidence_of(self, service: str) -> list[Evidence]:
        found = [e for _, e in self._episodes_of(service)]
        silence = self._silence_of(service)
        if silence is not None:
            found.append(silence)
        return sorted(found, key=lambda e: (e.onset, -e.score, e.kpi))

    def _episodes_of(self, service: str) -> Iterator[tuple[_Episode, Evidence]]:
        """The episodes that are trouble of `service`, each with its evidence."""
        for (_, s, _), e in self._episodes.items():
            if s == service:
                yield e, Evidence.from_anomaly(e.last, e.onset)
        # Calls as the callers saw them (edge series) that blame the service:
        # a slow or failing callee shows there first, network delays too.
        for (_, s, kpi), e in self._episodes.items():
            edge = edge_of(s)
            if edge is None or self._place(s) != service:
                continue
            caller, callee = edge
            seen = Evidence.from_anomaly(e.last, e.onset)
            yield (
                e,
                seen.model_copy(
                    update={
                        # A service of unknown kind is taken as a backend.
                        "layer": self.topology.layers.get(service, Layer.BACKEND),
                        "service": service,
                        "kpi": f"{kpi} of calls from {caller}"
                        if service == callee
                        else f"{kpi} of its calls to {callee}",
                    }
                ),
            )

    def _note_levels(self, current: _Open, scope: Iterable[str]) -> None:
        """Keep how bad evidence felt by callers was before users were hit,
        and how bad it has been since (see `_standing`)."""
        hit = current.onset
        since = hit - self.config.standing_windows * self._window
        for service in scope:
            for episode, e in self._episodes_of(service):
                if e.onset > since or e.dimension not in FELT_BY_CALLERS:
                    continue
                key = (e.layer, e.service, e.kpi)
                before = [x for t, x in episode.excess if t < hit]
                if key not in current.tolerated and before:
                    current.tolerated[key] = max(before)
                if e.window_start >= hit and episode.excess:
                    worst = max(episode.excess[-1][1], current.since_hit.get(key, 0))
                    current.since_hit[key] = worst

    def _standing(self, current: _Open) -> set[tuple[str, str]]:
        """The (service, KPI) of evidence that held steady while users were
        fine and did not grow by `standing_growth` once they were hit."""
        growth = 1.0 + self.config.standing_growth
        return {
            (key[1], key[2])
            for key, before in current.tolerated.items()
            if current.since_hit.get(key, 0.0) < growth * before
        }

    def _ongoing(self, service: str, now: datetime) -> list[Evidence]:
        """The evidence of `service` whose episode goes on at `now`.

        A warning is about trouble now: an episode that ended minutes ago
        (a brief blip, a drift that settled) would make its service look
        early, and so like the cause, without having anything to do with it.
        """
        gap = self._episode_gap()
        return [
            e
            for e in self._evidence_of(service)
            if now - (e.window_start + self._window) <= gap
        ]

    def _changes_before(self, services: Iterable[str], onset: datetime) -> list[Change]:
        """Changes of `services` from `change_lookback_s` before `onset` on."""
        since = onset - timedelta(seconds=self.config.change_lookback_s)
        found = [
            c for s in services for c in self._changes.get(s, ()) if c.time >= since
        ]
        return sorted(found, key=lambda c: (c.time, c.service))

    def _picture(self, current: _Open, now: datetime, status: str) -> Incident:
        scope = self._scope(current)
        for s in scope:
            for e in self._evidence_of(s):
                key = (e.layer, e.service, e.kpi)
                current.seen[key] = _stronger(current.seen.get(key), e)
        self._note_levels(current, scope)
        evidence: dict[str, list[Evidence]] = defaultdict(list)
        for e in current.seen.values():
            evidence[e.service].append(e)
        for ev in evidence.values():
            ev.sort(key=lambda e: (e.onset, -e.score, e.kpi))
        user = [
            e
            for s in sorted(current.user_services)
            for e in evidence.get(s, [])
            if is_symptom(e)
        ]
        changes = self._changes_before(scope, current.onset)
        ranked = rank_candidates(
            self.topology,
            current.user_services,
            current.onset,
            evidence,
            changes,
            self._window,
            self._standing(current),
        )
        # Services whose trouble began in the same window are listed as the
        # trouble spread: the likelier causes first, what users see last.
        place = {c.service: i for i, c in enumerate(ranked)}
        chain = sorted(
            (min(ev, key=lambda e: e.onset) for ev in evidence.values()),
            key=lambda e: (
                e.onset,
                e.layer in USER_FACING,
                place.get(e.service, len(place)),
                e.service,
            ),
        )
        first_user = min((e.onset for e in user), default=current.onset)
        cause = ranked[0].service if ranked else None
        first_deep = self._first_deep_trouble(cause, chain, first_user)
        lead = (
            (first_user - first_deep).total_seconds()
            if first_deep is not None and first_deep < first_user
            else None
        )
        # A warning that ended while the incident is open still belongs to it.
        warned = sorted(
            {*current.incident.early_warnings}
            | {g.warning.id for g in self._warnings if set(g.onsets) & scope}
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
                "changes": changes,
            }
        )


def _excess(a: Anomaly) -> float:
    """How far an anomaly's value is past its expected value, harmful side."""
    expected = a.expected if a.expected is not None else a.value
    return a.value - expected if a.direction == "up" else expected - a.value


def _top(incident: Incident) -> tuple[str, ...]:
    return tuple(c.service for c in incident.root_causes[:3])


def _title(user: list[Evidence], ranked: list[Candidate]) -> str:
    felt = ", ".join(sorted({f"{e.service} {e.kpi}" for e in user})[:3]) or "users"
    if not ranked:
        return f"{felt} degraded"
    return f"{felt} degraded; probable root cause {ranked[0].service}"
