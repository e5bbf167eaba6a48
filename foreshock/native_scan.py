"""The fast path of native decoding: JSON bytes in, window samples out.

Validating every event through the pydantic model costs more than all the
rest of a flow's per-event work. So ordinary events are decoded by msgspec
into structs built, when this module is imported, from the pydantic models
of `foreshock.schema` (which stay the schema of record): the same field
names, required fields, defaults, types, bounds and lengths, unknown fields
refused. msgspec is stricter than pydantic's lax mode (no "200" for 200, no
200.0 for an int, no bare NaN), so whatever it accepts the model accepts
with the same values; whatever it refuses returns None here, and the caller
decodes that message through the model, so that dead letters keep their
exact reasons.

A message holds one event (a JSON object) or a batch of them (a JSON array
of such objects, as an exporter that batches sends them). A batch goes the
fast way only whole: if one of its events is refused, the whole message is
decoded through the model, which keeps the good events and refuses the bad
one alone.

Event times are read in whole microseconds. msgspec hands the time over as
text or integer and this module reads it as pydantic would, for the forms a
producer commonly writes; any other form goes the slow way. An ISO-8601
text is split into its second ("2025-03-04T10:00:00") and the rest (fraction
and offset), each parsed once and then remembered, since a stream repeats
both endlessly.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import annotated_types
import msgspec
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo

from foreshock.layers import Layer
from foreshock.schema import Event
from foreshock.windows import EPOCH, Sample

__all__ = ["scan_native"]

_SECOND = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)")
_REST = re.compile(r"(?:\.(\d{1,6}))?(?:(Z)|([+-])(\d\d):(\d\d))")
# Epoch numbers: up to 2e10 they are seconds, beyond it milliseconds (as
# pydantic reads them); only a range of plausible present-day times is taken
# here, and anything else goes the slow way.
_MAX_SECONDS = 20_000_000_000
_MAX_MILLIS = 20_000_000_000_000
_CACHE_LIMIT = 100_000
_US_PER_S = 1_000_000
_ONE_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - EPOCH
_CONSTRAINTS: dict[type, str] = {
    annotated_types.Ge: "ge",
    annotated_types.Le: "le",
    annotated_types.MinLen: "min_length",
    annotated_types.MaxLen: "max_length",
}


def _msgspec_type(annotation: Any, metadata: list[Any]) -> Any:
    """The msgspec type of a pydantic field, or an error for a new form.

    An unknown form must fail loudly here: a struct that let through what
    the model refuses would turn dead letters into KPI inputs.
    """
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        inner, *infos = typing.get_args(annotation)
        more = [m for info in infos for m in getattr(info, "metadata", [info])]
        return _msgspec_type(inner, [*metadata, *more])
    if origin in (typing.Union, types.UnionType):
        members = tuple(_msgspec_type(m, metadata) for m in typing.get_args(annotation))
        return typing.Union[members]  # noqa: UP007
    if annotation is AwareDatetime:
        # Read by `_event_micros`, as pydantic would read it.
        return str | int
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _struct(annotation)
    known = origin in (Literal, dict) or annotation in (str, int, float, bool, Layer)
    if not known and annotation is not type(None):
        raise TypeError(f"no msgspec form for the field type {annotation!r}")
    if not metadata:
        return annotation
    return Annotated[annotation, msgspec.Meta(**_constraints(metadata))]


def _constraints(metadata: list[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in metadata:
        name = _CONSTRAINTS.get(type(item))
        if name is None:
            raise TypeError(f"no msgspec form for the constraint {item!r}")
        found[name] = getattr(item, name)
    return found


def _struct(model: type[BaseModel]) -> type[msgspec.Struct]:
    """A msgspec struct with the fields, defaults and checks of `model`."""
    kind = model.model_fields.get("kind")
    fields = [
        _field(name, info)
        for name, info in model.model_fields.items()
        if name != "kind"
    ]
    # Fields without a default come first, as in any Python signature.
    fields.sort(key=lambda f: len(f))
    # The structs hold plain values and never form reference cycles, so the
    # garbage collector need not track them: tracking a batch's worth of
    # short-lived structs made collections a large share of the decode cost.
    options: dict[str, Any] = {"forbid_unknown_fields": True, "gc": False}
    if kind is not None:
        options |= {"tag_field": "kind", "tag": kind.default}
    return msgspec.defstruct(model.__name__, fields, **options)


def _field(name: str, info: FieldInfo) -> tuple[Any, ...]:
    kind = _msgspec_type(info.annotation, list(info.metadata))
    if info.is_required():
        return (name, kind)
    if info.default_factory is not None:
        factory: Callable[[], Any] = info.default_factory  # type: ignore[assignment]
        return (name, kind, msgspec.field(default_factory=factory))
    return (name, kind, info.default)


_EVENT = _struct(Event)
_DECODER = msgspec.json.Decoder(_EVENT | list[_EVENT])  # type: ignore[valid-type]
_KINDS: dict[type, str] = {
    struct: struct.__struct_config__.tag
    for struct in typing.get_args(_EVENT.__annotations__["payload"])
}


def scan_native(data: bytes) -> list[Sample] | None:
    """The window samples of an ordinary native message, or None to go slowly.

    An empty batch goes slowly too, so that it is refused with its reason.
    This runs once per event: the loop is written out, without a call per
    event.
    """
    try:
        decoded: Any = _DECODER.decode(data)
    except msgspec.DecodeError:
        return None
    events = decoded if type(decoded) is list else [decoded]
    seconds, rests, kinds = _seconds, _rests, _KINDS
    samples = []
    for event in events:
        stamp = event.time
        # The usual case in two lookups: a known second and a known rest.
        if type(stamp) is str:
            base = seconds.get(stamp[:19])
            shift = rests.get(stamp[19:])
            if base is None or shift is None:
                t_us = _text_micros(stamp)
                if t_us is None:
                    return None
            else:
                t_us = base + shift
        else:
            t_us = _number_micros(stamp)
            if t_us is None:
                return None
        payload = event.payload
        samples.append(
            (t_us, event.layer, event.service, kinds[type(payload)], payload)
        )
    return samples or None


def _number_micros(value: int) -> int | None:
    if 0 <= value <= _MAX_SECONDS:
        return value * _US_PER_S
    if _MAX_SECONDS < value < _MAX_MILLIS:
        return value * 1000
    return None


# Text times are read in two parts, each remembered: the second
# ("2025-03-04T10:00:00") and the rest (".123Z"). A stream repeats both
# endlessly, while whole times rarely repeat.
_seconds: dict[str, int | None] = {}
_rests: dict[str, int | None] = {}


def _text_micros(text: str) -> int | None:
    head, rest = text[:19], text[19:]
    base = _seconds.get(head, -1)
    if base == -1:
        base = _remember(_seconds, head, _second_micros(head))
    if base is None:
        return None
    shift = _rests.get(rest, -1)
    if shift == -1:
        shift = _remember(_rests, rest, _rest_micros(rest))
    return None if shift is None else base + shift


def _remember(cache: dict[str, int | None], key: str, value: int | None) -> int | None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def _second_micros(head: str) -> int | None:
    """Microseconds since the epoch of "YYYY-MM-DDTHH:MM:SS" read as UTC."""
    match = _SECOND.fullmatch(head)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    # Far from the calendar's ends, an offset cannot push the time out of it.
    if not 1900 <= year <= 9000:
        return None
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    return (moment - EPOCH) // _ONE_US


def _rest_micros(rest: str) -> int | None:
    """The fraction minus the UTC offset, in microseconds, of ".123+02:00"."""
    match = _REST.fullmatch(rest)
    if match is None:
        return None
    fraction, zulu, sign, hours, minutes = match.groups()
    micros = int(fraction.ljust(6, "0")) if fraction else 0
    if zulu:
        return micros
    if int(hours) > 23 or int(minutes) > 59:
        return None
    offset = (int(hours) * 3600 + int(minutes) * 60) * _US_PER_S
    return micros - offset if sign == "+" else micros + offset


_ONE_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - EPOCH
