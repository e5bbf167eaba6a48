"""A simulated online shop with injected failures: the source of `foreshock demo`.

The shop (`connectors._simulated_shop`) has a web frontend, a mobile app,
synthetic checks from three locations, an api gateway, three backends
(catalog, orders, accounts), one database, the containers that run them and
a payment provider, with daily traffic, Poisson counts and lognormal
latencies. From 06:00 UTC, two hours of normal traffic let detectors learn;
then three failures follow 45 minutes apart, each fixed after 30 minutes:

- duplicate-ajax (08:00): a web release doubles the AJAX calls per page, so
  api and backend traffic nearly double at once; backends queue from minute
  1 and pages load slowly from minute 5. The release shows in the `release`
  attribute of page views and in the web's `ajax_requests_per_page` gauge.
- full-scan-query (09:15): a new statement scans the orders table; query time
  jumps at once and api latency within a minute; mobile crashes rise from
  minute 5, api timeouts and page errors from minute 8.
- saturated-containers (10:30): the catalog containers reach 100 % CPU within
  three minutes while memory climbs; the load balancer fails from minute 6,
  taking synthetic checks, the api and pages down with it.

The deep-stack signal thus leads the user-facing one by about six minutes.
Each minute is drawn from its own generator, seeded with the seed and the
minute's index, so a stack yields the same events on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from connectors._simulated_shop import (
    ACCOUNTS,
    BACKENDS,
    CALLS,
    CATALOG,
    DATABASE,
    LAYERS,
    MINUTE_MS,
    ORDERS,
    WEB,
    Doc,
    Effects,
    draw_minute,
)
from connectors.messages import RawBatch, RawMessage
from foreshock.layers import Layer
from foreshock.schema import Event
from foreshock.topology import Topology

__all__ = ["Failure", "SimulatedStack", "demo_stack"]

_FADE_MIN = 3.0  # how long symptoms take to fade once a fault is fixed
_START = datetime(2025, 3, 4, 6, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Failure:
    """A fault injected into the simulated stack: the ground truth of an incident."""

    name: str
    description: str
    root_cause_service: str
    root_cause_layer: Layer
    start: datetime
    end: datetime


def _level(tau: float, begin: float, rise: float, duration: float) -> float:
    """A symptom's strength at `tau` minutes into a fault lasting `duration`.

    Zero until `begin`, growing linearly to one over `rise` minutes, fading
    over a few minutes once the fault is fixed.
    """
    up = min(max((tau - begin) / rise, 0.0), 1.0)
    down = min(max(1.0 - (tau - duration) / _FADE_MIN, 0.0), 1.0)
    return up * down


def _duplicate_ajax(fx: Effects, tau: float, duration: float) -> None:
    # The release reaches every browser within a minute, then is rolled back.
    released = _level(tau, 0.0, 1.0, duration)
    fx.release_share = released
    fx.ajax_factor = 1.0 + 1.2 * released

    # Twice the load queues up in the backends before pages feel it.
    queued = _level(tau, 1.0, 5.0, duration)
    for backend in BACKENDS:
        fx.backend_slow[backend] = 1.0 + 1.5 * queued

    users = _level(tau, 5.0, 4.0, duration)
    fx.page_slow = 1.0 + 0.9 * users
    fx.launch_slow = 1.0 + 0.3 * users
    fx.check_slow = 1.0 + 0.5 * users


def _full_scan_query(fx: Effects, tau: float, duration: float) -> None:
    fx.full_scan_share = _level(tau, 0.0, 1.0, duration)
    fx.cpu_extra[DATABASE] = 0.45 * _level(tau, 0.0, 2.0, duration)

    # Full scans hold the buffer pool and the disk: every other query slows.
    contention = _level(tau, 1.0, 5.0, duration)
    fx.db_slow = 1.0 + 2.0 * contention
    fx.backend_slow[ORDERS] = 1.0 + 2.0 * contention
    fx.backend_slow[CATALOG] = 1.0 + 0.8 * contention
    fx.backend_slow[ACCOUNTS] = 1.0 + 0.8 * contention
    fx.db_errors = 0.02 * _level(tau, 6.0, 3.0, duration)

    # The app gives up on slow calls; its retry path crashes.
    mobile = _level(tau, 5.0, 2.0, duration)
    fx.crashes = 0.14 * mobile
    fx.launch_slow = 1.0 + 0.8 * mobile

    later = _level(tau, 8.0, 3.0, duration)
    fx.timeouts[ORDERS] = 0.2 * later
    fx.page_slow = 1.0 + 0.6 * later
    fx.js_errors = 0.08 * later
    fx.check_slow = 1.0 + 0.5 * later


def _saturated_containers(fx: Effects, tau: float, duration: float) -> None:
    fx.saturation[CATALOG] = _level(tau, 0.0, 3.0, duration)
    fx.memory_climb[CATALOG] = _level(tau, 0.0, 14.0, duration)
    fx.backend_slow[CATALOG] = 1.0 + 5.0 * _level(tau, 2.0, 3.0, duration)

    # Health checks of the starved containers fail and the balancer gives up.
    down = _level(tau, 6.0, 2.0, duration)
    fx.backend_errors[CATALOG] = 0.6 * down
    fx.balancer_failures = 0.85 * down
    fx.check_failures = 0.92 * down

    users = _level(tau, 6.5, 2.0, duration)
    fx.page_slow = 1.0 + 1.5 * users
    fx.js_errors = 0.4 * users
    fx.crashes = 0.08 * users


@dataclass(frozen=True)
class _Story:
    """How a failure plays out, minute by minute, and what truly caused it."""

    play: Callable[[Effects, float, float], None]
    description: str
    root_cause_service: str
    root_cause_layer: Layer


_STORIES = {
    "duplicate-ajax": _Story(
        _duplicate_ajax,
        "A web release fires every AJAX call twice, doubling api and backend "
        "load until backends queue and pages load slowly.",
        WEB,
        Layer.FRONTEND,
    ),
    "full-scan-query": _Story(
        _full_scan_query,
        "A new order-history query scans the whole orders table, slowing the "
        "database and the api until mobile calls time out and the app crashes.",
        DATABASE,
        Layer.DATABASE,
    ),
    "saturated-containers": _Story(
        _saturated_containers,
        "The catalog containers are under-provisioned: CPU saturates and memory "
        "climbs until the load balancer fails and the shop is unavailable.",
        CATALOG,
        Layer.INFRASTRUCTURE,
    ),
}

# (story, minutes after the start, minutes until it is fixed)
_SCHEDULE = (
    ("duplicate-ajax", 120, 30),
    ("full-scan-query", 195, 30),
    ("saturated-containers", 270, 30),
)


def _effects(t: datetime, failures: tuple[Failure, ...]) -> Effects:
    fx = Effects()
    middle = t + timedelta(seconds=30)
    for failure in failures:
        tau = (middle - failure.start) / timedelta(minutes=1)
        duration = (failure.end - failure.start) / timedelta(minutes=1)
        if 0.0 <= tau <= duration + _FADE_MIN:
            _STORIES[failure.name].play(fx, tau, duration)
    return fx


@dataclass(frozen=True)
class SimulatedStack:
    """A simulated stack: its topology, the failures injected and its events.

    `batches()` is what a flow reads: orjson-encoded records built straight
    from dicts. `events()` yields the same events as validated `Event`s,
    which costs about ten microseconds each.
    """

    topology: Topology
    failures: tuple[Failure, ...]
    start: datetime
    end: datetime
    seed: int = 7

    def events(self) -> Iterator[Event]:
        """Every event of the simulation, in event-time order."""
        for docs, _ in self._minutes():
            for doc in docs:
                yield Event.model_validate(doc)

    def batches(self, size: int = 5000) -> Iterator[RawBatch]:
        """The events as native JSON records of one source partition."""
        if size < 1:
            raise ValueError(f"batch size must be at least 1, got {size!r}")
        keys = {name: name.encode() for name in LAYERS}
        messages: list[RawMessage] = []
        offset = 0
        for docs, epoch_ms in self._minutes():
            for doc, ms in zip(docs, epoch_ms, strict=True):
                value = orjson.dumps(doc)
                key = keys[str(doc["service"])]
                messages.append(RawMessage("demo", 0, offset, key, value, ms))
                offset += 1
                if len(messages) == size:
                    yield RawBatch("demo:0", tuple(messages))
                    messages = []
        if messages:
            yield RawBatch("demo:0", tuple(messages))

    def _minutes(self) -> Iterator[tuple[list[Doc], list[int]]]:
        minutes = int((self.end - self.start) / timedelta(minutes=1))
        start_ms = int(self.start.timestamp() * 1000)
        for index in range(minutes):
            t = self.start + timedelta(minutes=index)
            minute = draw_minute(self.seed, index, t, _effects(t, self.failures))
            yield minute.ordered(start_ms + index * MINUTE_MS)


def demo_stack(seed: int = 7, hours: float = 6.0) -> SimulatedStack:
    """The demo shop from 06:00 UTC for `hours`, with every failure that fits.

    A failure fits when it ends at least ten minutes before the simulation;
    the default six hours hold all three and an hour of recovery after them.
    """
    if not hours > 0.0:
        raise ValueError(f"hours must be positive, got {hours!r}")
    end = _START + timedelta(minutes=round(hours * 60.0))
    failures = tuple(
        f for f in map(_failure, _SCHEDULE) if f.end + timedelta(minutes=10) <= end
    )
    topology = Topology.from_edges(CALLS, LAYERS)
    return SimulatedStack(topology, failures, _START, end, seed)


def _failure(entry: tuple[str, int, int]) -> Failure:
    name, after_min, duration_min = entry
    story = _STORIES[name]
    start = _START + timedelta(minutes=after_min)
    end = start + timedelta(minutes=duration_min)
    return Failure(
        name,
        story.description,
        story.root_cause_service,
        story.root_cause_layer,
        start,
        end,
    )
