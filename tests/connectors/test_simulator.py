"""The simulated shop: schema, order, determinism, budget and its three stories.

KPIs are recomputed here from the JSON records with plain Python, per minute
of event time, so that the stories are checked independently of the flows.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest

from connectors.messages import RawMessage
from connectors.simulator import demo_stack
from foreshock.layers import Layer
from foreshock.schema import Event

# (layer, service, payload kind, field) -> minute index -> the field's values
Minutes = dict[tuple[str, str, str, str], dict[int, list[Any]]]
Series = Callable[[int], float]

STACK = demo_stack()

# The payload fields the tests read, by kind; the first one also counts events.
FIELDS = {
    "page_view": ("load_ms", "lcp_ms"),
    "app_launch": ("app_version",),
    "app_crash": ("app_version",),
    "synthetic_check": ("success",),
    "http_request": ("status", "duration_ms"),
    "db_query": ("fingerprint", "duration_ms"),
    "resource_sample": ("cpu_utilisation", "memory_utilisation"),
    "third_party_call": ("provider",),
    "metric_sample": ("value",),
}


@dataclass
class Scan:
    """What one pass over every record of the demo stack saw."""

    count: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    shards: set[str] = field(default_factory=set)
    misplaced: int = 0  # records out of order, misnumbered or wrongly keyed
    times: list[str] = field(default_factory=list)  # first and last
    sample: list[RawMessage] = field(default_factory=list)
    series: set[tuple[str, str]] = field(default_factory=set)
    minutes: Minutes = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )


@pytest.fixture(scope="module")
def scan() -> Scan:
    # Only compact values are kept: half a million records would be slow to
    # hold for nothing.
    out = Scan()
    batches = STACK.batches()
    while True:
        batch = next(batches, None)
        if batch is None:
            return out
        out.batch_sizes.append(len(batch.messages))
        out.shards.add(batch.shard)
        for message in batch.messages:
            _look(out, message)


def _look(out: Scan, message: RawMessage) -> None:
    record = orjson.loads(message.value or b"")
    layer, service, at = record["layer"], record["service"], record["time"]
    out.misplaced += (
        message.offset != out.count
        or message.key != service.encode()
        or message.topic != "demo"
        or message.partition != 0
        or (bool(out.times) and at < out.times[-1])
    )
    out.times = [out.times[0] if out.times else at, at]
    out.series.add((layer, service))
    if out.count % 37 == 0:
        out.sample.append(message)
    out.count += 1

    minute = (datetime.fromisoformat(at) - STACK.start) // timedelta(minutes=1)
    kind = record["payload"]["kind"]
    for name in FIELDS[kind]:
        out.minutes[layer, service, kind, name][minute].append(record["payload"][name])


def _failure(name: str) -> int:
    failure = next(f for f in STACK.failures if f.name == name)
    return (failure.start - STACK.start) // timedelta(minutes=1)


def _p(q: float, values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100.0 * len(ordered))) - 1]


def _onset(series: Series, start: int, side: int) -> int:
    """The first minute from `start` on, two in a row, beyond the last hour's range.

    The threshold lies as far beyond the baseline's extreme as that extreme
    lies from its median, in the direction `side` (+1 up, -1 down).
    """
    baseline = [side * series(m) for m in range(start - 60, start)]
    threshold = 2.0 * max(baseline) - statistics.median(baseline)
    for m in range(start, start + 30):
        if side * series(m) > threshold and side * series(m + 1) > threshold:
            return m
    raise AssertionError("the series never left its baseline")


def _mean_over(series: Series, first: int, last: int) -> float:
    return statistics.fmean(series(m) for m in range(first, last))


def _ratio(series: Series, start: int, during: int, before: int = 28) -> float:
    """The mean from `start` + 2 to `start` + `during`, over the `before` minutes."""
    return _mean_over(series, start + 2, start + during) / _mean_over(
        series, start - before, start - 1
    )


Key = tuple[str, str, str]


def _values(minutes: Minutes, key: Key, name: str) -> Callable[[int], list[Any]]:
    return lambda m: minutes[(*key, name)][m]


def _rate(minutes: Minutes, *keys: Key) -> Series:
    first = [_values(minutes, k, FIELDS[k[2]][0]) for k in keys]
    return lambda m: float(sum(len(values(m)) for values in first))


def _percentile(minutes: Minutes, key: Key, name: str, q: float) -> Series:
    values = _values(minutes, key, name)
    return lambda m: _p(q, values(m))


def _mean(minutes: Minutes, key: Key, name: str) -> Series:
    values = _values(minutes, key, name)
    return lambda m: statistics.fmean(values(m))


def _server_errors(minutes: Minutes, key: Key) -> Series:
    statuses = _values(minutes, key, "status")
    return lambda m: statistics.fmean(s >= 500 for s in statuses(m))


def _crash_rate(minutes: Minutes) -> Series:
    crashes = _rate(minutes, ("mobile", "mobile-app", "app_crash"))
    launches = _rate(minutes, ("mobile", "mobile-app", "app_launch"))
    return lambda m: crashes(m) / launches(m)


GATEWAY = ("api", "api-gateway", "http_request")
CATALOG = ("backend", "catalog", "http_request")
BACKENDS = (CATALOG, *(("backend", b, "http_request") for b in ("orders", "accounts")))
DATABASE = ("database", "shop-db", "db_query")
PAGES = ("frontend", "web", "page_view")
CHECKS = ("synthetic", "synthetics", "synthetic_check")
ORDERS_HOSTS = ("infrastructure", "orders", "resource_sample")
CATALOG_HOSTS = ("infrastructure", "catalog", "resource_sample")
FULL_SCAN = "SELECT * FROM orders WHERE lower(customer_email) = ?"


def test_generation_stays_within_the_event_budget(scan: Scan) -> None:
    # How fast it generates is the demo's benchmark (bench/README.md), not a
    # test: a loaded machine would fail it for nothing.
    assert 300_000 < scan.count <= 1_500_000
    assert set(scan.batch_sizes[:-1]) == {5000}


def test_records_are_keyed_numbered_and_in_event_time_order(scan: Scan) -> None:
    assert scan.shards == {"demo:0"}
    assert scan.misplaced == 0
    assert scan.times[0] >= "2025-03-04T06:00:00"
    assert scan.times[1] < "2025-03-04T12:00:00"


def test_records_validate_against_the_event_schema(scan: Scan) -> None:
    events = [Event.model_validate_json(m.value or b"") for m in scan.sample]

    kinds = {e.payload.kind for e in events}
    stamps = [round(e.time.timestamp() * 1000) for e in events]

    assert kinds == set(FIELDS)
    assert stamps == [m.timestamp_ms for m in scan.sample]


def test_events_are_the_records_validated() -> None:
    stack = demo_stack(hours=0.25)

    events = list(stack.events())
    values = [m.value or b"" for b in stack.batches(size=1000) for m in b.messages]

    assert events == [Event.model_validate_json(v) for v in values]
    assert [e.time for e in events] == sorted(e.time for e in events)


def test_a_seed_gives_the_same_events_and_another_seed_others() -> None:
    def values(seed: int) -> list[bytes | None]:
        stack = demo_stack(seed=seed, hours=0.5)
        return [m.value for b in stack.batches() for m in b.messages]

    first, again, other = values(3), values(3), values(4)

    assert first == again
    assert first != other


def test_a_stack_needs_positive_hours_and_batch_sizes() -> None:
    with pytest.raises(ValueError, match="hours must be positive"):
        demo_stack(hours=0.0)
    with pytest.raises(ValueError, match="batch size must be at least 1"):
        next(demo_stack(hours=0.1).batches(size=0))


def test_topology_places_every_service_and_its_calls() -> None:
    topology = STACK.topology

    layers = dict(topology.layers)

    assert layers == {
        "web": Layer.FRONTEND,
        "mobile-app": Layer.MOBILE,
        "synthetics": Layer.SYNTHETIC,
        "api-gateway": Layer.API,
        "catalog": Layer.BACKEND,
        "orders": Layer.BACKEND,
        "accounts": Layer.BACKEND,
        "shop-db": Layer.DATABASE,
        "payment-provider": Layer.THIRD_PARTY,
    }
    assert topology.callers("api-gateway") == ("mobile-app", "synthetics", "web")
    assert topology.callees("api-gateway") == ("accounts", "catalog", "orders")
    assert topology.dependencies("web") == {
        "api-gateway": 1,
        "accounts": 2,
        "catalog": 2,
        "orders": 2,
        "shop-db": 3,
        "payment-provider": 3,
    }
    assert topology.user_facing_dependents("shop-db") == [
        "mobile-app",
        "synthetics",
        "web",
    ]


def test_series_use_the_topology_services(scan: Scan) -> None:
    hosted = {s for layer, s in scan.series if layer == "infrastructure"}

    services = {s for _, s in scan.series}

    assert services == set(STACK.topology.layers)
    assert hosted == {"api-gateway", "catalog", "orders", "accounts", "shop-db"}
    assert all(
        STACK.topology.layers[s] == Layer(layer)
        for layer, s in scan.series
        if layer != "infrastructure"
    )


def test_failures_leave_a_warm_up_and_time_to_recover() -> None:
    failures = STACK.failures

    names = [f.name for f in failures]
    causes = [(f.root_cause_service, f.root_cause_layer) for f in failures]

    assert names == ["duplicate-ajax", "full-scan-query", "saturated-containers"]
    assert causes == [
        ("web", Layer.FRONTEND),
        ("shop-db", Layer.DATABASE),
        ("catalog", Layer.INFRASTRUCTURE),
    ]
    assert failures[0].start - STACK.start >= timedelta(minutes=90)
    for before, after in itertools.pairwise(failures):
        assert after.start - before.end >= timedelta(minutes=30)
    assert STACK.end - failures[-1].end >= timedelta(minutes=30)
    assert [f.name for f in demo_stack(hours=3.0).failures] == ["duplicate-ajax"]


def test_duplicate_ajax_doubles_backend_load_before_pages_slow(scan: Scan) -> None:
    start = _failure("duplicate-ajax")
    backends = _rate(scan.minutes, *BACKENDS)
    gateway = _rate(scan.minutes, GATEWAY)
    cpu = _mean(scan.minutes, ORDERS_HOSTS, "cpu_utilisation")
    load = _percentile(scan.minutes, PAGES, "load_ms", 75)
    lcp = _percentile(scan.minutes, PAGES, "lcp_ms", 75)

    deep = _onset(backends, start, +1)
    users = _onset(load, start, +1)

    assert 1.7 < _ratio(backends, start, 28) < 2.3
    assert 1.7 < _ratio(gateway, start, 28) < 2.3
    assert _ratio(cpu, start, 28) > 1.4
    assert _ratio(lcp, start + 8, 20) > 1.5
    assert deep == start
    assert 2 <= users - deep <= 10
    assert _ratio(backends, start + 40, 20, before=68) < 1.2


def test_full_scan_query_slows_database_and_api_before_the_app_crashes(
    scan: Scan,
) -> None:
    start = _failure("full-scan-query")
    fingerprints = _values(scan.minutes, DATABASE, "fingerprint")
    query_p95 = _percentile(scan.minutes, DATABASE, "duration_ms", 95)
    api_p95 = _percentile(scan.minutes, GATEWAY, "duration_ms", 95)
    crash_rate = _crash_rate(scan.minutes)
    api_errors = _server_errors(scan.minutes, GATEWAY)

    before = {f for m in range(start) for f in fingerprints(m)}
    during = {f for m in range(start, start + 30) for f in fingerprints(m)}
    deep = _onset(query_p95, start, +1)
    users = _onset(crash_rate, start, +1)

    assert during - before == {FULL_SCAN}
    assert _ratio(query_p95, start, 28) > 50
    assert _onset(api_p95, start, +1) <= deep + 2
    assert _mean_over(crash_rate, start + 8, start + 28) > 0.1
    assert _onset(api_errors, start, +1) > users
    assert deep - start <= 1
    assert 2 <= users - deep <= 10
    assert _ratio(query_p95, start + 40, 20, before=68) < 1.5


def test_saturated_containers_saturate_before_the_shop_goes_down(
    scan: Scan,
) -> None:
    start = _failure("saturated-containers")
    cpu = _mean(scan.minutes, CATALOG_HOSTS, "cpu_utilisation")
    memory = _mean(scan.minutes, CATALOG_HOSTS, "memory_utilisation")
    checks = _mean(scan.minutes, CHECKS, "success")
    api_errors = _server_errors(scan.minutes, GATEWAY)
    catalog_errors = _server_errors(scan.minutes, CATALOG)

    deep = _onset(cpu, start, +1)
    users = _onset(checks, start, -1)

    assert _mean_over(cpu, start + 5, start + 28) > 0.97
    assert memory(start + 20) > memory(start + 5) > memory(start - 1) + 0.1
    assert _mean_over(api_errors, start + 9, start + 28) > 0.7
    assert _mean_over(catalog_errors, start + 9, start + 28) > 0.4
    assert _mean_over(checks, start + 9, start + 28) < 0.3
    assert deep - start <= 1
    assert 2 <= users - deep <= 10
    assert _mean_over(checks, start + 40, start + 60) > 0.95
