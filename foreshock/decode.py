"""From raw bytes to a validated event, or to a dead letter with its reason."""

from __future__ import annotations

import json
import logging

from pydantic import ValidationError

from connectors.messages import RawMessage
from foreshock.records import DeadLetter
from foreshock.schema import EVENT_ADAPTER, Event

__all__ = ["Tombstone", "decode"]

log = logging.getLogger(__name__)


class Tombstone:
    """A record with no value: a deletion marker, never a measurement."""


TOMBSTONE = Tombstone()


def decode(message: RawMessage) -> Event | DeadLetter | Tombstone:
    """Decode one native JSON event, or say precisely why it cannot be used."""
    value = message.value
    if value is None:
        return TOMBSTONE
    if not value.strip():
        return _dead(message, "empty_payload", "the record's value is empty")

    try:
        return EVENT_ADAPTER.validate_json(value)
    except ValidationError as error:
        return _classify(message, error)


def _classify(message: RawMessage, error: ValidationError) -> Event | DeadLetter:
    first = error.errors(include_url=False)[0]
    if first["type"] != "json_invalid":
        return _dead(message, "schema", _describe(error))

    # Python's json module writes NaN and Infinity as bare tokens, which strict
    # JSON rejects; such an event is still usable, its non-finite fields are
    # dropped one by one when it is aggregated.
    try:
        document = json.loads(message.value or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        return _dead(message, "json_decode_error", str(exc))
    try:
        return EVENT_ADAPTER.validate_python(document)
    except ValidationError as second:
        return _dead(message, "schema", _describe(second))


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "(document)"
        parts.append(f"{where}: {item['msg']} (got {item.get('input')!r:.60})")
    return "; ".join(parts)


def _dead(message: RawMessage, reason: str, detail: str) -> DeadLetter:
    log.warning(
        "dead letter reason=%s topic=%s partition=%s offset=%s",
        reason,
        message.topic,
        message.partition,
        message.offset,
    )
    return DeadLetter(
        reason=reason,
        detail=detail,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=None if message.key is None else message.key.decode(errors="replace"),
        value_b64=DeadLetter.encode(message.value),
        timestamp_ms=message.timestamp_ms,
    )
