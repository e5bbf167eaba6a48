"""Records as CloudEvents 1.0: attributes, both Kafka modes, schemas."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from connectors.cloudevents import from_message
from connectors.messages import OutMessage, RawMessage
from connectors.routing import encoder
from foreshock.config import OutputSettings, Settings, TopicSettings
from foreshock.records import DeadLetter, Incident, Record
from tests.connectors.samples import (
    ANOMALY,
    DEAD_LETTER,
    LATE,
    OPENED,
    RESOLVED,
    WARNING,
)

SCHEMAS = Path(__file__).parents[2] / "schemas"
Format = Literal["native", "cloudevents", "cloudevents-binary"]


def _encode(record: Record, format: Format = "cloudevents") -> OutMessage:
    output = OutputSettings(
        format=format,
        source="foreshock/test",
        schema_base="https://schemas.example/foreshock/",
    )
    return encoder(TopicSettings(), output)(record)


def _read(message: OutMessage) -> RawMessage:
    return RawMessage(
        message.topic, 0, 0, message.key, message.value, None, message.headers
    )


def _content_id(type_: str, record: Record) -> str:
    # The documented derivation, written out: BLAKE2b of type and record JSON.
    text = f"{type_}\x1f{record.model_dump_json()}".encode()
    return hashlib.blake2b(text, digest_size=10).hexdigest()


ANOMALY_DATA = {
    "schema_version": 1,
    "id": "anomaly-1",
    "layer": "database",
    "service": "orders-db",
    "kpi": "latency_p95_ms",
    "dimension": "speed",
    "direction": "up",
    "window_start": "2025-03-04T10:02:00Z",
    "window_end": "2025-03-04T10:03:00Z",
    "value": 840.0,
    "expected": 120.0,
    "score": 0.93,
    "detector": "ensemble",
    "detector_state": "ready",
}


def test_an_anomaly_is_a_structured_cloudevent_keyed_by_service() -> None:
    message = _encode(ANOMALY)

    assert (message.topic, message.key) == ("anomalies", b"orders-db")
    assert message.headers == (("content-type", b"application/cloudevents+json"),)
    assert json.loads(message.value) == {
        "specversion": "1.0",
        "id": _content_id("io.foreshock.anomaly.v1", ANOMALY),
        "source": "foreshock/test",
        "type": "io.foreshock.anomaly.v1",
        "subject": "orders-db",
        "time": "2025-03-04T10:03:00Z",
        "datacontenttype": "application/json",
        "dataschema": "https://schemas.example/foreshock/anomaly.schema.json",
        "partitionkey": "orders-db",
        "data": ANOMALY_DATA,
    }


def test_binary_mode_puts_the_attributes_in_ce_headers() -> None:
    message = _encode(ANOMALY, "cloudevents-binary")

    assert (message.topic, message.key) == ("anomalies", b"orders-db")
    assert dict(message.headers) == {
        "ce_specversion": b"1.0",
        "ce_id": _content_id("io.foreshock.anomaly.v1", ANOMALY).encode(),
        "ce_source": b"foreshock/test",
        "ce_type": b"io.foreshock.anomaly.v1",
        "ce_subject": b"orders-db",
        "ce_time": b"2025-03-04T10:03:00Z",
        "content-type": b"application/json",
        "ce_dataschema": b"https://schemas.example/foreshock/anomaly.schema.json",
        "ce_partitionkey": b"orders-db",
    }
    assert json.loads(message.value) == ANOMALY_DATA


def test_each_state_of_an_incident_is_its_own_event_under_one_key() -> None:
    opened = json.loads(_encode(OPENED).value)
    resolved = json.loads(_encode(RESOLVED).value)

    assert _encode(OPENED).key == _encode(RESOLVED).key == b"incident-1"
    assert opened["id"] == _content_id("io.foreshock.incident.v1", OPENED)
    assert resolved["id"] == _content_id("io.foreshock.incident.v1", RESOLVED)
    assert opened["id"] != resolved["id"]
    assert opened["data"]["id"] == resolved["data"]["id"] == "incident-1"
    assert (opened["type"], opened["subject"], opened["time"]) == (
        "io.foreshock.incident.v1",
        "web",
        "2025-03-04T10:07:00Z",
    )
    assert (resolved["time"], resolved["data"]["status"]) == (
        "2025-03-04T10:40:00Z",
        "resolved",
    )


def test_an_early_warning_is_timed_when_it_was_published() -> None:
    event = json.loads(_encode(WARNING).value)

    assert event["id"] == _content_id("io.foreshock.early-warning.v1", WARNING)
    assert (event["type"], event["subject"], event["time"]) == (
        "io.foreshock.early-warning.v1",
        "orders-db",
        "2025-03-04T10:03:00Z",
    )


def test_a_dead_letter_takes_the_time_of_its_kafka_record() -> None:
    message = _encode(DEAD_LETTER)
    event = json.loads(message.value)

    assert (message.topic, message.key) == ("dead-letters", b"web")
    assert (event["type"], event["subject"], event["time"]) == (
        "io.foreshock.dead-letter.v1",
        "telemetry",
        "2025-03-04T10:00:30Z",
    )
    assert event["id"] == _content_id("io.foreshock.dead-letter.v1", DEAD_LETTER)


def test_a_record_without_a_time_gets_no_wall_clock_time() -> None:
    untimed = DEAD_LETTER.model_copy(update={"timestamp_ms": None, "key": None})

    message = _encode(untimed)
    event = json.loads(message.value)

    assert "time" not in event
    assert "partitionkey" not in event
    assert message.key is None


def test_a_dead_letter_without_topic_or_usable_time_still_encodes() -> None:
    odd = DEAD_LETTER.model_copy(update={"topic": "", "timestamp_ms": 10**18})

    event = json.loads(_encode(odd).value)

    assert "subject" not in event
    assert "time" not in event
    assert DeadLetter.model_validate(event["data"]) == odd


@pytest.mark.parametrize("format", ["cloudevents", "cloudevents-binary"])
@pytest.mark.parametrize("record", [ANOMALY, WARNING, OPENED, DEAD_LETTER, LATE])
def test_the_sdk_reads_back_the_record(record: Record, format: Format) -> None:
    message = _encode(record, format)

    event = from_message(_read(message))

    assert type(record).model_validate(event.get_data()) == record
    assert event.get_extension("partitionkey") == message.key.decode()  # type: ignore[union-attr]
    assert event.get_source() == "foreshock/test"


def test_the_native_format_is_unchanged() -> None:
    message = _encode(OPENED, "native")

    assert (message.topic, message.key) == ("incidents", b"incident-1")
    assert message.headers == (("foreshock-record", b"Incident/1"),)
    assert Incident.model_validate_json(message.value) == OPENED


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        (ANOMALY, "anomaly"),
        (WARNING, "early-warning"),
        (OPENED, "incident"),
        (RESOLVED, "incident"),
        (DEAD_LETTER, "dead-letter"),
        (LATE, "late-event"),
    ],
)
def test_events_match_their_published_schema(record: Record, kind: str) -> None:
    event = json.loads(_encode(record).value)

    errors = _errors(f"cloudevent-{kind}", event)

    assert errors == []


def test_a_schema_rejects_an_event_of_another_type() -> None:
    event = json.loads(_encode(ANOMALY).value)

    errors = _errors("cloudevent-incident", event)

    assert "'io.foreshock.incident.v1' was expected" in errors


def _errors(name: str, event: dict[str, Any]) -> list[str]:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    validator = Draft202012Validator(schema)
    return [error.message for error in validator.iter_errors(event)]


def test_routing_types_cover_every_record_kind() -> None:
    records: list[Record] = [ANOMALY, WARNING, OPENED, DEAD_LETTER, LATE]

    types = {json.loads(_encode(r).value)["type"] for r in records}

    assert types == {
        "io.foreshock.anomaly.v1",
        "io.foreshock.early-warning.v1",
        "io.foreshock.incident.v1",
        "io.foreshock.dead-letter.v1",
        "io.foreshock.late-event.v1",
    }


def test_the_topics_carry_structured_cloudevents_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The suite sets native output for its own reading (tests/conftest.py);
    # a deployment that says nothing gets CloudEvents.
    monkeypatch.delenv("FORESHOCK_OUTPUT__FORMAT", raising=False)

    message = encoder(TopicSettings(), Settings().output)(OPENED)

    event = json.loads(message.value)
    assert event["specversion"] == "1.0"
    assert event["type"] == "io.foreshock.incident.v1"
    assert event["data"]["id"] == OPENED.id
    assert message.topic == "incidents"
