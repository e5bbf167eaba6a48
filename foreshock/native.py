"""The native scanner: native JSON messages straight into window tallies.

Decoding every event into Python objects costs more than all the rest of a
flow's per-event work. The scanner, a compiled extension (`native/`, Rust
with serde_json, installed as `foreshock_native` by `make install`), reads a
batch of messages itself: it checks each event against the schema, finds its
windows, and tallies each run of events of one (windows, layer, service,
kind) by the rules of `foreshock.measure`. Python sees one tally per run,
never an object per event.

It takes a message only where that gives exactly what the Python path
gives: events the model takes with the same values, none of them late or
out of bounds for clock skew, no window closed by them, and a kind with
rules (not metric samples, whose counters need the sample before). Every
other message goes the Python way (`foreshock.native_scan`, then the model),
which keeps dead letters, late events and window closing as they are, and
the scanner goes on after it. So the scanner changes how fast, never what:
a test runs the same input through both ways and compares every record.

A shard whose services fill `window.max_services` sends the scanner's
messages back whenever one of them names a service beyond the cap, since
only the Python path knows which services it admitted: correct, but about
as slow as without the scanner while a flood of new names lasts.

The scanner is told the schema by a description made here from the pydantic
models (`description`), which stay the schema of record, and the rules from
`foreshock.measure.RULES`: adding a field or a rule in Python reaches it
with nothing written in Rust. A payload field of a type the description
cannot say leaves its kind to the Python path.

Without the extension (a machine with no Rust toolchain), `scanner_for`
returns None and every message goes the Python way, with the same results.
"""

from __future__ import annotations

import json
import logging
import types
import typing
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

import annotated_types
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo

from foreshock import telemetry
from foreshock.measure import RULES
from foreshock.schema import Event
from foreshock.windows import WindowSpec, WindowStore

if TYPE_CHECKING:
    from foreshock_native import Scanner

__all__ = [
    "NativeScanner",
    "description",
    "key_routed_to",
    "route_hash",
    "scanner_for",
]

log = logging.getLogger(__name__)


def _extension() -> type[Scanner] | None:
    try:
        from foreshock_native import Scanner
    except ImportError:
        return None
    return Scanner


_CONSTRAINTS = {
    annotated_types.Ge: "ge",
    annotated_types.Le: "le",
    annotated_types.MinLen: "min_length",
    annotated_types.MaxLen: "max_length",
}


class _Unsaid(TypeError):
    """A field type the description has no word for."""


def _field(name: str, info: FieldInfo) -> dict[str, Any]:
    """The description of one model field, as the scanner reads it."""
    annotation, metadata, nullable = _unwrap(info.annotation, list(info.metadata))
    spec: dict[str, Any] = {
        "name": name,
        "nullable": nullable,
        "required": info.is_required(),
    }
    if not info.is_required():
        spec["default"] = info.get_default(call_default_factory=True)
    for item in metadata:
        key = _CONSTRAINTS.get(type(item))
        if key is None:
            raise _Unsaid(f"constraint {item!r} of {name!r}")
        spec[key] = getattr(item, key)
    return spec | _type(name, annotation)


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any], bool]:
    """The annotation without Annotated and None, its constraints, and
    whether None is allowed."""
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            inner, *infos = typing.get_args(annotation)
            metadata += [m for i in infos for m in getattr(i, "metadata", [i])]
            annotation = inner
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == len(typing.get_args(annotation)) or len(members) > 1:
                # A union of several types: the payload, or attribute values.
                return annotation, metadata, nullable
            nullable = True
            annotation = members[0]
        else:
            return annotation, metadata, nullable


def _type(name: str, annotation: Any) -> dict[str, Any]:
    if annotation is AwareDatetime:
        return {"type": "time"}
    if annotation in (str, int, float, bool):
        return {"type": annotation.__name__}
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return {"type": "enum", "values": [member.value for member in annotation]}
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return {"type": "literal", "values": list(typing.get_args(annotation))}
    if origin is dict and typing.get_args(annotation) == (
        str,
        str | int | float | bool,
    ):
        return {"type": "attributes"}
    if name == "payload" and origin in (typing.Union, types.UnionType):
        return {"type": "payload"}
    raise _Unsaid(f"type {annotation!r} of {name!r}")


