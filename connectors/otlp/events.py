"""What one OTLP message becomes: window samples, events on request, rejections.

A metric point is most of what OTLP carries, so it is kept in the shape the
window store takes in bulk (`foreshock.windows.Sample`) with a `MetricPoint`
as its payload, a struct with the fields of `MetricSample` that costs a
fraction of a pydantic model to make. Every field of it is typed by
construction (a protobuf double, strings, an integer time); the only limits
the schema sets that a point can break are the lengths of the service and
metric names and a time at or before the epoch. Those are checked by hand,
and an item that breaks one goes through the schema's models instead, which
reject it with their own message.

Events are made from the samples only when asked for (`Collected.events`),
for readers that want the schema's objects rather than window input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar, cast

import msgspec
from pydantic import ValidationError

from connectors.otlp.placement import Place
from foreshock.decode import Rejection
from foreshock.layers import Layer
from foreshock.schema import SCHEMA_VERSION, Attribute, Event, MetricSample, _Payload
from foreshock.windows import Sample, sample_of

__all__ = ["Collected", "MetricPoint", "event_of", "event_time"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_P = TypeVar("_P", bound=_Payload)
# The schema's bound on service and metric names (`foreshock.schema`).
_MAX_NAME = 200


class MetricPoint(msgspec.Struct, frozen=True, gc=False):
    """The fields of a `MetricSample`, read by attribute as the window store does.

    Not tracked by the garbage collector: it holds strings, a float and a
    dict of strings, never a cycle, and a message makes many of them.
    """

    kind: ClassVar[str] = "metric_sample"

    name: str
    type: str
    value: float
    unit: str | None
    labels: dict[str, str]


def event_time(unix_nano: int) -> datetime:
    """A UTC time from Unix nanoseconds, by integer arithmetic (to the µs)."""
    return _EPOCH + timedelta(microseconds=unix_nano // 1000)


def event_of(sample: Sample, attributes: Mapping[str, Attribute]) -> Event:
    """The event of a sample whose payload is a `MetricPoint`.

    Built without validating again: the sample's fields were checked when
    it was made (see the module docstring).
    """
    t_us, layer, service, kind, point = sample
    # Every field is given, defaults too: looking defaults up is most of
    # what `model_construct` costs otherwise.
    payload = MetricSample.model_construct(
        kind=kind,
        name=point.name,
        type=point.type,
        value=point.value,
        unit=point.unit,
        labels=dict(point.labels),
    )
    return Event.model_construct(
        schema_version=SCHEMA_VERSION,
        time=_EPOCH + timedelta(microseconds=t_us),
        layer=layer,
        service=service,
        event_id=None,
        attributes=dict(attributes),
        payload=payload,
    )


@dataclass
class Collected:
    """The samples and rejections of one message, as they are made.

    `attributes[i]` are the event attributes of `samples[i]`; an item that
    was validated as an event keeps that event, by position.
    """

    samples: list[Sample] = field(default_factory=list)
    attributes: list[Mapping[str, Attribute]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    _events: dict[int, Event] = field(default_factory=dict)

    def events(self) -> list[Event]:
        """Every sample as an event, in order."""
        made = self._events
        pairs = zip(self.samples, self.attributes, strict=True)
        return [
            made[i] if i in made else event_of(sample, attributes)
            for i, (sample, attributes) in enumerate(pairs)
        ]

    def metric(self, time_ns: int, place: Place, point: MetricPoint) -> None:
        """Add one metric sample, or a rejection saying why it cannot count."""
        service = place.service
        if (
            time_ns > 0
            and 0 < len(point.name) <= _MAX_NAME
            and 0 < len(service) <= _MAX_NAME
        ):
            sample = (time_ns // 1000, place.layer, service, "metric_sample", point)
            self.samples.append(sample)
            self.attributes.append(place.attributes)
            return
        payload = self.payload(
            MetricSample,
            name=point.name,
            type=point.type,
            value=point.value,
            unit=point.unit,
            labels=point.labels,
        )
        if payload is not None:
            self.add(time_ns, place.layer, service, place.attributes, payload)

    def add(
        self,
        unix_nano: int,
        layer: Layer,
        service: str,
        attributes: Mapping[str, Attribute],
        payload: _Payload,
    ) -> None:
        """Add one event, validated, or a rejection saying why it could not be made."""
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
        self._events[len(self.samples)] = event
        self.samples.append(sample_of(event))
        self.attributes.append(event.attributes)

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
