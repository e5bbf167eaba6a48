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

What the event times alone cannot tell is set by a `WindowPolicy`: when a
shard that stopped advancing lets processing time close its windows (the
idle timeout), when a closed window is old news (backfill), and how many
services and series one shard may hold, so that a flood of new names cannot
exhaust memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from foreshock.kpis import DEFAULT_REGISTRY, Aggregate, Kpi, KpiRegistry
from foreshock.layers import Layer
from foreshock.measure import Fields, observe_many
from foreshock.metrics_kpis import MetricKpis
from foreshock.records import KpiRecord
from foreshock.schema import Event

__all__ = [
    "EPOCH",
    "Late",
    "LateSample",
    "Sample",
    "WindowSpec",
    "WindowStore",
    "sample_of",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

ServiceKey = tuple[Layer, str]
# An event as its window needs it: (event time in microseconds since the Unix
# epoch, layer, service, payload kind, payload). The payload is read by
# attribute: a validated payload model, or a struct with the same fields.
Sample = tuple[int, Layer, str, str, Fields]
# A sample refused as late: (its position in the batch, the index of its
# window, the watermark in microseconds when it came).
LateSample = tuple[int, int, int]
_GroupKey = tuple[int, Layer, str, str]


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


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Tumbling windows of `length_s`, aligned to `align_to`.

    Window arithmetic is done in whole microseconds, so that windows aligned
    to a distant date keep exact boundaries.
    """

    length_s: float = 60.0
    allowed_lateness_s: float = 30.0
    align_to: datetime = EPOCH
    _length_us: int = field(init=False, repr=False, compare=False, default=0)
    _align_us: int = field(init=False, repr=False, compare=False, default=0)
    _lateness_us: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        if self.length_s <= 0:
            raise ValueError(f"window length must be positive, got {self.length_s!r}")
        if self.allowed_lateness_s < 0:
            raise ValueError(
                f"allowed lateness cannot be negative, got {self.allowed_lateness_s!r}"
            )
        if self.align_to.tzinfo is None:
            raise ValueError(f"align_to must be timezone-aware, got {self.align_to!r}")
        # Computed once: window indexes are computed for every event.
        object.__setattr__(self, "_length_us", round(self.length_s * 1_000_000))
        object.__setattr__(self, "_align_us", _micros(self.align_to))
        lateness = timedelta(seconds=self.allowed_lateness_s) // _US
        object.__setattr__(self, "_lateness_us", lateness)

    def index(self, t: datetime) -> int:
        return ((t - self.align_to) // _US) // self._length_us

    def index_us(self, t_us: int) -> int:
        """The index of the window holding `t_us` microseconds after the epoch."""
        return (t_us - self._align_us) // self._length_us

    def start(self, index: int) -> datetime:
        return self.align_to + timedelta(microseconds=index * self._length_us)

    def end(self, index: int) -> datetime:
        return self.start(index + 1)

    def end_us(self, index: int) -> int:
        return self._align_us + (index + 1) * self._length_us


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


@dataclass
class WindowStore:
    """Open windows, watermark and series memory of one shard.

    `forget_after` bounds memory: a (layer, service) that has sent nothing for
    that many windows stops getting `no_data` records and is forgotten.
    """

    spec: WindowSpec = field(default_factory=WindowSpec)
    registry: KpiRegistry = field(default_factory=lambda: DEFAULT_REGISTRY)
    metric_kpis: MetricKpis = field(default_factory=MetricKpis)
    forget_after: int = 60
    next_to_close: int | None = None
    _max_us: int | None = None
    _open: dict[int, dict[ServiceKey, Aggregate]] = field(default_factory=dict)
    _known: dict[ServiceKey, _Known] = field(default_factory=dict)
    _counters: dict[tuple[object, ...], tuple[int, float]] = field(default_factory=dict)
    _ready: list[KpiRecord] = field(default_factory=list)
    # The event time from which the watermark passes the next window to close.
    _close_at_us: int = 0
    _closed_any: bool = False
    # Samples not yet in their aggregate, by (window, layer, service, kind).
    _pending: dict[_GroupKey, tuple[Aggregate, list[Fields]]] = field(
        default_factory=dict
    )

    def state(self) -> dict[str, object]:
        """What a snapshot must keep: data only, never the KPI definitions."""
        self._flush()
        return {
            "max_event_us": self._max_us,
            "next_to_close": self.next_to_close,
            "open": self._open,
            "known": self._known,
            "counters": self._counters,
            "ready": self._ready,
            "close_at_us": self._close_at_us,
            "closed_any": self._closed_any,
        }

    def restore(self, state: dict[str, object]) -> None:
        """Take back what `state` returned, into a store built from config."""
        self._max_us = _restored_micros(state, "max_event_us", "max_event_time")
        self.next_to_close = state["next_to_close"]  # type: ignore[assignment]
        self._open = state["open"]  # type: ignore[assignment]
        self._known = state["known"]  # type: ignore[assignment]
        self._counters = state["counters"]  # type: ignore[assignment]
        self._ready = state["ready"]  # type: ignore[assignment]
        self._close_at_us = _restored_micros(state, "close_at_us", "close_at") or 0
        self._closed_any = state["closed_any"]  # type: ignore[assignment]

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

    def add(self, event: Event) -> Late | None:
        """Add one event to its window; return it as late if that has closed."""
        refused = self.add_samples([sample_of(event)])
        if not refused:
            return None
        _, index, watermark_us = refused[0]
        watermark = EPOCH + timedelta(microseconds=watermark_us)
        return Late(event, self.spec.start(index), watermark)

    def add_samples(self, samples: Iterable[Sample]) -> list[LateSample]:
        """Add samples in order; return those refused as late.

        This loop runs once per event, so it keeps the watermark's state in
        local names (written back before anything else reads it) and does
        only dictionary work; aggregation waits for the end of the batch.
        """
        late: list[LateSample] = []
        align, length = self.spec._align_us, self.spec._length_us
        lateness = self.spec._lateness_us
        pending = self._pending
        first, max_us, close_at = self.next_to_close, self._max_us, self._close_at_us
        try:
            for position, (t_us, layer, service, kind, fields) in enumerate(samples):
                index = (t_us - align) // length
                if first is None or (index < first and not self._closed_any):
                    # Before any window has closed, an earlier event only
                    # moves the first window back.
                    first = index
                elif index < first:
                    assert max_us is not None
                    late.append((position, index, max_us - lateness))
                    continue

                if kind == "metric_sample" and fields.type == "counter":
                    agg = self._aggregate(index, layer, service)
                    self._add_counter(agg, t_us, layer, service, fields)
                else:
                    key = (index, layer, service, kind)
                    entry = pending.get(key)
                    if entry is None:
                        agg = self._aggregate(index, layer, service)
                        pending[key] = (agg, [fields])
                    else:
                        entry[1].append(fields)

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
        self._flush()
        return late

    def close_ready(self) -> list[KpiRecord]:
        """The records of every window the watermark has passed so far."""
        self._ready.extend(self._close_passed())
        ready, self._ready = self._ready, []
        return ready

    def close_all(self) -> list[KpiRecord]:
        """Close every open window: the input has ended."""
        ready = self.close_ready()
        if self._open:
            ready.extend(self._close_through(max(self._open)))
        return ready

    def _aggregate(self, index: int, layer: Layer, service: str) -> Aggregate:
        # Made on first sight, so services keep the order they first came in.
        windows = self._open.get(index)
        if windows is None:
            windows = self._open[index] = {}
        agg = windows.get((layer, service))
        if agg is None:
            agg = windows[(layer, service)] = Aggregate()
        return agg

    def _flush(self) -> None:
        for (_, _, _, kind), (agg, fields) in self._pending.items():
            observe_many(agg, kind, fields)
        self._pending.clear()

    def _close_passed(self) -> list[KpiRecord]:
        if self._max_us is None or self.next_to_close is None:
            return []
        self._flush()
        watermark_us = self._max_us - self.spec._lateness_us
        closed = list(self._close_through(self.spec.index_us(watermark_us) - 1))
        self._close_at_us = self.spec.end_us(self.next_to_close) + (
            self.spec._lateness_us
        )
        return closed

    def _close_through(self, last: int) -> Iterator[KpiRecord]:
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
            yield from self._close(index)
            self.next_to_close = index + 1
            self._closed_any = True

    def _skip_empty(self, index: int, last: int) -> int:
        next_open = min(self._open) if self._open else last + 1
        horizon = max((k.last_index for k in self._known.values()), default=index)
        if index > horizon + self.forget_after:
            return min(next_open, last)
        return index

    def _close(self, index: int) -> Iterator[KpiRecord]:
        windows = self._open.pop(index, {})
        start, end = self.spec.start(index), self.spec.end(index)
        for key, agg in windows.items():
            known = self._known.get(key)
            if known is None:
                known = self._known[key] = _Known()
            known.last_index = index
            yield from self._kpi_records(key, agg, known, start, end)
        for key, known in list(self._known.items()):
            if key in windows:
                continue
            if index - known.last_index > self.forget_after:
                del self._known[key]
                continue
            yield from self._no_data(key, known, start, end)

    def _kpi_records(
        self,
        key: ServiceKey,
        agg: Aggregate,
        known: _Known,
        start: datetime,
        end: datetime,
    ) -> Iterator[KpiRecord]:
        window_s = self.spec.length_s
        # Listed first: the loop adds to `known.kpis`, which the lookup reads.
        for kpi in list(self._kpis_of(agg, known)):
            value = kpi.compute(agg, window_s)
            if value is not None and not math.isfinite(value):
                value = None
            known.kpis.add(kpi.name)
            yield _record(
                key,
                kpi,
                start,
                end,
                value,
                "ok" if value is not None else "no_traffic",
                agg.events,
                sum(agg.rejected.values()),
            )

    def _kpis_of(self, agg: Aggregate, known: _Known) -> Iterator[Kpi]:
        for kpi in self.registry:
            if kpi.name in known.kpis or kpi.applies_to(agg):
                yield kpi
        for name in self.metric_kpis.names(agg, known.kpis):
            yield self.metric_kpis.get(name)

    def _no_data(
        self, key: ServiceKey, known: _Known, start: datetime, end: datetime
    ) -> Iterator[KpiRecord]:
        for name in sorted(known.kpis):
            kpi = self.registry.get(name) or self.metric_kpis.get(name)
            yield _record(key, kpi, start, end, None, "no_data", 0, 0)

    def _add_counter(
        self, agg: Aggregate, t_us: int, layer: Layer, service: str, p: Fields
    ) -> None:
        # A cumulative counter says how much happened since it started; the
        # window gets the increase since the previous sample. The first sample
        # of a series is only a baseline, and a counter that went down was
        # restarted: what it counts now happened since the restart.
        agg.events += 1
        agg.kinds.add("metric_sample")
        name = "metric:" + p.name
        value = float(p.value)
        if not math.isfinite(value) or value < 0:
            agg.rejected[name] = agg.rejected.get(name, 0) + 1
            return
        labels: dict[str, str] = p.labels
        series = (layer, service, p.name, tuple(sorted(labels.items())))
        previous = self._counters.get(series)
        self._counters[series] = (t_us, value)
        if previous is None:
            return
        increase = value - previous[1] if value >= previous[1] else value
        agg.sums[name] = agg.sums.get(name, 0.0) + increase


def _restored_micros(state: dict[str, object], key: str, older: str) -> int | None:
    # Snapshots taken before times were kept in microseconds hold datetimes.
    if key in state:
        return state[key]  # type: ignore[return-value]
    value = state.get(older)
    return None if value is None else _micros(value)  # type: ignore[arg-type]


def _record(
    key: ServiceKey,
    kpi: Kpi,
    start: datetime,
    end: datetime,
    value: float | None,
    state: str,
    events: int,
    rejected: int,
) -> KpiRecord:
    return KpiRecord.model_construct(
        schema_version=1,
        layer=key[0],
        service=key[1],
        kpi=kpi.name,
        dimension=kpi.dimension,
        direction=kpi.direction,
        unit=kpi.unit,
        window_start=start,
        window_end=end,
        value=value,
        state=state,
        events=events,
        rejected_values=rejected,
    )