def _kind(model: type[BaseModel]) -> dict[str, Any] | None:
    """A payload kind with its fields and rules; None if the scanner cannot
    take it (no rules, or a field the description cannot say)."""
    kind = model.model_fields["kind"].default
    rules = RULES.get(kind)
    if rules is None:
        return None
    try:
        fields = [
            _field(name, info)
            for name, info in model.model_fields.items()
            if name != "kind"
        ]
    except _Unsaid as unsaid:
        log.info("native scanner leaves kind=%s to Python: %s", kind, unsaid)
        return None
    return {
        "name": kind,
        "fields": fields,
        "rules": {
            "total": rules.total,
            "flags": [
                {"counter": f.counter, "tests": [list(t) for t in f.tests]}
                for f in rules.flags
            ],
            "measures": [list(m) for m in rules.measures],
            "by_version": rules.by_version,
        },
    }


@cache
def description() -> str:
    """The schema and rules the scanner follows, as JSON."""
    fields = Event.model_fields
    payloads = typing.get_args(_unwrap(fields["payload"].annotation, [])[0])
    kinds = [k for k in map(_kind, payloads) if k is not None]
    event = [_field(name, info) for name, info in fields.items()]
    return json.dumps({"event": event, "kinds": kinds})


class NativeScanner:
    """The scanner of one shard's window step, on that step's window store.

    `take` hands the scanner messages from a position on and adds what it
    took to the store; the caller sends what it handed back the Python way,
    then asks again from the next message. With `tracks_receipt`, the
    store's latest receive time follows the messages taken too.
    """

    def __init__(
        self, extension: Scanner, store: WindowStore, tracks_receipt: bool = False
    ) -> None:
        self._extension = extension
        self._store = store
        self._tracks_receipt = tracks_receipt
        # Events taken so far.
        self.taken = 0

    def take(
        self,
        values: list[bytes | None],
        timestamps: list[int | None],
        start: int,
        skew: tuple[int | None, int | None],
        max_bytes: int | None,
    ) -> tuple[int, int]:
        """Take messages from `start` into the store while the scanner can.

        Returns the index of the first message not taken and how many
        events were taken. When none were, every message from `start` up to
        and including that index is the caller's to place the Python way.
        Nothing is taken before the store has seen its first event, nor
        when a service in the messages would pass the store's cap: the
        Python path places those, and refuses them with their reason.
        """
        store = self._store
        state = store.scan_state()
        if state is None:
            return start, 0
        first, closed_any, max_us, close_at_us = state
        ahead_us, behind_us = skew
        stop, events, first, max_us, received, tallies = self._extension.scan(
            values,
            timestamps,
            start,
            first,
            closed_any,
            max_us,
            close_at_us,
            ahead_us,
            behind_us,
            max_bytes,
        )
        if stop == start or not store.add_tallies(tallies, first, max_us):
            return stop, 0
        if received is not None and self._tracks_receipt:
            store.received_us = max(store.received_us or 0, received * 1000)
        self.taken += events
        telemetry.scanned(events)
        return stop, events


def scanner_for(
    store: WindowStore, tracks_receipt: bool = False
) -> NativeScanner | None:
    """A scanner for `store`'s windows; None without the extension."""
    extension = _made(store.spec)
    if extension is None:
        return None
    return NativeScanner(extension, store, tracks_receipt)


def route_hash(key: str) -> int | None:
    """The hash Bytewax routes the state key `key` by (`flows.placement`);
    None without the extension."""
    try:
        from foreshock_native import route_hash as hashed
    except ImportError:
        return None
    return hashed(key)


def key_routed_to(name: str, residue: int, modulus: int) -> str | None:
    """A state key made from `name` that Bytewax keeps on worker
    `residue % workers` whenever `workers` divides `modulus`
    (`flows.placement`); None without the extension."""
    try:
        from foreshock_native import key_routed_to as routed
    except ImportError:
        return None
    return routed(name, residue, modulus)


@cache
def _made(spec: WindowSpec) -> Scanner | None:
    made = _extension()
    if made is None:
        log.info(
            "native scanner not installed (native/); every event is decoded in "
            "Python, with the same results, more slowly"
        )
        return None
    try:
        scanner = made(description(), spec._align_us, spec._slide_us, spec._length_us)
    except (ValueError, OverflowError) as error:
        log.warning(
            "native scanner refused the schema or windows, every event is "
            "decoded in Python: %s",
            error,
        )
        return None
    return scanner
