"""Kafka fixtures: one real broker per test session, fresh topics per test.

The broker is the one named by KAFKA_BOOTSTRAP_SERVERS when that is set;
otherwise a `LocalKafka` is started the first time a test asks for it, so
sessions without Kafka tests never pay for one.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Protocol

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from foreshock.broker import BrokerError, LocalKafka
from foreshock.config import TopicSettings

__all__ = [
    "BOOTSTRAP_ENV",
    "OUTPUTS",
    "TopicFactory",
    "kafka_bootstrap",
    "kafka_topics",
    "register_kafka_marker",
]

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
# Every topic the flow writes (`[topics]` but the feedback it reads).
OUTPUTS = tuple(name for name in TopicSettings.model_fields if name != "feedback")
_TOPIC_TIMEOUT_S = 30.0


def register_kafka_marker(config: pytest.Config) -> None:
    """Declare the `kafka` marker, for tests that need the real broker."""
    config.addinivalue_line(
        "markers",
        "kafka: talks to a real Kafka broker (a local one is started once per "
        f"session unless {BOOTSTRAP_ENV} names one)",
    )


class TopicFactory(Protocol):
    """Creates one uniquely named topic per suffix and returns their names."""

    def __call__(self, *suffixes: str, partitions: int = 1) -> list[str]: ...


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """`host:port` of a running Kafka broker."""
    named = os.environ.get(BOOTSTRAP_ENV)
    if named:
        yield named
        return

    broker = LocalKafka()
    try:
        broker.start()
    except BrokerError as error:
        pytest.fail(
            f"could not start the local Kafka broker: {error}\n"
            f"Set {BOOTSTRAP_ENV} to test against a broker that is running.",
            pytrace=False,
        )
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def kafka_topics(kafka_bootstrap: str) -> Iterator[TopicFactory]:
    """Make topics for one test; they are deleted when the test ends."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    made: list[str] = []

    def make(*suffixes: str, partitions: int = 1) -> list[str]:
        names = [
            f"foreshock-test-{suffix}-{uuid.uuid4().hex[:12]}" for suffix in suffixes
        ]
        create_topics(admin, names, partitions)
        made.extend(names)
        return names

    yield make
    if made:
        delete_topics(admin, made)


def create_topics(admin: AdminClient, names: list[str], partitions: int) -> None:
    """Create topics and wait until every partition has a leader."""
    new = [NewTopic(name, partitions, replication_factor=1) for name in names]
    created = admin.create_topics(new, operation_timeout=_TOPIC_TIMEOUT_S)
    for future in created.values():
        future.result(timeout=_TOPIC_TIMEOUT_S)

    deadline = time.monotonic() + _TOPIC_TIMEOUT_S
    while not _all_led(admin, names, partitions):
        if time.monotonic() > deadline:
            pytest.fail(f"topics {names!r} got no partition leaders in time")
        time.sleep(0.1)


def delete_topics(admin: AdminClient, names: list[str]) -> None:
    """Delete topics and wait for the broker to accept the deletion."""
    deleted = admin.delete_topics(names, operation_timeout=_TOPIC_TIMEOUT_S)
    for future in deleted.values():
        future.result(timeout=_TOPIC_TIMEOUT_S)


def _all_led(admin: AdminClient, names: list[str], partitions: int) -> bool:
    topics = admin.list_topics(timeout=_TOPIC_TIMEOUT_S).topics
    for name in names:
        found = topics.get(name)
        if found is None or found.error is not None:
            return False
        leaders = [part.leader for part in found.partitions.values()]
        if len(leaders) != partitions or min(leaders) < 0:
            return False
    return True
