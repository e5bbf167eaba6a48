"""Which topic each kind of record goes to, with which key."""

from __future__ import annotations

from connectors.messages import OutMessage
from foreshock.config import TopicSettings as Topics
from foreshock.records import (
    Anomaly,
    DeadLetter,
    EarlyWarning,
    Incident,
    KpiScore,
    LateEvent,
    Record,
)

__all__ = ["Topics", "to_message"]


def to_message(record: Record, topics: Topics) -> OutMessage:
    """The Kafka record for `record`: JSON value, keyed so consumers can upsert.

    KPIs, anomalies, early warnings and late events are keyed by service, so a
    service's records stay in order on one partition; incidents by their id;
    dead letters by the key the bad record had.
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
            return topics.incidents, record.id
        case EarlyWarning():
            return topics.early_warnings, record.service
        case DeadLetter():
            return topics.dead_letters, record.key
        case LateEvent():
            return topics.late_events, record.service
    raise TypeError(f"no topic for a record of type {type(record).__name__!r}")
