"""Consumer lag of the Kafka source, as Foreshock's metrics report it."""

import pytest
from prometheus_client import REGISTRY

from connectors.kafka import KafkaSource, produce_all
from connectors.messages import OutMessage, RawBatch
from tests.kafka_helpers import TopicFactory

pytestmark = pytest.mark.kafka


def _lag(topic: str) -> float | None:
    return REGISTRY.get_sample_value(
        "foreshock_consumer_lag", {"topic": topic, "partition": "0"}
    )


def test_each_batch_reports_how_far_the_partition_is_behind(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    [topic] = kafka_topics("lag")
    produce_all(kafka_bootstrap, [OutMessage(topic, None, b"{}")] * 10)
    source = KafkaSource(
        [topic],
        {"bootstrap.servers": kafka_bootstrap},
        starting_offset="earliest",
        batch_size=3,
        stop_at_end=True,
    )
    partition = source.build_part("read", f"{topic}:0", None)
    seen: list[tuple[int, float | None]] = []

    try:
        while True:
            batches: list[RawBatch] = partition.next_batch()
            for batch in batches:
                last = batch.messages[-1].offset
                seen.append((last, _lag(topic)))
    except StopIteration:
        pass
    finally:
        partition.close()

    assert _lag(topic) == 0
    # After the record at offset n, 10 - (n + 1) records are left to read.
    assert seen == [(n, float(10 - (n + 1))) for n, _ in seen]
    # Ten records three at a time: at least four batches, the last ending at 9.
    assert len(seen) >= 4 and seen[-1][0] == 9
