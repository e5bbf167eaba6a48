"""The Kafka source, sink and local broker, end to end on a real broker."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import replace
from functools import partial
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.errors import BytewaxRuntimeError
from bytewax.inputs import StatefulSourcePartition
from bytewax.testing import TestingSink, cluster_main, run_main
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.kafka import (
    DeliveryError,
    KafkaSink,
    KafkaSource,
    MissingTopicError,
    consume_all,
    ensure_topics,
    produce_all,
)
from connectors.messages import OutMessage, RawBatch, RawMessage
from foreshock.broker import BrokerError, LocalKafka, fetch
from tests.kafka_helpers import TopicFactory

pytestmark = pytest.mark.kafka

_SERVICES = [f"service-{number}".encode() for number in range(7)]
_READ_TIMEOUT_S = 30.0


def _samples(topic: str, count: int) -> list[OutMessage]:
    return [
        OutMessage(topic, _SERVICES[number % len(_SERVICES)], f"{number}".encode())
        for number in range(count)
    ]


def _forward(topic: str, batch: RawBatch) -> list[OutMessage]:
    return [
        OutMessage(topic, record.key, record.value, record.headers)
        for record in batch.messages
        if record.value is not None
    ]


def _copy_flow(bootstrap: str, source: str, target: str) -> Dataflow:
    config = {"bootstrap.servers": bootstrap}
    reader = KafkaSource(
        [source], config, starting_offset="earliest", batch_size=50, stop_at_end=True
    )
    flow = Dataflow("kafka_copy")
    batches = op.input("read", flow, reader)
    # RawBatch, one per source partition and poll
    records = op.flat_map("forward", batches, partial(_forward, target))
    # OutMessage
    op.output("write", records, KafkaSink(config))
    return flow


def _run(flow: Dataflow, workers: int) -> None:
    if workers == 1:
        run_main(flow)  # type: ignore[no-untyped-call]
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]


def _partitions_by_key(records: list[RawMessage]) -> dict[bytes | None, set[int]]:
    found: dict[bytes | None, set[int]] = defaultdict(set)
    for record in records:
        found[record.key].add(record.partition)
    return dict(found)


def _read_at_least(
    partition: StatefulSourcePartition[RawBatch, int], count: int
) -> list[RawMessage]:
    records: list[RawMessage] = []
    deadline = time.monotonic() + _READ_TIMEOUT_S
    while len(records) < count and time.monotonic() < deadline:
        for batch in partition.next_batch():
            records.extend(batch.messages)
    return records


def _read_to_end(partition: StatefulSourcePartition[RawBatch, int]) -> list[RawMessage]:
    records: list[RawMessage] = []
    deadline = time.monotonic() + _READ_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            batches = partition.next_batch()
        except StopIteration:
            return records
        for batch in batches:
            records.extend(batch.messages)
    pytest.fail(f"the partition did not end within {_READ_TIMEOUT_S} s")


def _committed_offset(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [found] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        consumer.close()
    return found.offset


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


@pytest.mark.parametrize("workers", [1, 2])
def test_copy_flow_delivers_every_record_once_on_its_key_partition(
    kafka_bootstrap: str, kafka_topics: TopicFactory, workers: int
) -> None:
    source, target = kafka_topics("copy-source", "copy-target", partitions=3)
    sent = _samples(source, 300)
    produce_all(kafka_bootstrap, sent)

    _run(_copy_flow(kafka_bootstrap, source, target), workers)

    copied = consume_all(kafka_bootstrap, target)
    original = consume_all(kafka_bootstrap, source)
    assert sorted((record.key, record.value) for record in copied) == sorted(
        (message.key, message.value) for message in sent
    )
    by_key = _partitions_by_key(copied)
    assert by_key == _partitions_by_key(original)
    assert all(len(partitions) == 1 for partitions in by_key.values())
    assert len(set().union(*by_key.values())) > 1


def test_tombstone_reads_as_a_record_without_value(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    [topic] = kafka_topics("tombstone")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, value=None, key=b"service-1")
    assert producer.flush(10) == 0

    [record] = consume_all(kafka_bootstrap, topic)

    assert record.timestamp_ms is not None
    assert replace(record, timestamp_ms=None) == RawMessage(
        topic=topic, partition=0, offset=0, key=b"service-1", value=None
    )


def test_headers_travel_with_the_record(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    [topic] = kafka_topics("headers")
    headers = (("layer", b"backend"), ("schema", b"v1"))
    produce_all(kafka_bootstrap, [OutMessage(topic, b"service-1", b"7", headers)])

    [record] = consume_all(kafka_bootstrap, topic)

    assert (record.key, record.value, record.headers) == (b"service-1", b"7", headers)


def test_missing_topic_fails_the_flow_at_start_naming_the_topic(
    kafka_bootstrap: str,
) -> None:
    missing = f"foreshock-test-missing-{uuid.uuid4().hex[:12]}"
    source = KafkaSource([missing], {"bootstrap.servers": kafka_bootstrap})
    flow = Dataflow("missing_topic")
    op.output("write", op.input("read", flow, source), TestingSink([]))

    with pytest.raises(BytewaxRuntimeError) as raised:
        run_main(flow)  # type: ignore[no-untyped-call]

    [cause] = [c for c in _causes(raised.value) if isinstance(c, MissingTopicError)]
    assert repr(missing) in str(cause)


def test_resume_from_snapshot_skips_what_was_read(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    [topic] = kafka_topics("resume")
    sent = _samples(topic, 10)
    produce_all(kafka_bootstrap, sent)
    config = {"bootstrap.servers": kafka_bootstrap}
    source = KafkaSource(
        [topic], config, starting_offset="earliest", batch_size=4, stop_at_end=True
    )

    first = source.build_part("read", f"{topic}:0", None)
    head = _read_at_least(first, 1)
    resume_at = first.snapshot()
    first.close()
    resumed = source.build_part("read", f"{topic}:0", resume_at)
    tail = _read_to_end(resumed)
    resumed.close()

    assert 0 < resume_at == len(head) < len(sent)
    assert [record.offset for record in tail] == list(range(resume_at, len(sent)))
    assert [record.value for record in head + tail] == [m.value for m in sent]


def test_group_offset_is_committed_on_snapshot_and_used_to_start(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    [topic] = kafka_topics("group")
    produce_all(kafka_bootstrap, _samples(topic, 6))
    group = f"foreshock-test-{uuid.uuid4().hex[:12]}"
    config = {"bootstrap.servers": kafka_bootstrap, "group.id": group}
    source = KafkaSource(
        [topic], config, starting_offset="earliest", batch_size=2, stop_at_end=True
    )

    first = source.build_part("read", f"{topic}:0", None)
    head = _read_at_least(first, 1)
    committed = first.snapshot()
    first.close()
    deadline = time.monotonic() + _READ_TIMEOUT_S
    while _committed_offset(kafka_bootstrap, group, topic) != committed:
        assert time.monotonic() < deadline, "the snapshot offset was never committed"
        time.sleep(0.2)
    second = source.build_part("read", f"{topic}:0", None)
    tail = _read_to_end(second)
    second.close()

    assert committed == len(head)
    assert [record.offset for record in tail] == list(range(committed, 6))


def test_sink_raises_when_a_delivery_fails(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    missing = f"foreshock-test-missing-{uuid.uuid4().hex[:12]}"
    message = OutMessage(missing, b"service-3", b"1")

    with caplog.at_level(logging.ERROR), pytest.raises(DeliveryError, match="1 failed"):
        produce_all(kafka_bootstrap, [message], config={"message.timeout.ms": "1500"})

    assert any(
        missing in line and "b'service-3'" in line for line in caplog.messages
    ), caplog.messages


def test_local_kafka_answers_while_started_and_cleans_up_on_stop() -> None:
    broker = LocalKafka()

    with broker:
        bootstrap = broker.bootstrap_servers
        log_path = broker.log_path
        admin = AdminClient({"bootstrap.servers": bootstrap})
        brokers = admin.list_topics(timeout=10).brokers
        was_running = broker.running
    host, _, port = bootstrap.rpartition(":")

    assert list(brokers) == [1]
    assert was_running
    assert not broker.running
    assert log_path is not None
    assert not log_path.parent.exists()
    with pytest.raises(BrokerError, match="not started"):
        _ = broker.bootstrap_servers
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()


def test_fetch_with_a_complete_cache_runs_no_maven(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    libs = fetch()
    monkeypatch.setenv("PATH", str(tmp_path))

    assert fetch() == libs
    assert sorted(libs.glob("kafka_2.13-*.jar"))


def test_missing_topics_are_created_or_named(kafka_bootstrap: str) -> None:
    client = {"bootstrap.servers": kafka_bootstrap}
    suffix = uuid.uuid4().hex[:8]
    wanted = [f"made-{suffix}-a", f"made-{suffix}-b"]

    with pytest.raises(MissingTopicError, match=f"made-{suffix}-a, made-{suffix}-b"):
        ensure_topics(client, wanted, create=False)
    created = ensure_topics(client, wanted, create=True)
    again = ensure_topics(client, wanted, create=False)

    assert created == wanted
    assert again == []
