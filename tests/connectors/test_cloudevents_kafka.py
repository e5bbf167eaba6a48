"""CloudEvents through the Kafka sink, read back with the SDK's Kafka binding."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow, Stream
from bytewax.testing import TestingSource, run_main
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka
from cloudevents.core.formats.json import JSONFormat
from confluent_kafka import Consumer

from connectors.kafka import KafkaSink, consume_all
from connectors.messages import RawMessage
from connectors.routing import encoder
from foreshock.config import OutputSettings, TopicSettings
from foreshock.records import Anomaly, EarlyWarning, Incident, Record
from tests.connectors.samples import ANOMALY, OPENED, RESOLVED, WARNING
from tests.kafka_helpers import TopicFactory

pytestmark = pytest.mark.kafka

_RECORDS: list[Record] = [ANOMALY, WARNING, OPENED, RESOLVED]


def _write(bootstrap: str, topics: TopicSettings, format: str) -> None:
    output = OutputSettings(format=format, source="foreshock/kafka-test")  # type: ignore[arg-type]
    flow = Dataflow("cloudevents_out")
    records: Stream[Record] = op.input("records", flow, TestingSource(_RECORDS))
    messages = op.map("encode", records, encoder(topics, output))
    op.output("write", messages, KafkaSink({"bootstrap.servers": bootstrap}))
    run_main(flow)  # type: ignore[no-untyped-call]


def _parse(message: RawMessage, format: str) -> BaseCloudEvent:
    # What a consumer does with the SDK alone: the binding of the chosen mode.
    wire = kafka.KafkaMessage(
        headers=dict(message.headers), key=message.key, value=message.value or b""
    )
    if format == "cloudevents-binary":
        return kafka.from_binary(wire, JSONFormat())
    return kafka.from_structured(wire, JSONFormat())


@pytest.mark.parametrize("format", ["cloudevents", "cloudevents-binary"])
def test_the_sink_writes_cloudevents_a_consumer_parses_back(
    kafka_bootstrap: str, kafka_topics: TopicFactory, format: str
) -> None:
    anomalies, warnings, incidents = kafka_topics(
        "anomalies", "early-warnings", "incidents"
    )
    topics = TopicSettings(
        anomalies=anomalies, early_warnings=warnings, incidents=incidents
    )

    _write(kafka_bootstrap, topics, format)
    read = {
        name: [_parse(m, format) for m in consume_all(kafka_bootstrap, name)]
        for name in (anomalies, warnings, incidents)
    }

    [anomaly] = read[anomalies]
    assert (anomaly.get_type(), anomaly.get_subject()) == (
        "io.foreshock.anomaly.v1",
        "orders-db",
    )
    assert anomaly.get_time() == datetime(2025, 3, 4, 10, 3, tzinfo=UTC)
    assert anomaly.get_source() == "foreshock/kafka-test"
    assert anomaly.get_extension("partitionkey") == "orders-db"
    assert Anomaly.model_validate(anomaly.get_data()) == ANOMALY
    [warning] = read[warnings]
    assert warning.get_type() == "io.foreshock.early-warning.v1"
    assert EarlyWarning.model_validate(warning.get_data()) == WARNING
    opened, resolved = read[incidents]
    assert [e.get_extension("partitionkey") for e in (opened, resolved)] == [
        "incident-1",
        "incident-1",
    ]
    assert [e.get_time() for e in (opened, resolved)] == [
        datetime(2025, 3, 4, 10, 7, tzinfo=UTC),
        datetime(2025, 3, 4, 10, 40, tzinfo=UTC),
    ]
    assert Incident.model_validate(opened.get_data()) == OPENED
    assert Incident.model_validate(resolved.get_data()) == RESOLVED


def test_the_readme_consumer_reads_incidents_in_either_mode(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    anomalies, warnings, incidents = kafka_topics(
        "anomalies", "early-warnings", "incidents"
    )
    topics = TopicSettings(
        anomalies=anomalies, early_warnings=warnings, incidents=incidents
    )
    _write(kafka_bootstrap, topics, "cloudevents")
    _write(kafka_bootstrap, topics, "cloudevents-binary")

    seen = _consume_like_the_readme(kafka_bootstrap, incidents, count=4)

    # Open then resolved, once per mode, in the order they were written.
    assert (
        seen
        == [
            ("io.foreshock.incident.v1", "web", "incident-1", "open"),
            ("io.foreshock.incident.v1", "web", "incident-1", "resolved"),
        ]
        * 2
    )


def _consume_like_the_readme(
    bootstrap: str, topic: str, count: int
) -> list[tuple[str, str | None, str, str]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bot-{topic}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    seen: list[tuple[str, str | None, str, str]] = []
    deadline = time.monotonic() + 30
    try:
        while len(seen) < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            # confluent-kafka types header values as optional; ours never are.
            headers: dict[str, bytes] = dict(msg.headers() or [])  # type: ignore[arg-type]
            wire = kafka.KafkaMessage(headers, msg.key(), msg.value() or b"")
            event = kafka.from_kafka_event(wire)
            data = event.get_data()
            assert isinstance(data, dict)
            seen.append(
                (event.get_type(), event.get_subject(), data["id"], data["status"])
            )
    finally:
        consumer.close()
    return seen
