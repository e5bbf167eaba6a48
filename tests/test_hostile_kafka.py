"""Hostile input through the real job and broker: dead letters stay bounded,
and no record, in or out, can stop the job."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from bytewax.testing import run_main
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from connectors.kafka import DeliveryError, KafkaSink, consume_all, produce_all
from connectors.messages import OutMessage
from connectors.routing import refusal_encoder
from foreshock.config import OutputSettings, Settings, TopicSettings
from foreshock.jobs import kafka_flow
from foreshock.records import DeadLetter
from tests.kafka_helpers import OUTPUTS, TopicFactory, delete_topics

pytestmark = pytest.mark.kafka

# What Kafka's producers and brokers accept by default, about 1 MB.
KAFKA_DEFAULT_MESSAGE_BYTES = 1_000_000
_BIG = 8_388_608


@pytest.fixture
def big_topic(kafka_bootstrap: str) -> Iterator[str]:
    """An input topic that takes records of up to 8 MiB, as a user's might."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = f"foreshock-test-big-{uuid.uuid4().hex[:12]}"
    topic = NewTopic(name, 1, 1, config={"max.message.bytes": str(_BIG)})
    admin.create_topics([topic])[name].result(timeout=30)
    yield name
    delete_topics(admin, [name])


def _request() -> bytes:
    doc = {
        "time": datetime(2025, 3, 4, 10, 0, tzinfo=UTC).isoformat(),
        "layer": "backend",
        "service": "orders",
        "payload": {"kind": "http_request", "status": 200, "duration_ms": 20.0},
    }
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("size", "reason"), [(900_000, "json_decode_error"), (6_000_000, "too_large")]
)
def test_a_big_message_gives_a_bounded_letter_and_the_job_goes_on(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    big_topic: str,
    size: int,
    reason: str,
) -> None:
    outputs = dict(zip(OUTPUTS, kafka_topics(*OUTPUTS), strict=True))
    settings = Settings(
        kafka={
            "bootstrap_servers": kafka_bootstrap,
            "input_topics": [big_topic],
            "group_id": big_topic,
        },
        topics=outputs,
    )
    big = b"x" * size
    produce_all(
        kafka_bootstrap,
        [OutMessage(big_topic, b"k", big), OutMessage(big_topic, b"k", _request())],
        config={"message.max.bytes": str(_BIG)},
    )

    run_main(kafka_flow(settings, until_end=True))  # type: ignore[arg-type]

    [message] = consume_all(kafka_bootstrap, outputs["dead_letters"])
    assert message.value is not None
    assert len(message.value) < KAFKA_DEFAULT_MESSAGE_BYTES // 2
    letter = json.loads(message.value)
    assert (letter["reason"], letter["offset"], letter["key"]) == (reason, 0, "k")
    assert letter["truncated"] is True
    assert letter["value_bytes"] == size
    assert letter["value_sha256"] == hashlib.sha256(big).hexdigest()
    assert base64.b64decode(letter["value_b64"]) == b"x" * 262_144
    # The event after it was read and counted: the job went on.
    kpis = [
        json.loads(m.value or b"")
        for m in consume_all(kafka_bootstrap, outputs["kpis"])
    ]
    assert {k["kpi"]["service"] for k in kpis} == {"orders"}


def test_a_message_of_many_bad_events_gives_a_bounded_number_of_letters(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, *names = kafka_topics("in", *OUTPUTS)
    outputs = dict(zip(OUTPUTS, names, strict=True))
    settings = Settings(
        kafka={
            "bootstrap_servers": kafka_bootstrap,
            "input_topics": [source],
            "group_id": source,
        },
        topics=outputs,
    )
    flood = b"[" + b",".join([b"{}"] * 100_000) + b"]"
    produce_all(kafka_bootstrap, [OutMessage(source, None, flood)])

    with caplog.at_level(logging.WARNING):
        run_main(kafka_flow(settings, until_end=True))  # type: ignore[arg-type]

    letters = [
        json.loads(m.value or b"")
        for m in consume_all(kafka_bootstrap, outputs["dead_letters"])
    ]
    assert [x["reason"] for x in letters] == ["schema"] * 100 + ["too_many_refused"]
    counts = re.match(
        r"(\d+) events .* first (\d+) .* other (\d+) ", letters[-1]["detail"]
    )
    assert counts is not None
    refused, lettered, others = map(int, counts.groups())
    assert (refused, lettered + others) == (100_000, 100_000)
    lines = [r for r in caplog.records if "dead letter" in r.getMessage()]
    assert len(lines) == 5


@pytest.mark.parametrize("wait_for_delivery", [False, True])
@pytest.mark.parametrize(
    ("size", "client"),
    [
        # Beyond the producer's own bound: refused before it is sent.
        (1_200_000, {}),
        # Within the producer's bound, beyond the broker's: refused on delivery.
        (1_500_000, {"message.max.bytes": "3000000"}),
    ],
    ids=["producer", "broker"],
)
def test_a_record_kafka_refuses_for_good_is_replaced_by_its_dead_letter(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    caplog: pytest.LogCaptureFixture,
    size: int,
    client: dict[str, str],
    wait_for_delivery: bool,
) -> None:
    target, dead = kafka_topics("out", "dead")
    replace = refusal_encoder(
        TopicSettings(dead_letters=dead), OutputSettings(format="native"), 1000
    )
    sink = KafkaSink(
        {"bootstrap.servers": kafka_bootstrap, **client},
        wait_for_delivery=wait_for_delivery,
        replace_refused=replace,
    )
    huge = b"z" * size
    records = [
        OutMessage(target, b"a", b"1"),
        OutMessage(target, b"incident-7", huge),
        OutMessage(target, b"b", b"2"),
    ]

    partition = sink.build("write", 0, 1)
    with caplog.at_level(logging.ERROR, logger="connectors.kafka"):
        partition.write_batch(records)
        partition.close()

    written = consume_all(kafka_bootstrap, target)
    assert sorted((m.key, m.value) for m in written) == [(b"a", b"1"), (b"b", b"2")]
    [message] = consume_all(kafka_bootstrap, dead)
    letter = DeadLetter.model_validate_json(message.value or b"")
    assert (letter.reason, letter.topic, letter.partition, letter.offset) == (
        "output_refused",
        target,
        -1,
        -1,
    )
    assert (message.key, letter.key) == (b"incident-7", "incident-7")
    assert letter.value_b64 == DeadLetter.encode(b"z" * 1000)
    assert (letter.truncated, letter.value_bytes) == (True, size)
    assert letter.value_sha256 == hashlib.sha256(huge).hexdigest()
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert target in caplog.messages[0] and f"bytes={size}" in caplog.messages[0]


def test_without_a_replacement_a_refused_record_is_a_failed_delivery(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    [target] = kafka_topics("out")
    record = OutMessage(target, b"a", b"z" * 1_200_000)

    with pytest.raises(DeliveryError, match="1 failed"):
        produce_all(kafka_bootstrap, [record])
