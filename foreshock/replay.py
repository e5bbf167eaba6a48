"""Replay recorded telemetry to Kafka, paced by its event time.

Events go out in the order given, which should be event-time order, as
native JSON keyed by service, each with its event time as the Kafka
timestamp. With a `speedup` of 60, an hour of data takes a minute; with 0
(or infinity) it goes as fast as the producer can send it. Time is read and
waited on through a `Clock`, so that pacing is tested without sleeping.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from confluent_kafka import KafkaError, Message, Producer

from connectors.kafka import CLIENT_LOG, DeliveryError
from connectors.messages import RawBatch, RawMessage
from foreshock.schema import EVENT_ADAPTER, Event

__all__ = ["Clock", "ReplayInterrupted", "SystemClock", "replay"]

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_FLUSH_TIMEOUT_S = 30.0
# After Ctrl-C, how long what was already handed to the producer may take
# to reach the broker before the replay gives up on it.
_STOP_FLUSH_TIMEOUT_S = 5.0
_FULL_QUEUE_WAIT_S = 0.1


class Clock(Protocol):
    """Where a replay reads the time and waits."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _Producer(Protocol):
    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        *,
        on_delivery: Callable[[KafkaError | None, Message], None],
        timestamp: int,
    ) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...


class ReplayInterrupted(KeyboardInterrupt):
    """Ctrl-C during a replay, raised once what was sent had its chance to
    reach the broker: says how far the replay got, so that it can be resumed
    or its topic cleaned up knowingly. Counted from the broker's
    acknowledgements, so that an event handed over just as Ctrl-C came is
    counted if it arrived."""

    def __init__(self, delivered: int, lost: int, topic: str) -> None:
        super().__init__(delivered, lost, topic)
        self.delivered = delivered
        self.lost = lost
        self.topic = topic

    def __str__(self) -> str:
        said = (
            f"replay stopped after {self.delivered} events delivered to {self.topic!r}"
        )
        return f"{said}, {self.lost} more not delivered" if self.lost else said


@dataclass(slots=True)
class _Deliveries:
    """Counts what Kafka acknowledged or refused; keeps the first failure."""

    delivered: int = 0
    failed: int = 0
    first_error: str | None = field(default=None)

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = str(error)
            log.error("replay delivery failed error=%s", error)


def replay(
    source: Iterable[RawBatch | Event],
    bootstrap: str,
    topic: str,
    speedup: float = 0.0,
    clock: Clock | None = None,
    *,
    config: dict[str, str] | None = None,
    producer: _Producer | None = None,
) -> int:
    """Publish every event of `source` to `topic`; return how many were sent.

    `source` yields native events, or batches of native JSON records such as
    a connector makes. Raises `DeliveryError` once all are sent if Kafka did
    not acknowledge every one of them.
    """
    if speedup < 0 or math.isnan(speedup):
        raise ValueError(f"speedup must be 0, positive or infinite, got {speedup!r}")
    pace = _pacer(clock or SystemClock(), speedup)
    kafka: _Producer = producer or Producer(
        {**(config or {}), "bootstrap.servers": bootstrap, "logger": CLIENT_LOG}
    )
    deliveries = _Deliveries()
    log.info("replay start topic=%s speedup=%s", topic, speedup)

    sent = 0
    try:
        for key, value, timestamp_ms in _records(source):
            pace(timestamp_ms, kafka)
            _produce(kafka, topic, key, value, timestamp_ms, deliveries)
            sent += 1
    except KeyboardInterrupt:
        unsent = kafka.flush(_STOP_FLUSH_TIMEOUT_S)
        lost = deliveries.failed + unsent
        # The command says how far the replay got; the log only notes it.
        log.info(
            "replay stopped topic=%s delivered=%s lost=%s",
            topic,
            deliveries.delivered,
            lost,
        )
        raise ReplayInterrupted(deliveries.delivered, lost, topic) from None

    unsent = kafka.flush(_FLUSH_TIMEOUT_S)
    _check(deliveries, unsent, sent, topic, bootstrap)
    log.info("replay done topic=%s events=%s", topic, sent)
    return sent


def _records(source: Iterable[RawBatch | Event]) -> Iterator[tuple[bytes, bytes, int]]:
    """(key, value, event time in ms) of each event, in the order given."""
    for item in source:
        if isinstance(item, Event):
            yield _from_event(item)
            continue
        for message in item.messages:
            yield _from_message(message)


def _from_event(event: Event) -> tuple[bytes, bytes, int]:
    value = event.model_dump_json(exclude_none=True).encode()
    return event.service.encode(), value, (event.time - _EPOCH) // _MS


def _from_message(message: RawMessage) -> tuple[bytes, bytes, int]:
    if message.value is None:
        raise ValueError(
            f"cannot replay a record without a value (offset {message.offset!r}); "
            "replay only native events"
        )
    if message.key is not None and message.timestamp_ms is not None:
        return message.key, message.value, message.timestamp_ms
    event = EVENT_ADAPTER.validate_json(message.value)
    return event.service.encode(), message.value, (event.time - _EPOCH) // _MS


def _pacer(clock: Clock, speedup: float) -> Callable[[int, _Producer], None]:
    """Waits until each event is due: its distance from the first, sped up."""
    if speedup == 0 or math.isinf(speedup):
        return lambda timestamp_ms, producer: None
    start: list[tuple[int, float]] = []

    def pace(timestamp_ms: int, producer: _Producer) -> None:
        if not start:
            start.append((timestamp_ms, clock.monotonic()))
        first_ms, began = start[0]
        due = began + (timestamp_ms - first_ms) / 1000.0 / speedup
        wait = due - clock.monotonic()
        if wait > 0:
            # Serve delivery reports before idling, so failures surface early.
            producer.poll(0)
            clock.sleep(wait)

    return pace


def _produce(
    producer: _Producer,
    topic: str,
    key: bytes,
    value: bytes,
    timestamp_ms: int,
    deliveries: _Deliveries,
) -> None:
    while True:
        try:
            producer.produce(
                topic,
                value,
                key,
                timestamp=timestamp_ms,
                on_delivery=deliveries.on_delivery,
            )
        except BufferError:
            # The local queue is full: let the producer send some first.
            producer.poll(_FULL_QUEUE_WAIT_S)
            continue
        producer.poll(0)
        return


def _check(
    deliveries: _Deliveries, unsent: int, sent: int, topic: str, bootstrap: str
) -> None:
    if deliveries.failed == 0 and unsent == 0:
        return
    message = (
        f"{deliveries.failed} of {sent} events failed and {unsent} were still "
        f"unsent to topic {topic!r} at {bootstrap!r} (first error: "
        f"{deliveries.first_error}); check that the broker is up and the topic "
        "exists, then replay again"
    )
    log.error(
        "replay incomplete topic=%s failed=%s unsent=%s",
        topic,
        deliveries.failed,
        unsent,
    )
    raise DeliveryError(message)
