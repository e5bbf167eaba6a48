"""Realistic native telemetry for the throughput benchmark, and a topic of it.

The fleet spans every layer, about 10,000 KPI series in all (services times
the KPIs their kinds of events feed): gateways and backends serving
requests, databases, containers, browsers, mobile apps, synthetic checks,
third-party providers and workers that push gauges and counters. Traffic per
service is skewed (a few services carry most of it), event times move
forward over `span_s` with some jitter, and a small share of the input is
what real topics carry too: events far behind the watermark (late), events
out of order within the allowed lateness, undecodable or invalid records
(dead letters), non-finite measurements and epoch-millisecond times. In the
last `fault_s` some gateways and databases slow down, so the run has
anomalies to publish.

Every draw comes from one seeded generator, so a seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer

from foreshock.kpis import DEFAULT_REGISTRY
from foreshock.layers import Layer

__all__ = [
    "FLEET",
    "Fleet",
    "Group",
    "TrafficSpec",
    "add_options",
    "fill_topic",
    "main",
    "messages",
    "spec_of",
]

Doc = dict[str, Any]
Message = tuple[bytes, bytes]
_CHUNK = 20_000
_GAUGES = ("queue_depth", "heap_used_bytes")
_COUNTERS = ("jobs_total", "gc_pause_seconds_total")
_ROUTES = ("/cart", "/checkout", "/search", "/product/{id}", "/login", "/orders")
_LOCATIONS = ("eu-west", "us-east", "ap-south")
_LATE_US = 150_000_000
_JITTER_US = 20_000_000


@dataclass(frozen=True, slots=True)
class Group:
    """Services of one layer that send one kind of event, with its share."""

    layer: Layer
    prefix: str
    services: int
    kind: str
    share: float

    def kpis(self) -> int:
        """How many KPI series one service of this group feeds."""
        if self.kind == "metric_sample":
            return len(_GAUGES) + len(_COUNTERS)
        return sum(1 for kpi in DEFAULT_REGISTRY if self.kind in kpi.sources)


@dataclass(frozen=True, slots=True)
class Fleet:
    """The services of the simulated estate and how traffic is spread."""

    groups: tuple[Group, ...]

    def series(self) -> int:
        """KPI series the fleet feeds (a KPI fed by two kinds counts once)."""
        seen: set[tuple[str, str, str]] = set()
        for g in self.groups:
            for i in range(g.services):
                service = _service_name(g, i)
                for kpi in _kpi_names(g):
                    seen.add((g.layer.value, service, kpi))
        return len(seen)


def _kpi_names(group: Group) -> list[str]:
    if group.kind == "metric_sample":
        return [*_GAUGES, *_COUNTERS]
    return [kpi.name for kpi in DEFAULT_REGISTRY if group.kind in kpi.sources]


def _service_name(group: Group, index: int) -> str:
    return f"{group.prefix}-{index:03d}"


FLEET = Fleet(
    (
        Group(Layer.API, "gateway", 400, "http_request", 0.30),
        Group(Layer.BACKEND, "svc", 500, "http_request", 0.30),
        Group(Layer.DATABASE, "db", 200, "db_query", 0.20),
        Group(Layer.FRONTEND, "web", 60, "page_view", 0.07),
        Group(Layer.MOBILE, "app", 40, "app_launch", 0.02),
        Group(Layer.MOBILE, "app", 40, "app_crash", 0.001),
        Group(Layer.SYNTHETIC, "probe", 50, "synthetic_check", 0.004),
        Group(Layer.INFRASTRUCTURE, "node", 400, "resource_sample", 0.02),
        Group(Layer.THIRD_PARTY, "provider", 60, "third_party_call", 0.035),
        Group(Layer.BACKEND, "worker", 300, "metric_sample", 0.049),
        Group(Layer.BACKEND, "svc", 100, "heartbeat", 0.001),
    )
)


@dataclass(frozen=True, slots=True)
class TrafficSpec:
    """How many events, over how much event time, with which oddities."""

    events: int = 2_000_000
    span_s: float = 300.0
    start: datetime = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    seed: int = 7
    late_share: float = 0.0002
    jitter_share: float = 0.02
    odd_share: float = 0.00005
    fault_s: float = 60.0
    batch_events: int = 512
    batch_wait_s: float = 5.0


def messages(spec: TrafficSpec, fleet: Fleet = FLEET) -> Iterator[Message]:
    """(key, value) of every message, in the order producers send them.

    With `spec.batch_events` above 1, each service's exporter holds its
    events and sends them as one JSON array once it has that many or its
    oldest has waited `spec.batch_wait_s` (of arrival time, which runs with
    event time), as the OpenTelemetry SDKs' batch processors do (their
    defaults: 512 events, 5 s). Records a producer got wrong go alone.
    """
    draw = _Draw(spec, fleet)
    events = (
        item
        for first in range(0, spec.events, _CHUNK)
        for item in draw.chunk(first, min(_CHUNK, spec.events - first))
    )
    if spec.batch_events <= 1:
        for key, value, _ in events:
            yield key, value
        return
    yield from _batched(events, spec.batch_events, round(spec.batch_wait_s * 1e6))


def _batched(
    events: Iterator[tuple[bytes, bytes, int | None]], most: int, wait_us: int
) -> Iterator[Message]:
    # Open batches in the order they were opened, so the oldest is first.
    held: dict[bytes, tuple[int, list[bytes]]] = {}
    for key, value, arrival_us in events:
        if arrival_us is None:
            yield key, value
            continue
        while held:
            oldest = next(iter(held))
            opened, values = held[oldest]
            if arrival_us - opened < wait_us:
                break
            del held[oldest]
            yield oldest, _array(values)
        batch = held.get(key)
        if batch is None:
            held[key] = batch = (arrival_us, [])
        batch[1].append(value)
        if len(batch[1]) >= most:
            del held[key]
            yield key, _array(batch[1])
    for key, (_, values) in held.items():
        yield key, _array(values)


def _array(values: list[bytes]) -> bytes:
    return b"[" + b",".join(values) + b"]"


def fill_topic(bootstrap: str, topic: str, spec: TrafficSpec) -> int:
    """Produce `spec`'s events to `topic`, keyed by service; return the count
    of messages (several events each when producers batch).

    Raises RuntimeError if Kafka did not take every message.
    """
    failed: list[str] = []

    def on_delivery(error: object, _message: object) -> None:
        if error is not None:
            failed.append(str(error))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
        }
    )
    sent = 0
    for key, value in messages(spec):
        _produce(producer, topic, key, value, on_delivery)
        sent += 1
    unsent = producer.flush(120)
    if failed or unsent:
        raise RuntimeError(
            f"Kafka did not take every benchmark event: {len(failed)} failed "
            f"(first: {failed[:1]!r}), {unsent} unsent"
        )
    return sent


def _produce(
    producer: Producer, topic: str, key: bytes, value: bytes, on_delivery: Any
) -> None:
    while True:
        try:
            producer.produce(topic, value, key, on_delivery=on_delivery)
            return
        except BufferError:
            # The local queue is full: let deliveries make room.
            producer.poll(0.05)


class _Draw:
    """Draws events chunk by chunk: numbers with numpy, documents one by one."""

    def __init__(self, spec: TrafficSpec, fleet: Fleet) -> None:
        self.spec = spec
        self.groups = fleet.groups
        self.rng = np.random.default_rng(spec.seed)
        shares = np.array([g.share for g in fleet.groups])
        self.group_p = shares / shares.sum()
        self.cumulative = [_skewed(g.services) for g in fleet.groups]
        self.names = [
            [_service_name(g, i) for i in range(g.services)] for g in fleet.groups
        ]
        self.counters: dict[tuple[str, str], float] = {}
        self.stamps: dict[int, str] = {}
        self.start_us = int(spec.start.timestamp()) * 1_000_000
        self.fault_from_us = round((spec.span_s - spec.fault_s) * 1e6)

    def chunk(self, first: int, n: int) -> Iterator[tuple[bytes, bytes, int | None]]:
        """(key, value, arrival time) of events; None for a record sent alone."""
        rng = self.rng
        group = rng.choice(len(self.groups), n, p=self.group_p)
        service = self._services(group, rng.random(n))
        offset = self._offsets(first, n)
        odd = (rng.random(n) < self.spec.odd_share).tolist()
        duration = rng.lognormal(np.log(80.0), 0.6, n).tolist()
        u = rng.random(n).tolist()
        arrival = self._arrivals(first, n).tolist()
        for i, (g, s, t) in enumerate(
            zip(group.tolist(), service.tolist(), offset.tolist(), strict=True)
        ):
            number = first + i
            if odd[i]:
                yield (*_odd(number, self.start_us + t), None)
                continue
            key, value = self._message(
                number, self.groups[g], self.names[g][s], t, duration[i], u[i]
            )
            yield key, value, arrival[i]

    def _services(self, group: np.ndarray, pick: np.ndarray) -> np.ndarray:
        service = np.zeros(len(group), dtype=np.int64)
        for g, cumulative in enumerate(self.cumulative):
            mask = group == g
            found = np.searchsorted(cumulative, pick[mask])
            service[mask] = np.minimum(found, len(cumulative) - 1)
        return service

    def _arrivals(self, first: int, n: int) -> np.ndarray:
        """When each event reaches its exporter: evenly over the span."""
        spec = self.spec
        return (np.arange(first, first + n) * (spec.span_s * 1e6 / spec.events)).astype(
            np.int64
        )

    def _offsets(self, first: int, n: int) -> np.ndarray:
        spec, rng = self.spec, self.rng
        steady = np.arange(first, first + n) * (spec.span_s * 1e6 / spec.events)
        jitter = (rng.random(n) < spec.jitter_share) * rng.integers(0, _JITTER_US, n)
        late = (rng.random(n) < spec.late_share) * _LATE_US
        return (steady.astype(np.int64) - jitter - late).clip(0)

    def _message(
        self, number: int, group: Group, service: str, t: int, d: float, u: float
    ) -> Message:
        faulty = t >= self.fault_from_us and service.endswith("7")
        doc: Doc = {
            "schema_version": 1,
            "time": self._stamp(self.start_us + t, number),
            "layer": group.layer.value,
            "service": service,
            "payload": self._payload(group.kind, service, number, d, u, faulty),
        }
        if number % 2 == 0:
            doc["event_id"] = f"e-{number:x}"
        if number % 3 == 0:
            doc["attributes"] = {"region": _LOCATIONS[number % 3], "canary": False}
        return service.encode(), orjson.dumps(doc)

    def _stamp(self, t_us: int, number: int) -> str | int:
        # Most producers write milliseconds and "Z"; some an offset and
        # microseconds; some epoch milliseconds.
        if number % 20 == 0:
            return t_us // 1000
        seconds, micros = divmod(t_us, 1_000_000)
        base = self.stamps.get(seconds)
        if base is None:
            base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self.stamps[seconds] = base
        if number % 20 == 1:
            return f"{base}.{micros:06d}+00:00"
        return f"{base}.{micros // 1000:03d}Z"

    def _payload(
        self, kind: str, service: str, number: int, d: float, u: float, faulty: bool
    ) -> Doc:
        if kind == "http_request":
            return _http(number, d, u, faulty)
        if kind == "db_query":
            slow = 10.0 if faulty else 1.0
            return {
                "kind": kind,
                "fingerprint": f"q{number % 40}",
                "duration_ms": round(d * slow / 10.0, 3),
                "rows": number % 50,
                "error": u < 0.001,
            }
        if kind == "metric_sample":
            return self._metric(service, number, d)
        if kind == "synthetic_check":
            # Most runs of a failing probe fail: its success ratio breaches
            # the KPI's objective even before the detector has history.
            return _synthetic_check(number, d, 0.0 if faulty else u)
        return _OTHER_PAYLOADS[kind](number, d, u)

    def _metric(self, service: str, number: int, d: float) -> Doc:
        names = (*_GAUGES, *_COUNTERS)
        name = names[number % len(names)]
        if name in _GAUGES:
            return {"kind": "metric_sample", "name": name, "value": round(d, 2)}
        total = self.counters.get((service, name), 1e6) + round(d)
        self.counters[(service, name)] = total
        return {
            "kind": "metric_sample",
            "name": name,
            "type": "counter",
            "value": total,
        }


def _skewed(count: int) -> np.ndarray:
    # Zipf-like shares: the busiest services carry most of the traffic.
    weights = 1.0 / np.arange(1, count + 1) ** 0.8
    cumulative: np.ndarray = np.cumsum(weights / weights.sum())
    return cumulative


def _http(number: int, d: float, u: float, faulty: bool) -> Doc:
    errors = 0.05 if faulty else 0.002
    status = 503 if u < errors else 404 if u < errors + 0.01 else 200
    return {
        "kind": "http_request",
        "route": _ROUTES[number % len(_ROUTES)],
        "method": "POST" if number % 4 == 0 else "GET",
        "status": status,
        "duration_ms": round(d * (8.0 if faulty else 1.0), 3),
    }


def _page_view(number: int, d: float, u: float) -> Doc:
    return {
        "kind": "page_view",
        "page": _ROUTES[number % len(_ROUTES)],
        "ttfb_ms": round(d * 2, 1),
        "dom_content_loaded_ms": round(d * 9, 1),
        "load_ms": round(d * 15, 1),
        "lcp_ms": round(d * 12, 1),
        "inp_ms": round(d / 2, 1),
        "cls": round(u * 0.2, 4),
        "js_errors": 1 if u < 0.02 else 0,
        "js_execution_ms": round(d * 3, 1),
    }


def _app_launch(number: int, d: float, u: float) -> Doc:
    return {
        "kind": "app_launch",
        "app_version": f"5.{number % 4}.0",
        "cold": u < 0.3,
        "duration_ms": round(d * 10, 1),
    }


def _app_crash(number: int, d: float, u: float) -> Doc:
    return {
        "kind": "app_crash",
        "app_version": f"5.{number % 4}.0",
        "crash_type": "ANR",
    }


def _synthetic_check(number: int, d: float, u: float) -> Doc:
    return {
        "kind": "synthetic_check",
        "check": "login",
        "location": _LOCATIONS[number % 3],
        "success": u >= 0.01,
        "duration_ms": round(d * 20, 1),
    }


def _resource_sample(number: int, d: float, u: float) -> Doc:
    return {
        "kind": "resource_sample",
        "resource": f"container-{number % 8}",
        "cpu_utilisation": round(u * 0.8, 4),
        "memory_utilisation": round(0.3 + u * 0.5, 4),
        "network_rx_bytes_per_s": round(d * 1000),
        "network_tx_bytes_per_s": round(d * 700),
    }


def _third_party_call(number: int, d: float, u: float) -> Doc:
    status = 503 if u < 0.004 else 200
    return {
        "kind": "third_party_call",
        "provider": "payments",
        "operation": "charge",
        "status": status,
        "success": status < 500,
        "duration_ms": round(d * 3, 1),
    }


def _heartbeat(number: int, d: float, u: float) -> Doc:
    return {"kind": "heartbeat"}


_OTHER_PAYLOADS = {
    "page_view": _page_view,
    "app_launch": _app_launch,
    "app_crash": _app_crash,
    "synthetic_check": _synthetic_check,
    "resource_sample": _resource_sample,
    "third_party_call": _third_party_call,
    "heartbeat": _heartbeat,
}


def _odd(number: int, t_us: int) -> Message:
    """A record a decoder must not choke on: four dead letters, one usable."""
    stamp = datetime.fromtimestamp(t_us / 1e6, UTC).isoformat()
    variants = (
        b'{"time": "' + stamp.encode() + b'", "layer": "api", "serv',
        b'{"time": "' + stamp.encode() + b'", "layer": "nowhere", "service": '
        b'"gateway-000", "payload": {"kind": "heartbeat"}}',
        b'{"layer": "api", "service": "gateway-000", "payload": {"kind": "heartbeat"}}',
        b"",
        # Bare NaN, as Python's json module writes it: usable, its value rejected.
        b'{"time": "' + stamp.encode() + b'", "layer": "api", "service": '
        b'"gateway-000", "payload": {"kind": "http_request", "status": 200, '
        b'"duration_ms": NaN}}',
    )
    return b"gateway-000", variants[number % len(variants)]


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of a traffic spec: how much, over what span, how batched."""
    defaults = TrafficSpec()
    parser.add_argument(
        "--events", type=int, default=defaults.events, help="events to send"
    )
    parser.add_argument(
        "--span-s", type=float, default=defaults.span_s, help="event time covered"
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="another seed, other traffic"
    )
    parser.add_argument(
        "--batch-events",
        type=int,
        default=defaults.batch_events,
        help="most events a message holds (1: one event a message)",
    )
    parser.add_argument(
        "--batch-wait-s",
        type=float,
        default=defaults.batch_wait_s,
        help="longest a producer holds a batch, in arrival time",
    )


def spec_of(args: argparse.Namespace) -> TrafficSpec:
    """The traffic spec the options of `add_options` give."""
    return replace(
        TrafficSpec(),
        events=args.events,
        span_s=args.span_s,
        seed=args.seed,
        batch_events=args.batch_events,
        batch_wait_s=args.batch_wait_s,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: fill one topic with the events of a traffic spec."""
    parser = argparse.ArgumentParser(
        prog="python -m foreshock.benchmarks.traffic",
        description="Fill a Kafka topic with realistic native events.",
    )
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    add_options(parser)
    args = parser.parse_args(argv)

    spec = spec_of(args)
    print(fill_topic(args.bootstrap, args.topic, spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
