"""Building Foreshock events from OTLP items, and the rejections they cause."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from pydantic import ValidationError

from foreshock.decode import Rejection
from foreshock.layers import Layer
from foreshock.schema import Attribute, Event, MetricSample, _Payload

__all__ = ["Collected", "event_time"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_P = TypeVar("_P", bound=_Payload)


def event_time(unix_nano: int) -> datetime:
    """A UTC time from Unix nanoseconds, by integer arithmetic (to the µs)."""
    return _EPOCH + timedelta(microseconds=unix_nano // 1000)


@dataclass
class Collected:
    """The events and rejections of one message, as they are made."""

    events: list[Event] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    def add(
        self,
        unix_nano: int,
        layer: Layer,
        service: str,
        attributes: Mapping[str, Attribute],
        payload: _Payload,
    ) -> None:
        """Add one event, or a rejection saying why it could not be made."""
        if unix_nano <= 0:
            self.reject("missing_time", f"{service}: a point or span without a time")
            return
        try:
            event = Event(
                time=event_time(unix_nano),
                layer=layer,
                service=service,
                attributes=dict(attributes),
                payload=cast(Any, payload),
            )
        except ValidationError as error:
            self.reject("schema", _describe(error))
            return
        self.events.append(event)

    def sample(
        self,
        unix_nano: int,
        layer: Layer,
        service: str,
        attributes: Mapping[str, Attribute],
        sample: dict[str, Any],
    ) -> None:
        """Add one `metric_sample` event without validating it again.

        Metric points are most of what OTLP carries, and pydantic validation
        was most of their cost. Every field is typed by construction here (a
        protobuf double, strings, a UTC time); only the lengths the schema
        limits are checked, and anything out of them takes the validating
        path, which rejects it with the schema's own message.
        """
        name = sample["name"]
        if unix_nano <= 0 or not (0 < len(service) <= 200 and 0 < len(name) <= 200):
            payload = self.payload(MetricSample, **sample)
            if payload is not None:
                self.add(unix_nano, layer, service, attributes, payload)
            return
        event = Event.model_construct(
            time=event_time(unix_nano),
            layer=layer,
            service=service,
            attributes=dict(attributes),
            payload=MetricSample.model_construct(**sample),
        )
        self.events.append(event)

    def payload(self, kind: type[_P], **fields: object) -> _P | None:
        """A payload of `kind`, or None after rejecting fields it refuses."""
        try:
            return kind(**fields)
        except ValidationError as error:
            self.reject("schema", _describe(error))
            return None

    def reject(self, reason: str, detail: str) -> None:
        """Refuse one item of the message; the rest of it still counts."""
        self.rejections.append(Rejection(reason, detail, scope="excluded"))


def _describe(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "(event)"
    return f"{where}: {first['msg']} (got {first.get('input')!r:.60})"
