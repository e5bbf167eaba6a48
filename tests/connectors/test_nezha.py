"""Reading a Nezha day folder: times, services, gauges, call graph, faults."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message

from connectors.kafka import consume_all
from connectors.nezha import (
    SHARD,
    InjectedFault,
    NezhaDay,
    edge_series,
    load_day,
    metric_name,
    parse_time,
    service_of_pod,
)
from foreshock.decode import decode
from foreshock.kpis import Aggregate
from foreshock.layers import Layer
from foreshock.metrics_kpis import MetricKpis
from foreshock.replay import ReplayInterrupted, replay
from foreshock.schema import Event, MetricSample
from tests.kafka_helpers import TopicFactory

DATA = Path(
    os.environ.get("FORESHOCK_DATA", Path(__file__).parents[3] / "shared" / "data")
)
DAY = DATA / "nezha" / "rca_data" / "2022-08-22"
FIRST_ROW = datetime(2022, 8, 22, 3, 51, 19, 573905, tzinfo=UTC)
# Rows are timed near :19 of each minute; whole minutes from here hold whole rows.
START = datetime(2022, 8, 22, 3, 51, tzinfo=UTC)
# Five user-facing KPIs, 19 metrics in each of the ten pod files, and the 14
# call edges' latencies timed from both ends.
PER_MINUTE = 5 + 10 * 19 + 2 * 14


@pytest.fixture(scope="module")
def day() -> NezhaDay:
    if not DAY.is_dir():
        pytest.skip(f"the Nezha data is not at {DAY}; set FORESHOCK_DATA")
    return load_day(DAY)


def test_parse_time_reads_go_time_with_nanoseconds() -> None:
    text = "2022-08-22 03:51:19.573905004 +0000 UTC m=+0.079858984"

    assert parse_time(text) == FIRST_ROW


def test_parse_time_converts_an_offset_to_utc_and_accepts_whole_seconds() -> None:
    assert parse_time("2022-08-22 05:51:19 +0200 CEST") == datetime(
        2022, 8, 22, 3, 51, 19, tzinfo=UTC
    )


def test_parse_time_refuses_another_format() -> None:
    with pytest.raises(ValueError, match="unreadable time"):
        parse_time("1661140279")


def test_service_of_pod_strips_the_replica_hashes() -> None:
    assert service_of_pod("cartservice-579f59597d-wc2lz") == "cartservice"
    assert service_of_pod("frontend-579b9bff58-t2dbm") == "frontend"
    assert service_of_pod("redis-cart") == "redis-cart"


def test_metric_names_keep_the_unit_and_the_percentile() -> None:
    assert metric_name("PodServerLatencyP95(s)") == ("pod_server_latency_p95_s", "s")
    assert metric_name("SuccessRate(%)") == ("success_rate_pct", "%")
    assert metric_name("CpuUsage(m)") == ("cpu_usage_m", "m")
    assert metric_name("NodeNetworkReceiveBytes") == (
        "node_network_receive_bytes",
        None,
    )


def test_metric_rules_judge_the_gauges_the_right_way() -> None:
    names = ["success_rate_pct", "latency_p90_s", "pod_server_latency_p99_s"]
    names += ["cpu_usage_rate_pct", "pod_workload_ops"]
    kpis = MetricKpis()
    aggregate = Aggregate()
    aggregate.values.update({f"metric:{name}": [1.0] for name in names})

    list(kpis.names(aggregate, set()))
    judged = {n: (kpis.get(n).dimension, kpis.get(n).direction) for n in names}

    assert judged == {
        "success_rate_pct": ("availability", "down"),
        "latency_p90_s": ("speed", "up"),
        "pod_server_latency_p99_s": ("speed", "up"),
        "cpu_usage_rate_pct": ("utilisation", "up"),
        "pod_workload_ops": ("throughput", "both"),
    }


def test_load_day_finds_pods_services_and_the_user_facing_service(
    day: NezhaDay,
) -> None:
    assert day.name == "2022-08-22"
    assert len(day.pods) == 10
    assert "cartservice-579f59597d-wc2lz" in day.pods
    assert day.user_service == "frontend-web"
    assert day.topology.layers["frontend-web"] is Layer.FRONTEND
    assert day.topology.layers["cartservice"] is Layer.API
    assert len(day.topology.layers) == 11


def test_topology_keeps_service_calls_and_drops_addresses_and_load(
    day: NezhaDay,
) -> None:
    calls = day.topology.calls

    # Rows of dependency.csv: the first two, and the one call that is not
    # made by the frontend or the checkout.
    assert ("checkoutservice", "emailservice") in calls
    assert ("frontend", "checkoutservice") in calls
    assert ("recommendationservice", "productcatalogservice") in calls
    assert ("frontend-web", "frontend") in calls
    assert not any("33.33" in b or "loadgenerator" in a for a, b in calls)
    # 14 service-to-service rows, and the user-facing service's one call.
    assert len(calls) == 15


def test_faults_are_read_in_utc_with_their_service(day: NezhaDay) -> None:
    types = Counter(f.fault_type for f in day.faults)

    assert len(day.faults) == 24
    assert day.faults[0] == InjectedFault(
        datetime(2022, 8, 22, 3, 53, 54, tzinfo=UTC),
        "frontend-579b9bff58-t2dbm",
        "frontend",
        "cpu_contention",
    )
    assert day.faults[-1].service == "adservice"
    assert types == {
        "cpu_contention": 8,
        "network_delay": 7,
        "cpu_consumed": 3,
        "exception": 3,
        "return": 3,
    }


def test_events_come_in_time_order_one_gauge_per_cell(day: NezhaDay) -> None:
    until = START + timedelta(minutes=10)

    events = list(day.events(until))

    # emailservice's first ten rows lack three client latencies (NaN); the
    # edge files lack three latencies at 03:54 (empty cells).
    assert len(events) == 10 * PER_MINUTE - 3 - 3
    assert [e.time for e in events] == sorted(e.time for e in events)
    assert events[0] == Event(
        time=FIRST_ROW,
        layer=Layer.FRONTEND,
        service="frontend-web",
        payload=MetricSample(name="success_rate_pct", value=100.0, unit="%"),
    )
    layers = {(e.service, e.layer, _name(e)) for e in events}
    assert ("cartservice", Layer.API, "pod_server_latency_p95_s") in layers
    assert ("cartservice", Layer.INFRASTRUCTURE, "cpu_usage_rate_pct") in layers
    assert ("frontend-web", Layer.FRONTEND, "latency_p99_s") in layers
    edge = "frontend->cartservice"
    assert (edge, Layer.API, "client_latency_p50_s") in layers
    assert (edge, Layer.API, "server_latency_p50_s") in layers


def test_empty_cells_become_no_event(day: NezhaDay) -> None:
    # At 05:20 checkoutservice lacks its three server latencies (NaN),
    # emailservice all six latencies, and the edge files seven latencies.
    start = datetime(2022, 8, 22, 5, 20, tzinfo=UTC)

    events = [e for e in day.events(start + timedelta(minutes=1)) if e.time >= start]
    checkout = {_name(e) for e in events if e.service == "checkoutservice"}

    assert len(events) == PER_MINUTE - 9 - 7
    assert "pod_client_latency_p90_s" in checkout
    assert "pod_server_latency_p90_s" not in checkout


def test_batches_carry_native_json_keyed_by_service(day: NezhaDay) -> None:
    until = START + timedelta(minutes=2)

    batches = list(day.batches(150, until))
    messages = [m for b in batches for m in b.messages]

    assert [len(b.messages) for b in batches] == [150, 150, 146]
    assert {b.shard for b in batches} == {SHARD}
    assert [decode(m) for m in messages] == list(day.events(until))
    assert messages[0].key == b"frontend-web"
    assert messages[0].timestamp_ms == 1661140279573
    assert [m.offset for m in messages] == list(range(2 * PER_MINUTE))


def test_batches_can_end_at_each_window(day: NezhaDay) -> None:
    until = START + timedelta(minutes=3)

    batches = list(day.batches(1000, until, split_every=timedelta(minutes=1)))

    assert [len(b.messages) for b in batches] == [PER_MINUTE] * 3
    assert [b.messages[0].key for b in batches] == [b"frontend-web"] * 3


# -- replaying a day ---------------------------------------------------------------


@dataclass
class _FakeClock:
    now: float = 100.0
    slept: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class _FakeProducer:
    """Keeps what was sent; a flush acknowledges all but the last `lose`."""

    lose: int = 0
    sent: list[tuple[str, bytes, bytes, int]] = field(default_factory=list)
    waiting: list[Callable[[KafkaError | None, Message], None]] = field(
        default_factory=list
    )

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        *,
        on_delivery: Callable[[KafkaError | None, Message], None],
        timestamp: int,
    ) -> None:
        self.sent.append((topic, key, value, timestamp))
        self.waiting.append(on_delivery)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        acknowledged = self.waiting[: len(self.waiting) - self.lose]
        for on_delivery in acknowledged:
            on_delivery(None, None)  # type: ignore[arg-type]
        return len(self.waiting) - len(acknowledged)


def test_replay_paces_by_event_time_divided_by_the_speedup(day: NezhaDay) -> None:
    events = list(day.events(START + timedelta(minutes=3)))
    clock, producer = _FakeClock(), _FakeProducer()

    sent = replay(
        events, "unused:9092", "t", speedup=60.0, clock=clock, producer=producer
    )

    # Three rows a minute apart: two waits of about one second at 60x.
    assert sent == len(events) == 3 * PER_MINUTE
    assert [round(s, 1) for s in clock.slept if s > 0.5] == [1.0, 1.0]
    assert producer.sent[0][:2] == ("t", b"frontend-web")
    assert producer.sent[0][3] == 1661140279573


def test_replay_as_fast_as_possible_never_waits(day: NezhaDay) -> None:
    clock = _FakeClock()

    replay(
        day.batches(100, START + timedelta(minutes=2)),
        "unused:9092",
        "t",
        speedup=0.0,
        clock=clock,
        producer=_FakeProducer(),
    )

    assert clock.slept == []


@pytest.mark.kafka
def test_replay_publishes_to_kafka_with_event_timestamps(
    day: NezhaDay, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    (topic,) = kafka_topics("replay")
    events = list(day.events(START + timedelta(minutes=1)))

    replay(events, kafka_bootstrap, topic, speedup=0.0)
    records = consume_all(kafka_bootstrap, topic)

    assert [decode(r) for r in records] == events
    assert [r.key for r in records] == [e.service.encode() for e in events]
    assert records[0].timestamp_ms == 1661140279573


def _name(event: Event) -> str:
    assert isinstance(event.payload, MetricSample)
    return event.payload.name


def test_edge_columns_split_where_both_halves_name_services() -> None:
    services = ["api", "order_db", "web_shop"]
    source = Path("source_50.csv")

    assert edge_series("web_shop_api", services, source) == "web_shop->api"
    assert edge_series("api_order_db", services, source) == "api->order_db"
    with pytest.raises(ValueError, match=r"'api_nowhere' of 'source_50\.csv'"):
        edge_series("api_nowhere", services, source)


class _CtrlCOnFirstLongWait(_FakeClock):
    def sleep(self, seconds: float) -> None:
        if seconds > 0.5:
            raise KeyboardInterrupt
        super().sleep(seconds)


def test_a_replay_stopped_by_ctrl_c_counts_what_the_broker_acknowledged(
    day: NezhaDay,
) -> None:
    events = list(day.events(START + timedelta(minutes=3)))

    with pytest.raises(ReplayInterrupted) as stopped:
        replay(
            events,
            "unused:9092",
            "t",
            speedup=60.0,
            clock=_CtrlCOnFirstLongWait(),
            producer=_FakeProducer(lose=2),
        )

    # Ctrl-C came while waiting for the second minute's first row: the first
    # minute was handed over, and the broker took all but two of its rows.
    assert (stopped.value.delivered, stopped.value.lost) == (PER_MINUTE - 2, 2)
    assert str(stopped.value) == (
        f"replay stopped after {PER_MINUTE - 2} events delivered to 't', "
        "2 more not delivered"
    )
