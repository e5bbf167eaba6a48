"""Which topic each kind of record goes to, with which key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from connectors.cloudevents import CloudEventOptions, Mode, to_cloudevent_message
from connectors.messages import OutMessage
from foreshock.config import OutputSettings
from foreshock.config import TopicSettings as Topics
from foreshock.records import (
    Anomaly,
    DataGap,
    DeadLetter,
    EarlyWarning,
    Incident,
    KpiScore,
    LateEvent,
    Record,
)

__all__ = ["Topics", "encoder", "refusal_encoder", "to_message"]


def encoder(topics: Topics, output: OutputSettings) -> Callable[[Record], OutMessage]:
    """What turns each record into its Kafka message, in the configured format."""
    if output.format == "native":
        return _Native(topics)
    mode: Mode = "binary" if output.format == "cloudevents-binary" else "structured"
    options = CloudEventOptions(output.source, output.schema_base.rstrip("/"), mode)
    return _CloudEvents(topics, options)


@dataclass(frozen=True, slots=True)
class _Native:
    topics: Topics

    def __call__(self, record: Record) -> OutMessage:
        return to_message(record, self.topics)


@dataclass(frozen=True, slots=True)
class _CloudEvents:
    topics: Topics
    options: CloudEventOptions

    def __call__(self, record: Record) -> OutMessage:
        topic, key = _route(record, self.topics)
        return to_cloudevent_message(record, topic, key, self.options)


def refusal_encoder(
    topics: Topics, output: OutputSettings, max_value_bytes: int | None
) -> Callable[[OutMessage, str], OutMessage]:
    """What takes the place of an output message Kafka refused for good.

    Its dead letter, in the configured format: the topic the message was
    for (partition and offset -1, as it was never written), Kafka's answer,
    and the first `max_value_bytes` of the message with the whole one's size
    and SHA-256.
    """
    return _Refusals(encoder(topics, output), max_value_bytes)


@dataclass(frozen=True, slots=True)
class _Refusals:
    encode: Callable[[Record], OutMessage]
    max_value_bytes: int | None

    def __call__(self, message: OutMessage, error: str) -> OutMessage:
        detail = (
            f"Kafka refused this output record of {len(message.value)} bytes "
            f"for topic {message.topic!r}: {error}; if such records are "
            "expected, raise message.max.bytes in kafka.client and the "
            "topic's max.message.bytes"
        )
        letter = DeadLetter.of(
            reason="output_refused",
            detail=detail,
            topic=message.topic,
            partition=-1,
            offset=-1,
            key=message.key,
            value=message.value,
            max_value_bytes=self.max_value_bytes,
        )
        return self.encode(letter)


def to_message(record: Record, topics: Topics) -> OutMessage:
    """The Kafka record for `record`: JSON value, keyed so consumers can upsert.

    KPIs, anomalies, early warnings, data gaps and late events are keyed by
    service, so a service's records stay in order on one partition; incidents
    by the user-facing service that opened them; dead letters by the key the
    bad record had.
    """
    topic, key = _route(record, topics)
    kind = type(record).__name__
    headers = (("foreshock-record", f"{kind}/{record.schema_version}".encode()),)
    value = record.model_dump_json().encode()
    return OutMessage(topic, None if key is None else key.encode(), value, headers)


def _route(record: Record, topics: Topics) -> tuple[str, str | None]:
    match record:
        case KpiScore():
            return topics.kpis, record.kpi.service
        case Anomaly():
            return topics.anomalies, record.service
        case Incident():
            return topics.incidents, record.service or record.id
        case EarlyWarning():
            return topics.early_warnings, record.service
        case DataGap():
            return topics.data_quality, record.service
        case DeadLetter():
            return topics.dead_letters, record.key
        case LateEvent():
            return topics.late_events, record.service
    raise TypeError(f"no topic for a record of type {type(record).__name__!r}")
