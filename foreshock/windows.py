"""Event-time windows per (layer, service), with allowed lateness.

`WindowStore` keeps the open windows of one shard (one source partition) and
is pure Python, so window logic is tested without any stream engine. Time is
whatever the events say: the watermark is the latest event time seen minus
the allowed lateness, a window closes once the watermark passes its end, and
an event for a closed window is late: it is returned to the caller, never
merged and never dropped.

Windows are `length` long and one starts every `slide` (`WindowSpec`):
tumbling when the two are equal, sliding when the slide is shorter, in which
case an event counts in every window that holds it. Window `k` spans
`[align + k * slide, align + k * slide + length)` in whole microseconds, so
windows aligned to a distant date keep exact boundaries.

Events come in as samples: the event time in whole microseconds and the
fields its window needs (see `Sample`). A batch of samples is added in one
call; each sample is placed (or refused as late) in input order, and windows
close as the watermark passes them, sample by sample, so nothing depends on
how the input was batched. Measurements are not aggregated one event at a
time: the samples of one (window, service, kind) in a batch are gathered and
added to the window's aggregate together at the end of the batch (or before
a window closes), which keeps the per-event cost to a few dictionary
operations.

When a window closes, every (layer, service) the shard has seen recently gets
its KPIs for it; a service that sent nothing gets `no_data` records, so that a
silent service is visible instead of skipped.

Some events are late by nature: an app uploads a crash report only when it
is launched again, often hours later. An event of a restatable kind
(`WindowPolicy.restatable_kinds`) whose window has closed, but which is not
older than `WindowPolicy.restate_within_s`, is not late: it is added to the
window it happened in, and that window's KPIs are published again, marked
`restated`. For this the store keeps, for that long, the closed aggregates
of the services whose KPIs a restatable kind feeds (the mobile apps).

What the event times alone cannot tell is set by a `WindowPolicy`: when a
shard that stopped advancing lets processing time close its windows (the
idle timeout), when a closed window is old news (backfill), and how many
services and series one shard may hold, so that a flood of new names cannot
exhaust memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from foreshock.kpis import DEFAULT_REGISTRY, Aggregate, Kpi, KpiRegistry
from foreshock.layers import Layer
from foreshock.measure import Fields, Tally, add_tally, observe_many
from foreshock.metrics_kpis import MetricKpis
from foreshock.records import ClosedBy, KpiRecord
from foreshock.schema import Event
from foreshock.version_kpis import VersionKpis

__all__ = [
    "EPOCH",
    "SERIES_CAP",
    "Late",
    "LateSample",
    "Refused",
    "RefusedSample",
    "Sample",
    "ScannedTally",
    "WindowPolicy",
    "WindowSpec",
    "WindowStore",
    "sample_of",
]

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_US_PER_S = 1_000_000
_LAYERS = {layer.value: layer for layer in Layer}

ServiceKey = tuple[Layer, str]
# An event as its window needs it: (event time in microseconds since the Unix
# epoch, layer, service, payload kind, payload). The payload is read by
# attribute: a validated payload model, or a struct with the same fields.
Sample = tuple[int, Layer, str, str, Fields]
# A sample refused as late: (its position in the batch, the index of its
# earliest window, the watermark in microseconds when it came).
LateSample = tuple[int, int, int]
# A sample refused by a cap: (its position in the batch, the reason, detail).
RefusedSample = tuple[int, str, str]
# A run of events the native scanner tallied: (first window, last window,
# layer, service, kind, events, counts, values, rejected, versions), the
# last five as in `foreshock.measure.Tally`.
ScannedTally = tuple[
    int,
    int,
    str,
    str,
    str,
    int,
    dict[str, int],
    dict[str, list[float]],
    dict[str, int],
    dict[str, int],
]
# Pending samples, by (first window, last window, layer, service, kind).
_GroupKey = tuple[int, int, Layer, str, str]
# A metric series within its service: a gauge by name, a counter by name and
# labels. A counter series remembers its last sample: (time in us, value).
_SeriesKey = str | tuple[str, tuple[tuple[str, str], ...]]
_CounterState = tuple[int, float] | None

SERIES_CAP = "series_cap"
# How many capped services are named in a warning each; beyond that they are
# only counted, so that the warnings themselves stay bounded.
_WARN_LIMIT = 1000


def sample_of(event: Event) -> Sample:
    """The sample of a validated event."""
    return (
        (event.time - EPOCH) // _US,
        event.layer,
        event.service,
        event.payload.kind,
        event.payload,
    )


def _micros(t: datetime) -> int:
    return (t - EPOCH) // _US


def _seconds_to_us(seconds: float) -> int:
    return timedelta(seconds=seconds) // _US


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Windows of `length_s`, one starting every `slide_s`, from `align_to`.

    `slide_s` left out (or equal to `length_s`) makes tumbling windows; a
    shorter slide makes sliding windows that overlap. A slide longer than
    the length would leave events in no window, and is refused. Window
    arithmetic is done in whole microseconds with Python's unbounded
    integers, so a window index of a billion (0.7 s slides since 2000) is as
    exact as index 0.
    """

    length_s: float = 60.0
    allowed_lateness_s: float = 30.0
    align_to: datetime = EPOCH
    slide_s: float | None = None
    _length_us: int = field(init=False, repr=False, compare=False, default=0)
    _slide_us: int = field(init=False, repr=False, compare=False, default=0)
    _align_us: int = field(init=False, repr=False, compare=False, default=0)
    _lateness_us: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        length, slide = self.length_s, self.slide_s or self.length_s
        if length <= 0 or round(length * _US_PER_S) < 1:
            raise ValueError(f"window length must be positive, got {length!r}")
        if slide <= 0 or round(slide * _US_PER_S) < 1 or slide > length:
            raise ValueError(
                f"window slide must be positive and at most the length "
                f"{length!r}, got {slide!r}"
            )
        if self.allowed_lateness_s < 0:
            raise ValueError(
                f"allowed lateness cannot be negative, got {self.allowed_lateness_s!r}"
            )
        if self.align_to.tzinfo is None:
            raise ValueError(f"align_to must be timezone-aware, got {self.align_to!r}")
        # Computed once: window indexes are computed for every event.
        object.__setattr__(self, "_length_us", round(length * _US_PER_S))
        object.__setattr__(self, "_slide_us", round(slide * _US_PER_S))
        object.__setattr__(self, "_align_us", _micros(self.align_to))
        lateness = _seconds_to_us(self.allowed_lateness_s)
        object.__setattr__(self, "_lateness_us", lateness)

    @property
    def tumbling(self) -> bool:
        return self._slide_us == self._length_us

    def index(self, t: datetime) -> int:
        """The index of the last window that starts at or before `t`."""
        return ((t - self.align_to) // _US) // self._slide_us

    def index_us(self, t_us: int) -> int:
        """`index` of `t_us` microseconds after the epoch."""
        return (t_us - self._align_us) // self._slide_us

    def first_index_us(self, t_us: int) -> int:
        """The index of the first window that holds `t_us`."""
        return (t_us - self._align_us - self._length_us) // self._slide_us + 1

    def indexes(self, t: datetime) -> range:
        """The indexes of every window that holds `t`, earliest first."""
        t_us = _micros(t)
        return range(self.first_index_us(t_us), self.index_us(t_us) + 1)

    def last_closed(self, watermark_us: int) -> int:
        """The index of the last window that ends at or before the watermark."""
        return (watermark_us - self._align_us - self._length_us) // self._slide_us

    def start(self, index: int) -> datetime:
        return self.align_to + timedelta(microseconds=index * self._slide_us)

    def end(self, index: int) -> datetime:
        return self.start(index) + timedelta(microseconds=self._length_us)

    def end_us(self, index: int) -> int:
        return self._align_us + index * self._slide_us + self._length_us


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """What closes and marks windows besides the watermark, and the caps.

    - `idle_timeout_s`: once a shard's latest event time has not advanced
      for this long in processing time, its event time is taken to go on
      with processing time from the last advance, so that its open windows
      close (marked `closed_by="idle_timeout"`) instead of waiting forever
      for an event that may never come. None: windows wait for events.
    - `backfill_after_s`: a window that ends longer than this before its
      reference time when it closes is marked `backfill`: its KPIs are
      scored and learned but page nobody. The reference is processing time
      (`backfill_clock="processing"`) or the latest Kafka receive time the
      shard has seen (`"receive"`, for replays that keep the original
      timestamps). None: no window is marked.
    - `max_services`: distinct (layer, service) one shard keeps; an event of
      a further service is refused with reason `series_cap`.
    - `max_series_per_service`: distinct metric series (a gauge by name, a
      counter by name and labels) one service keeps; a sample of a further
      series is refused with reason `series_cap`.
    - `restatable_kinds`: payload kinds that may arrive long after they
      happened; one whose window has closed restates the window instead
      of being late, as long as it is at most `restate_within_s` older
      than the latest event time. `restate_within_s` None: no event
      restates, every one is late once its window has closed.
      Metric samples cannot be restated: a counter's increase depends on
      the order its samples came in.
    """

    idle_timeout_s: float | None = None
    backfill_after_s: float | None = None
    backfill_clock: Literal["processing", "receive"] = "processing"
    max_services: int | None = None
    max_series_per_service: int | None = None
    restatable_kinds: frozenset[str] = frozenset({"app_crash"})
    restate_within_s: float | None = 24 * 3600.0

    def __post_init__(self) -> None:
        for name in ("idle_timeout_s", "backfill_after_s", "restate_within_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} cannot be negative, got {value!r}")
        if "metric_sample" in self.restatable_kinds:
            raise ValueError("metric samples cannot be restated")
        for name in ("max_services", "max_series_per_service"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value!r}")


@dataclass(slots=True)
class _Known:
    """What the store remembers of a (layer, service) between windows."""

    kpis: set[str] = field(default_factory=set)
    last_index: int = 0


@dataclass(slots=True)
class Late:
    """An event refused because its window had closed."""

    event: Event
    window_start: datetime
    watermark: datetime


@dataclass(frozen=True, slots=True)
class Refused:
    """An event refused by a cap of the window policy, with the reason."""

    event: Event
    reason: str
    detail: str


@dataclass
class WindowStore:
    """Open windows, watermark and series memory of one shard.

    `forget_after` bounds memory: a (layer, service) that has sent nothing for
    that many windows stops getting `no_data` records and is forgotten, with
    its metric series. `now_us` (processing time) and `received_us` (the
    latest Kafka receive time) are set by the caller as it feeds the store;
    they only mark windows and measure idleness, never place an event.
    """

    spec: WindowSpec = field(default_factory=WindowSpec)
    registry: KpiRegistry = field(default_factory=lambda: DEFAULT_REGISTRY)
    metric_kpis: MetricKpis = field(default_factory=MetricKpis)
    version_kpis: VersionKpis = field(default_factory=VersionKpis)
    forget_after: int = 60
    policy: WindowPolicy = field(default_factory=WindowPolicy)
    next_to_close: int | None = None
    now_us: int | None = None
    received_us: int | None = None
    # Samples the caps refused in the last `add_samples` call.
    refused: list[RefusedSample] = field(default_factory=list)
    _max_us: int | None = None
    # Processing time at which `_max_us` last advanced.
    _advanced_at_us: int | None = None
    _open: dict[int, dict[ServiceKey, Aggregate]] = field(default_factory=dict)
    _known: dict[ServiceKey, _Known] = field(default_factory=dict)
    # Admitted services and their metric series (counters with their state).
    _series: dict[ServiceKey, dict[_SeriesKey, _CounterState]] = field(
        default_factory=dict
    )
    _warned: set[ServiceKey] = field(default_factory=set)
    _ready: list[KpiRecord] = field(default_factory=list)
    # The event time from which the watermark passes the next window to close.
    _close_at_us: int = 0
    _closed_any: bool = False
    # Samples not yet in their aggregates.
    _pending: dict[_GroupKey, tuple[list[Aggregate], list[Fields]]] = field(
        default_factory=dict
    )
    # Closed aggregates a restatable event may still reach, by window index
    # in closing order, and the (window, service) it reached in this batch.
    _kept: dict[int, dict[ServiceKey, Aggregate]] = field(default_factory=dict)
    _restating: set[tuple[int, ServiceKey]] = field(default_factory=set)

    def __post_init__(self) -> None:
        # Kinds whose aggregates are kept: those that feed a KPI together
        # with a restatable kind (launches, the crash rate's denominator).
        restatable = self.policy.restatable_kinds
        if self.policy.restate_within_s is None:
            restatable = frozenset()
        self._keep_kinds = frozenset(
            source
            for kpi in self.registry
            if not restatable.isdisjoint(kpi.sources)
            for source in kpi.sources
        )

    def state(self) -> dict[str, object]:
        """What a snapshot must keep: data only, never the KPI definitions
        (of metric KPIs, only which were made)."""
        self._flush()
        return {
            "metric_kpis": self.metric_kpis.made(),
            "max_event_us": self._max_us,
            "advanced_at_us": self._advanced_at_us,
            "received_us": self.received_us,
            "next_to_close": self.next_to_close,
            "open": self._open,
            "known": self._known,
            "series": self._series,
            "ready": self._ready,
            "close_at_us": self._close_at_us,
            "closed_any": self._closed_any,
            "kept": self._kept,
        }

    def restore(self, state: dict[str, object]) -> None:
        """Take back what `state` returned, into a store built from config."""
        self._max_us = _restored_micros(state, "max_event_us", "max_event_time")
        self._advanced_at_us = state.get("advanced_at_us")  # type: ignore[assignment]
        self.received_us = state.get("received_us")  # type: ignore[assignment]
        self.next_to_close = state["next_to_close"]  # type: ignore[assignment]
        self._open = state["open"]  # type: ignore[assignment]
        self._known = state["known"]  # type: ignore[assignment]
        self._series = _restored_series(state, self._open, self._known)
        self._ready = state["ready"]  # type: ignore[assignment]
        self._close_at_us = _restored_micros(state, "close_at_us", "close_at") or 0
        self._closed_any = state["closed_any"]  # type: ignore[assignment]
        self._kept = state.get("kept", {})  # type: ignore[assignment]
        made = state.get("metric_kpis")
        if made is None:
            made = self._metrics_known()
        self.metric_kpis.remake(made)  # type: ignore[arg-type]

    def _metrics_known(self) -> dict[str, bool]:
        """The metric KPIs the known services had, for a snapshot that did
        not list them: a KPI name no registry knows is a metric's, a counter
        if a counter series of that name was seen."""
        counters = {
            key[0]
            for series in self._series.values()
            for key in series
            if isinstance(key, tuple)
        }
        return {
            name: name in counters
            for known in self._known.values()
            for name in known.kpis
            if self.registry.get(name) is None and self.version_kpis.get(name) is None
        }

    @property
    def max_event_time(self) -> datetime | None:
        if self._max_us is None:
            return None
        return EPOCH + timedelta(microseconds=self._max_us)

    @property
    def watermark(self) -> datetime | None:
        if self._max_us is None:
            return None
        return EPOCH + timedelta(microseconds=self._max_us - self.spec._lateness_us)

    def add(self, event: Event) -> Late | Refused | None:
        """Add one event to its windows; return it if late or refused."""
        late = self.add_samples([sample_of(event)])
        if self.refused:
            _, reason, detail = self.refused[0]
            return Refused(event, reason, detail)
        if not late:
            return None
        _, index, watermark_us = late[0]
        watermark = EPOCH + timedelta(microseconds=watermark_us)
        return Late(event, self.spec.start(index), watermark)

    def add_samples(
        self, samples: Iterable[Sample], offset: int = 0
    ) -> list[LateSample]:
        """Add samples in order; return those refused as late.

        Positions count from `offset`. Samples refused by a cap are left in
        `refused`. This loop runs once per event, so it keeps the
        watermark's state in local names (written back before anything else
        reads it) and does only dictionary work; aggregation waits for the
        end of the batch.
        """
        late: list[LateSample] = []
        self.refused = []
        spec = self.spec
        align, slide, length = spec._align_us, spec._slide_us, spec._length_us
        span = length - slide
        lateness = spec._lateness_us
        pending, admitted = self._pending, self._series
        first, max_us, close_at = self.next_to_close, self._max_us, self._close_at_us
        restatable = self.policy.restatable_kinds if self._keep_kinds else frozenset()
        restate_us = _seconds_to_us(self.policy.restate_within_s or 0)
        advanced = max_us
        try:
            for position, (t_us, layer, service, kind, fields) in enumerate(
                samples, offset
            ):
                last = (t_us - align) // slide
                low = last if not span else (t_us - align - length) // slide + 1
                if first is None or (low < first and not self._closed_any):
                    # Before any window has closed, an earlier event only
                    # moves the first window back.
                    first = low
                elif low < first:
                    assert max_us is not None
                    closed = range(low, min(last, first - 1) + 1)
                    if not (
                        kind in restatable
                        and max_us - t_us <= restate_us
                        and self._restates(closed, layer, service, kind, fields)
                    ):
                        late.append((position, low, max_us - lateness))
                    # A sliding window may still hold it: it counts there.
                    if last < first:
                        continue
                    low = first

                if kind == "metric_sample":
                    if not self._metric(
                        position, low, last, t_us, layer, service, fields
                    ):
                        continue
                else:
                    key = (low, last, layer, service, kind)
                    entry = pending.get(key)
                    if entry is not None:
                        entry[1].append(fields)
                    elif (layer, service) in admitted or self._admit(
                        position, layer, service
                    ):
                        pending[key] = (
                            self._aggregates(low, last, layer, service),
                            [fields],
                        )
                    else:
                        continue

                if max_us is None or t_us > max_us:
                    max_us = t_us
                    # Windows close as the watermark passes them, event by
                    # event, so what is late does not depend on batching.
                    if t_us >= close_at:
                        self.next_to_close, self._max_us = first, max_us
                        self._ready.extend(self._close_passed())
                        first, close_at = self.next_to_close, self._close_at_us
        finally:
            self.next_to_close, self._max_us = first, max_us
            if max_us != advanced:
                self._advanced_at_us = self.now_us
        self._flush()
        if self._restating:
            self._ready.extend(self._restated())
        return late

    def scan_state(self) -> tuple[int, bool, int, int] | None:
        """What the native scanner needs to place events as `add_samples`
        would: the first window to close, whether any has closed, the latest
        event time, and the event time from which the next window closes.
        None before the first event."""
        if self.next_to_close is None or self._max_us is None:
            return None
        return self.next_to_close, self._closed_any, self._max_us, self._close_at_us

    def add_tallies(
        self, tallies: Sequence[ScannedTally], first: int, max_us: int
    ) -> bool:
        """Add the tallies of events the native scanner took, and the state
        they leave; False, adding nothing, if a service in them is beyond
        `policy.max_services` (their events are then placed one by one).

        The scanner takes no event that is late or closes a window, so the
        tallies join open windows only. Samples placed earlier in the batch
        are aggregated first, so that every measurement keeps input order.
        """
        admitted = self._series
        cap = self.policy.max_services
        if cap is not None:
            services = {(_LAYERS[t[2]], t[3]) for t in tallies}
            new = [key for key in services if key not in admitted]
            if len(admitted) + len(new) > cap:
                return False

        self._flush()
        for (
            low,
            last,
            name,
            service,
            kind,
            events,
            counts,
            values,
            rejected,
            versions,
        ) in tallies:
            layer = _LAYERS[name]
            if (layer, service) not in admitted:
                admitted[(layer, service)] = {}
            result = Tally(kind, events, counts, values, rejected, versions)
            for agg in self._aggregates(low, last, layer, service):
                add_tally(agg, result)

        self.next_to_close = first
        if max_us != self._max_us:
            self._max_us = max_us
            self._advanced_at_us = self.now_us
        return True

    def holds_windows(self) -> bool:
        """Whether any window is open (events in it not yet published)."""
        return bool(self._open) or bool(self._pending)

    def closed_through(self) -> datetime | None:
        """The end of the latest window closed; None before any closed."""
        if self.next_to_close is None or not self._closed_any:
            return None
        return self.spec.end(self.next_to_close - 1)

    def close_ready(self) -> list[KpiRecord]:
        """The records of every window the watermark has passed so far."""
        self._ready.extend(self._close_passed())
        ready, self._ready = self._ready, []
        return ready

    def close_all(self) -> list[KpiRecord]:
        """Close every open window: the input has ended."""
        ready = self.close_ready()
        if self._open:
            last = max(self._open)
            ready.extend(self._close_through(last, "end_of_input"))
        return ready

    def idle_deadline_us(self) -> int | None:
        """The processing time at which the idle timeout closes a window.

        None when there is no timeout, nothing to close, or no processing
        time was ever given with the events.
        """
        timeout = self.policy.idle_timeout_s
        if timeout is None or self._max_us is None or self.next_to_close is None:
            return None
        if self._advanced_at_us is None or not (self._open or self._known):
            return None
        # Event time is taken to go on with processing time: the next window
        # closes once as much time has passed as its end is ahead of the
        # watermark, and never before the timeout.
        ahead = self.spec.end_us(self.next_to_close) - self._max_us
        ahead += self.spec._lateness_us
        return self._advanced_at_us + max(_seconds_to_us(timeout), ahead)

    def restart_idle_clock(self, now_us: int) -> None:
        """Count idleness from `now_us`, as when the job resumes a snapshot.

        How long the job itself was down says nothing about the input: its
        backlog may be waiting in the source, and must not find its windows
        closed by a timeout that ran while nobody was reading.
        """
        if self._advanced_at_us is not None:
            self._advanced_at_us = now_us

    def close_idle(self, now_us: int) -> list[KpiRecord]:
        """Close what processing time has closed on a shard that went idle."""
        deadline = self.idle_deadline_us()
        if deadline is None or now_us < deadline:
            return []
        assert self._max_us is not None and self._advanced_at_us is not None
        self.now_us = now_us
        self._flush()
        elapsed = now_us - self._advanced_at_us
        watermark_us = self._max_us - self.spec._lateness_us + elapsed
        last = self.spec.last_closed(watermark_us)
        closed = list(self._close_through(last, "idle_timeout"))
        assert self.next_to_close is not None
        self._close_at_us = self.spec.end_us(self.next_to_close) + (
            self.spec._lateness_us
        )
        return closed

    # -- placing samples ------------------------------------------------------

    def _aggregates(
        self, low: int, last: int, layer: Layer, service: str
    ) -> list[Aggregate]:
        if low == last:
            return [self._aggregate(last, layer, service)]
        return [self._aggregate(i, layer, service) for i in range(low, last + 1)]

    def _aggregate(self, index: int, layer: Layer, service: str) -> Aggregate:
        # Made on first sight, so services keep the order they first came in.
        windows = self._open.get(index)
        if windows is None:
            windows = self._open[index] = {}
        agg = windows.get((layer, service))
        if agg is None:
            agg = windows[(layer, service)] = Aggregate()
        return agg

    def _admit(self, position: int, layer: Layer, service: str) -> bool:
        """Whether the service is kept; a service beyond the cap is refused."""
        key = (layer, service)
        if key in self._series:
            return True
        cap = self.policy.max_services
        if cap is None or len(self._series) < cap:
            self._series[key] = {}
            return True
        detail = (
            f"service {service!r} ({layer.value}) is beyond window.max_services="
            f"{cap} of this shard; raise the cap if the services are real"
        )
        self._refuse(position, key, detail)
        return False

    def _metric(
        self,
        position: int,
        low: int,
        last: int,
        t_us: int,
        layer: Layer,
        service: str,
        fields: Fields,
    ) -> bool:
        """Place one metric sample; False if a cap refused it."""
        if not self._admit(position, layer, service):
            return False
        series = self._series[(layer, service)]
        counter = fields.type == "counter"
        key: _SeriesKey = fields.name
        if counter:
            key = (fields.name, tuple(sorted(fields.labels.items())))
        if key not in series:
            cap = self.policy.max_series_per_service
            if cap is not None and len(series) >= cap:
                detail = (
                    f"metric series {key!r} of {service!r} is beyond "
                    f"window.max_series_per_service={cap}; drop the labels "
                    "that make a series per request, or raise the cap"
                )
                self._refuse(position, (layer, service), detail)
                return False
            series[key] = None

        if counter:
            aggs = self._aggregates(low, last, layer, service)
            self._add_counter(aggs, series, key, t_us, fields)
            return True
        group = (low, last, layer, service, "metric_sample")
        entry = self._pending.get(group)
        if entry is None:
            aggs = self._aggregates(low, last, layer, service)
            self._pending[group] = (aggs, [fields])
        else:
            entry[1].append(fields)
        return True

    def _restates(
        self, closed: range, layer: Layer, service: str, kind: str, fields: Fields
    ) -> bool:
        """Add a late event to its kept windows; False if any was not kept."""
        key = (layer, service)
        if key not in self._series or any(i not in self._kept for i in closed):
            return False
        for index in closed:
            windows = self._kept[index]
            agg = windows.get(key)
            if agg is None:
                agg = windows[key] = Aggregate()
            observe_many(agg, kind, [fields])
            self._restating.add((index, key))
        return True

    def _restated(self) -> Iterator[KpiRecord]:
        """The KPIs, again, of every window a late event restated."""
        for index, key in sorted(self._restating):
            start, end = self.spec.start(index), self.spec.end(index)
            mark = _Mark(start, end, "watermark", False, restated=True)
            # Only what the window holds: no `no_traffic` for later versions.
            yield from self._kpi_records(key, self._kept[index][key], _Known(), mark)
        self._restating.clear()

    def _keep(self, index: int, windows: dict[ServiceKey, Aggregate]) -> None:
        """Keep what a restatable event may reach; forget what none can."""
        keep = self._keep_kinds
        kept = {k: agg for k, agg in windows.items() if not agg.kinds.isdisjoint(keep)}
        if kept:
            self._kept[index] = kept
        assert self._max_us is not None
        horizon_us = self._max_us - _seconds_to_us(self.policy.restate_within_s or 0)
        while self._kept:
            oldest = next(iter(self._kept))
            if self.spec.end_us(oldest) >= horizon_us:
                break
            del self._kept[oldest]

    def _refuse(self, position: int, key: ServiceKey, detail: str) -> None:
        self.refused.append((position, SERIES_CAP, detail))
        if key in self._warned:
            return
        if len(self._warned) < _WARN_LIMIT:
            self._warned.add(key)
            log.warning("events refused reason=%s %s", SERIES_CAP, detail)
        elif len(self._warned) == _WARN_LIMIT:
            self._warned.add(key)
            log.warning(
                "events refused reason=%s for more than %s services; further "
                "services are counted as dead letters without a warning each",
                SERIES_CAP,
                _WARN_LIMIT,
            )

    def _flush(self) -> None:
        for (_, _, _, _, kind), (aggs, fields) in self._pending.items():
            for agg in aggs:
                observe_many(agg, kind, fields)
        self._pending.clear()

    # -- closing windows ------------------------------------------------------

    def _close_passed(self) -> list[KpiRecord]:
        if self._max_us is None or self.next_to_close is None:
            return []
        self._flush()
        watermark_us = self._max_us - self.spec._lateness_us
        closed = list(self._close_through(self.spec.last_closed(watermark_us)))
        self._close_at_us = self.spec.end_us(self.next_to_close) + (
            self.spec._lateness_us
        )
        return closed

    def _close_through(
        self, last: int, closed_by: ClosedBy = "watermark"
    ) -> Iterator[KpiRecord]:
        assert self.next_to_close is not None
        self._flush()
        while self.next_to_close <= last:
            index = self.next_to_close
            if not self._open and not self._known:
                self.next_to_close = last + 1
                return
            if not self._open or min(self._open) > index:
                # Nothing is open before the next open window: jump over the
                # empty stretch once series memory has expired.
                index = self._skip_empty(index, last)
            yield from self._close(index, closed_by)
            self.next_to_close = index + 1
            self._closed_any = True

    def _skip_empty(self, index: int, last: int) -> int:
        next_open = min(self._open) if self._open else last + 1
        horizon = max((k.last_index for k in self._known.values()), default=index)
        if index > horizon + self.forget_after:
            return min(next_open, last)
        return index

    def _close(self, index: int, closed_by: ClosedBy) -> Iterator[KpiRecord]:
        windows = self._open.pop(index, {})
        if self._keep_kinds and windows:
            self._keep(index, windows)
        mark = _Mark(
            self.spec.start(index),
            self.spec.end(index),
            closed_by,
            self._is_backfill(self.spec.end_us(index)),
        )
        for key, agg in windows.items():
            known = self._known.get(key)
            if known is None:
                known = self._known[key] = _Known()
            known.last_index = index
            yield from self._kpi_records(key, agg, known, mark)
        for key, known in list(self._known.items()):
            if key in windows:
                continue
            if index - known.last_index > self.forget_after:
                self._forget(key)
                continue
            yield from self._no_data(key, known, mark)

    def _forget(self, key: ServiceKey) -> None:
        del self._known[key]
        # A service with a window still open comes back when it closes.
        if not any(key in windows for windows in self._open.values()):
            self._series.pop(key, None)

    def _is_backfill(self, end_us: int) -> bool:
        after = self.policy.backfill_after_s
        if after is None:
            return False
        receive = self.policy.backfill_clock == "receive"
        reference = self.received_us if receive else self.now_us
        return reference is not None and reference - end_us > _seconds_to_us(after)

    def _kpi_records(
        self, key: ServiceKey, agg: Aggregate, known: _Known, mark: _Mark
    ) -> Iterator[KpiRecord]:
        window_s = self.spec.length_s
        rejected = sum(agg.rejected.values())
        # Listed first: the loop adds to `known.kpis`, which the lookup reads.
        for kpi in list(self._kpis_of(agg, known)):
            value = kpi.compute(agg, window_s)
            if value is not None and not math.isfinite(value):
                value = None
            known.kpis.add(kpi.name)
            state = "ok" if value is not None else "no_traffic"
            yield mark.record(key, kpi, value, state, agg.events, rejected)

    def _kpis_of(self, agg: Aggregate, known: _Known) -> Iterator[Kpi]:
        for kpi in self.registry:
            if kpi.name in known.kpis or kpi.applies_to(agg):
                yield kpi
        for name in self.metric_kpis.names(agg, known.kpis):
            yield self.metric_kpis.get(name)
        for name in self.version_kpis.names(agg, known.kpis):
            yield self._kpi_named(name)

    def _kpi_named(self, name: str) -> Kpi:
        kpi = self.registry.get(name) or self.version_kpis.get(name)
        return kpi or self.metric_kpis.get(name)

    def _no_data(
        self, key: ServiceKey, known: _Known, mark: _Mark
    ) -> Iterator[KpiRecord]:
        for name in sorted(known.kpis):
            kpi = self._kpi_named(name)
            yield mark.record(key, kpi, None, "no_data", 0, 0)

    def _add_counter(
        self,
        aggs: list[Aggregate],
        series: dict[_SeriesKey, _CounterState],
        key: _SeriesKey,
        t_us: int,
        p: Fields,
    ) -> None:
        # A cumulative counter says how much happened since it started; the
        # window gets the increase since the previous sample. The first sample
        # of a series is only a baseline, and a counter that went down was
        # restarted: what it counts now happened since the restart.
        name = "metric:" + p.name
        value = float(p.value)
        for agg in aggs:
            agg.events += 1
            agg.kinds.add("metric_sample")
            if not math.isfinite(value) or value < 0:
                agg.rejected[name] = agg.rejected.get(name, 0) + 1
        if not math.isfinite(value) or value < 0:
            return
        previous = series[key]
        series[key] = (t_us, value)
        if previous is None:
            return
        increase = value - previous[1] if value >= previous[1] else value
        for agg in aggs:
            agg.sums[name] = agg.sums.get(name, 0.0) + increase


class _Mark:
    """What every record of one closing window shares.

    Records are copies of one template made per window: copying with the
    record's own values costs half of constructing each afresh, and a
    window makes a record per KPI of every service.
    """

    __slots__ = ("_template",)

    def __init__(
        self,
        start: datetime,
        end: datetime,
        closed_by: ClosedBy,
        backfill: bool,
        *,
        restated: bool = False,
    ) -> None:
        # Every field in its place, so that copies keep the field order.
        self._template = KpiRecord.model_construct(
            schema_version=1,
            layer=Layer.API,
            service="",
            kpi="",
            dimension="speed",
            direction="both",
            unit="",
            window_start=start,
            window_end=end,
            value=None,
            state="ok",
            events=0,
            rejected_values=0,
            closed_by=closed_by,
            backfill=backfill,
            restated=restated,
        )

    def record(
        self,
        key: ServiceKey,
        kpi: Kpi,
        value: float | None,
        state: str,
        events: int,
        rejected: int,
    ) -> KpiRecord:
        return self._template.model_copy(
            update={
                "layer": key[0],
                "service": key[1],
                "kpi": kpi.name,
                "dimension": kpi.dimension,
                "direction": kpi.direction,
                "unit": kpi.unit,
                "value": value,
                "state": state,
                "events": events,
                "rejected_values": rejected,
            }
        )


def _restored_micros(state: dict[str, object], key: str, older: str) -> int | None:
    # Snapshots taken before times were kept in microseconds hold datetimes.
    if key in state:
        return state[key]  # type: ignore[return-value]
    value = state.get(older)
    return None if value is None else _micros(value)  # type: ignore[arg-type]


def _restored_series(
    state: dict[str, object],
    open_windows: dict[int, dict[ServiceKey, Aggregate]],
    known: dict[ServiceKey, _Known],
) -> dict[ServiceKey, dict[_SeriesKey, _CounterState]]:
    if "series" in state:
        return state["series"]  # type: ignore[return-value]
    # Snapshots taken before the caps kept counters by (layer, service, name,
    # labels) and no list of services: both are rebuilt from what they hold.
    series: dict[ServiceKey, dict[_SeriesKey, _CounterState]] = {}
    for windows in open_windows.values():
        for key in windows:
            series.setdefault(key, {})
    for key in known:
        series.setdefault(key, {})
    counters: dict[
        tuple[Layer, str, str, tuple[tuple[str, str], ...]], tuple[int, float]
    ]
    counters = state.get("counters", {})  # type: ignore[assignment]
    for (layer, service, name, labels), last in counters.items():
        series.setdefault((layer, service), {})[(name, labels)] = last
    return series
