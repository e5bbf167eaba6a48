"""Event-time tumbling windows per (layer, service), with allowed lateness.

`WindowStore` keeps the open windows of one shard (one source partition) and
is pure Python, so window logic is tested without any stream engine. Time is
whatever the events say: the watermark is the latest event time seen minus
the allowed lateness, a window closes once the watermark passes its end, and
an event for a closed window is late: it is returned to the caller, never
merged and never dropped.

When a window closes, every (layer, service) the shard has seen recently gets
its KPIs for it; a service that sent nothing gets `no_data` records, so that a
silent service is visible instead of skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from foreshock.kpis import DEFAULT_REGISTRY, Aggregate, Kpi, KpiRegistry
from foreshock.layers import Layer
from foreshock.measure import observe
from foreshock.metrics_kpis import MetricKpis
from foreshock.records import KpiRecord
from foreshock.schema import Event, MetricSample

__all__ = ["EPOCH", "WindowSpec", "WindowStore"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

ServiceKey = tuple[Layer, str]


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

    def __post_init__(self) -> None:
        if self.length_s <= 0:
            raise ValueError(f"window length must be positive, got {self.length_s!r}")
        if self.allowed_lateness_s < 0:
            raise ValueError(
                f"allowed lateness cannot be negative, got {self.allowed_lateness_s!r}"
            )
        if self.align_to.tzinfo is None:
            raise ValueError(f"align_to must be timezone-aware, got {self.align_to!r}")
        # Computed once: `index` runs for every event.
        object.__setattr__(self, "_length_us", round(self.length_s * 1_000_000))

    def index(self, t: datetime) -> int:
        return ((t - self.align_to) // _US) // self._length_us

    def start(self, index: int) -> datetime:
        return self.align_to + timedelta(microseconds=index * self._length_us)

    def end(self, index: int) -> datetime:
        return self.start(index + 1)


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
    max_event_time: datetime | None = None
    next_to_close: int | None = None
    _open: dict[int, dict[ServiceKey, Aggregate]] = field(default_factory=dict)
    _known: dict[ServiceKey, _Known] = field(default_factory=dict)
    _counters: dict[tuple[object, ...], tuple[datetime | None, float]] = field(
        default_factory=dict
    )
    _ready: list[KpiRecord] = field(default_factory=list)
    # The event time from which the watermark passes the next window to close.
    _close_at: datetime = EPOCH
    _closed_any: bool = False

    def state(self) -> dict[str, object]:
        """What a snapshot must keep: data only, never the KPI definitions."""
        return {
            "max_event_time": self.max_event_time,
            "next_to_close": self.next_to_close,
            "open": self._open,
            "known": self._known,
            "counters": self._counters,
            "ready": self._ready,
            "close_at": self._close_at,
            "closed_any": self._closed_any,
        }

    def restore(self, state: dict[str, object]) -> None:
        """Take back what `state` returned, into a store built from config."""
        self.max_event_time = state["max_event_time"]  # type: ignore[assignment]
        self.next_to_close = state["next_to_close"]  # type: ignore[assignment]
        self._open = state["open"]  # type: ignore[assignment]
        self._known = state["known"]  # type: ignore[assignment]
        self._counters = state["counters"]  # type: ignore[assignment]
        self._ready = state["ready"]  # type: ignore[assignment]
        self._close_at = state["close_at"]  # type: ignore[assignment]
        self._closed_any = state["closed_any"]  # type: ignore[assignment]

    @property
    def watermark(self) -> datetime | None:
        if self.max_event_time is None:
            return None
        return self.max_event_time - timedelta(seconds=self.spec.allowed_lateness_s)

    def add(self, event: Event) -> Late | None:
        """Add one event to its window; return it as late if that has closed."""
        index = self.spec.index(event.time)
        if self.next_to_close is None or (
            index < self.next_to_close and not self._closed_any
        ):
            # Before any window has closed, an earlier event only moves the
            # first window back.
            self.next_to_close = index
        elif index < self.next_to_close:
            assert self.watermark is not None
            return Late(event, self.spec.start(index), self.watermark)

        windows = self._open.get(index)
        if windows is None:
            windows = self._open[index] = {}
        key = (event.layer, event.service)
        agg = windows.get(key)
        if agg is None:
            agg = windows[key] = Aggregate()
        if isinstance(event.payload, MetricSample) and event.payload.type == "counter":
            self._add_counter(agg, event, event.payload)
        else:
            observe(agg, event.payload)

        if self.max_event_time is None or event.time > self.max_event_time:
            self.max_event_time = event.time
            # Windows close as the watermark passes them, event by event, so
            # what is late does not depend on how input was batched.
            if event.time >= self._close_at:
                self._ready.extend(self._close_passed())
        return None

    def close_ready(self) -> list[KpiRecord]:
        """The records of every window the watermark has passed so far."""
        self._ready.extend(self._close_passed())
        ready, self._ready = self._ready, []
        return ready

    def _close_passed(self) -> Iterator[KpiRecord]:
        watermark = self.watermark
        if watermark is None or self.next_to_close is None:
            return
        yield from self._close_through(self.spec.index(watermark) - 1)
        lateness = timedelta(seconds=self.spec.allowed_lateness_s)
        self._close_at = self.spec.end(self.next_to_close) + lateness

    def close_all(self) -> list[KpiRecord]:
        """Close every open window: the input has ended."""
        ready = self.close_ready()
        if self._open:
            ready.extend(self._close_through(max(self._open)))
        return ready

    def _close_through(self, last: int) -> Iterator[KpiRecord]:
        assert self.next_to_close is not None
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
        for kpi in self._kpis_of(agg, known):
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

    def _add_counter(self, agg: Aggregate, event: Event, p: MetricSample) -> None:
        # A cumulative counter says how much happened since it started; the
        # window gets the increase since the previous sample. The first sample
        # of a series is only a baseline, and a counter that went down was
        # restarted: what it counts now happened since the restart.
        agg.events += 1
        agg.kinds.add(p.kind)
        name = "metric:" + p.name
        if not math.isfinite(p.value) or p.value < 0:
            agg.rejected[name] = agg.rejected.get(name, 0) + 1
            return
        series = (event.layer, event.service, p.name, tuple(sorted(p.labels.items())))
        previous = self._counters.get(series)
        self._counters[series] = (event.time, p.value)
        if previous is None:
            return
        increase = p.value - previous[1] if p.value >= previous[1] else p.value
        agg.sums[name] = agg.sums.get(name, 0.0) + increase


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
