"""Foreshock's records as CloudEvents 1.0 on Kafka, with the CloudEvents SDK.

Each record becomes one event (CloudEvents 1.0 specification):

- `type` names the kind and its schema version, `io.foreshock.incident.v1`;
- `id` is a hash of the type and the record's content, so running the same
  input twice gives the same events byte for byte, a record sent again after
  a restart keeps its id (consumers may drop it as a duplicate), and every
  change of a record (an incident's open, updates, resolve) is a new event;
  consumers upsert by the record's own id, in `data`;
- `source` names the producing flow (`foreshock/<flow id>` by default);
- `subject` is the service the record is about;
- `time` is the record's event time, never the wall clock;
- `dataschema` points at the record's JSON Schema (`schemas/` in the
  repository, published wherever `schema_base` says);
- `partitionkey` (the Partitioning extension) equals the Kafka key.

Messages follow the CloudEvents Kafka protocol binding: structured mode by
default (the whole event as `application/cloudevents+json` in the value), or
binary mode (the record's JSON in the value, attributes in `ce_*` headers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel

from connectors.messages import OutMessage, RawMessage
from foreshock.records import (
    Anomaly,
    DataGap,
    DeadLetter,
    EarlyWarning,
    Incident,
    KpiScore,
    LateEvent,
    Record,
    stable_id,
)

__all__ = [
    "KINDS",
    "CloudEventOptions",
    "Mode",
    "cloudevent_schema",
    "event_type",
    "from_message",
    "to_cloudevent",
    "to_cloudevent_message",
]

Mode = Literal["structured", "binary"]

# Each record type's kind: its name in `type`, and its schema file's stem.
KINDS: dict[type[BaseModel], str] = {
    KpiScore: "kpi",
    Anomaly: "anomaly",
    EarlyWarning: "early-warning",
    DataGap: "data-gap",
    Incident: "incident",
    DeadLetter: "dead-letter",
    LateEvent: "late-event",
}

_TYPE_PREFIX = "io.foreshock"
_DATA_CONTENT_TYPE = "application/json"
_FORMAT = JSONFormat()


@dataclass(frozen=True, slots=True)
class CloudEventOptions:
    """How records are written as CloudEvents: who sends them and in which mode.

    `dataschema` is `<schema_base>/<kind>.schema.json`.
    """

    source: str
    schema_base: str
    mode: Mode = "structured"


def event_type(record_type: type[BaseModel], version: int = 1) -> str:
    """The CloudEvents `type` of a record type, as `io.foreshock.<kind>.v<n>`."""
    return f"{_TYPE_PREFIX}.{KINDS[record_type]}.v{version}"


def to_cloudevent(
    record: Record, key: str | None, options: CloudEventOptions
) -> BaseCloudEvent:
    """The CloudEvent for `record`, whose Kafka key is `key`."""
    kind = KINDS[type(record)]
    type_ = event_type(type(record), record.schema_version)
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": _event_id(record, type_),
        "source": options.source,
        "type": type_,
        "datacontenttype": _DATA_CONTENT_TYPE,
        "dataschema": f"{options.schema_base}/{kind}.schema.json",
    }
    # CloudEvents forbids an empty subject; a record without one has none.
    subject = _subject(record)
    if subject:
        attributes["subject"] = subject
    time = _event_time(record)
    if time is not None:
        attributes["time"] = time
    if key is not None:
        attributes["partitionkey"] = key
    return _Event(attributes, record.model_dump(mode="json"))


def to_cloudevent_message(
    record: Record, topic: str, key: str | None, options: CloudEventOptions
) -> OutMessage:
    """The Kafka message carrying `record` as a CloudEvent, in the chosen mode."""
    event = to_cloudevent(record, key, options)

    if options.mode == "binary":
        message = kafka.to_binary(event, _FORMAT)
    else:
        message = kafka.to_structured(event, _FORMAT)

    return OutMessage(
        topic, _as_bytes(message.key), message.value, tuple(message.headers.items())
    )


def from_message(message: RawMessage) -> BaseCloudEvent:
    """The CloudEvent in a Kafka record of either mode, as a consumer reads it."""
    wire = kafka.KafkaMessage(
        headers=_headers(message), key=message.key, value=message.value or b""
    )
    return kafka.from_kafka(wire, _FORMAT)


def cloudevent_schema(
    record_type: type[BaseModel], version: int = 1
) -> dict[str, object]:
    """A JSON Schema of a whole structured-mode event of one type.

    The record's own schema sits under `$defs`, so the `$ref`s pydantic writes
    (`#/$defs/...`) keep resolving from the top of this document.
    """
    data_schema = record_type.model_json_schema()
    defs: dict[str, object] = dict(data_schema.pop("$defs", {}))
    defs[record_type.__name__] = data_schema
    string = {"type": "string", "minLength": 1}
    return {
        "title": f"CloudEvent {event_type(record_type, version)}",
        "type": "object",
        "properties": {
            "specversion": {"const": "1.0"},
            "id": string,
            "source": {**string, "format": "uri-reference"},
            "type": {"const": event_type(record_type, version)},
            "subject": string,
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": _DATA_CONTENT_TYPE},
            "dataschema": {**string, "format": "uri"},
            "partitionkey": string,
            "data": {"$ref": f"#/$defs/{record_type.__name__}"},
        },
        "required": ["specversion", "id", "source", "type", "data"],
        "$defs": defs,
    }


class _Event(CloudEvent):
    """A CloudEvent 1.0 that leaves `time` out when the record has none.

    The SDK stamps the wall clock on an event created without `time`; that
    would make two runs over the same input differ, and would claim a time
    the record never had.
    """

    def __init__(
        self, attributes: dict[str, Any], data: dict[str, Any] | None = None
    ) -> None:
        timeless = "time" not in attributes
        super().__init__(attributes, data)
        if timeless:
            del self._attributes["time"]


def _event_id(record: Record, type_: str) -> str:
    # The record's own id cannot serve: an incident is published under one id
    # when it opens, changes and resolves, and `source` + `id` must differ
    # between distinct events. A hash of the content differs whenever the
    # record does, and stays the same when an unchanged record is sent again.
    return stable_id(type_, record.model_dump_json())


def _subject(record: Record) -> str:
    match record:
        case KpiScore():
            return record.kpi.service
        case Incident():
            return _incident_subject(record)
        case DeadLetter():
            return record.topic
    return record.service


def _incident_subject(incident: Incident) -> str:
    # The user-facing service that opened it; for a record made before that
    # was kept, the service whose users feel it, else the probable root
    # cause, the id as a last resort.
    if incident.service:
        return incident.service
    if incident.user_facing:
        return incident.user_facing[0].service
    if incident.root_causes:
        return incident.root_causes[0].service
    return incident.id


def _event_time(record: Record) -> datetime | None:
    # A window's occurrence is complete, and first observable, at its end.
    match record:
        case KpiScore():
            return record.kpi.window_end
        case Anomaly():
            return record.window_end
        case EarlyWarning() | DataGap():
            return record.published_at
        case Incident():
            return record.updated_at
        case LateEvent():
            return record.event_time
        case DeadLetter():
            return _from_ms(record.timestamp_ms)
    return None


def _from_ms(timestamp_ms: int | None) -> datetime | None:
    # A producer may set any timestamp; one no datetime can hold is no time.
    if timestamp_ms is None:
        return None
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _as_bytes(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


def _headers(message: RawMessage) -> dict[str, bytes]:
    # A header repeated on the wire keeps its last value, as the binding reads.
    return dict(message.headers)
