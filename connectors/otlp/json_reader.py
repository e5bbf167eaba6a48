"""OTLP/JSON into the official protobuf types, quickly, for the usual form.

`google.protobuf.json_format.ParseDict` reads any document by reflection,
field by field, at some 20 µs a data point: far more than everything else
the decoder does with the point. Exporters (the Collector's `otlp_json`
among them) write one form of OTLP/JSON, which this module writes straight
into the messages' fields, by tables made once from their descriptors:

- field names in lowerCamelCase, as the OTLP specification writes them;
- 64-bit integers as decimal strings or numbers, doubles as numbers;
- enums as numbers or names;
- trace and span ids in hex (the specification's exception to protobuf's
  JSON mapping), which become their bytes.

Anything else (a field name in snake_case or unknown, a null, a value of
another type, a number written as a string for a double, bytes in base64,
two members of one oneof, messages nested deeper than `ParseDict` reads)
raises `Unsupported`, and the caller reads the document with `ParseDict`,
which accepts it as the specification allows or says precisely why not. So
what this module accepts, `ParseDict` reads to the same message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

__all__ = ["Unsupported", "read_metrics", "read_traces"]

# A JSON value to a field's value; for a message field, (message, object,
# depth) to nothing, filling the message.
Convert = Callable[..., Any]

# Bytes fields that OTLP/JSON writes in hex; every other bytes field is base64.
_HEX_IDS = frozenset({"trace_id", "span_id", "parent_span_id"})
_UNSIGNED = frozenset(
    {
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
    }
)
_SIGNED = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


class Unsupported(ValueError):
    """The document is not in the form this module reads; use `ParseDict`."""


def read_metrics(document: dict[str, Any]) -> ExportMetricsServiceRequest:
    """The metrics request of an OTLP/JSON document; raises `Unsupported`."""
    return _read(_METRICS, document)  # type: ignore[return-value]


def read_traces(document: dict[str, Any]) -> ExportTraceServiceRequest:
    """The trace request of an OTLP/JSON document; raises `Unsupported`."""
    return _read(_TRACES, document)  # type: ignore[return-value]


def _read(reader: _Reader, document: dict[str, Any]) -> Message:
    message = reader.make()
    try:
        reader.fill(message, document)
    except (ValueError, TypeError, OverflowError) as error:
        # A message refused a value (out of range, not UTF-8): the general
        # parser says why in its own words.
        raise Unsupported(str(error)) from error
    return message


# How a field is filled: one value, a message, or a list of either.
_SCALAR, _MESSAGE, _SCALARS, _MESSAGES = range(4)
# The nesting of messages `ParseDict` reads by default, the request itself
# counting as one; it refuses deeper documents, so this module must too.
_MAX_DEPTH = 100


class _Reader:
    """Fills one message type from a JSON object, by its JSON field names.

    Messages are filled in place, top down: building them bottom up with
    constructors would copy every level into its parent again.
    """

    def __init__(self, descriptor: Descriptor) -> None:
        self.descriptor = descriptor
        self.make = GetMessageClass(descriptor)
        self.fields: dict[str, tuple[str, int, Convert]] = {}
        # Real oneofs (not the synthetic ones of proto3 `optional`), by the
        # JSON names of their members: at most one may be given.
        self.oneofs = [
            frozenset(f.json_name for f in oneof.fields)
            for oneof in descriptor.oneofs
            if len(oneof.fields) > 1
        ]

    def fill(self, message: Any, node: Any, depth: int = 1) -> None:
        if type(node) is not dict:
            raise Unsupported(f"expected an object, got {type(node).__name__}")
        if depth > _MAX_DEPTH:
            raise Unsupported(f"messages nested more than {_MAX_DEPTH} deep")
        fields = self.fields
        for key, value in node.items():
            found = fields.get(key)
            if found is None:
                raise Unsupported(f"field {key!r}")
            name, how, convert = found
            if how == _SCALAR:
                setattr(message, name, convert(value))
            elif how == _MESSAGES:
                add = getattr(message, name).add
                for item in _items(value):
                    convert(add(), item, depth + 1)
            elif how == _MESSAGE:
                child = getattr(message, name)
                child.SetInParent()
                convert(child, value, depth + 1)
            else:
                getattr(message, name).extend([convert(v) for v in _items(value)])
        for members in self.oneofs:
            if len(members.intersection(node)) > 1:
                raise Unsupported(f"more than one of {sorted(members)}")


def _items(value: Any) -> list[Any]:
    if type(value) is not list:
        raise Unsupported("expected an array")
    return value


def _readers(root: Descriptor) -> _Reader:
    """The reader of `root`, with the readers of every message it holds."""
    readers: dict[str, _Reader] = {}
    waiting = [root]
    while waiting:
        descriptor = waiting.pop()
        if descriptor.full_name in readers:
            continue
        readers[descriptor.full_name] = _Reader(descriptor)
        waiting.extend(f.message_type for f in descriptor.fields if f.message_type)
    for reader in readers.values():
        for field in reader.descriptor.fields:
            message = field.message_type
            if message is not None:
                how = _MESSAGES if field.is_repeated else _MESSAGE
                fill = readers[message.full_name].fill
                reader.fields[field.json_name] = (field.name, how, fill)
            else:
                how = _SCALARS if field.is_repeated else _SCALAR
                reader.fields[field.json_name] = (field.name, how, _converter(field))
    return readers[root.full_name]


def _converter(field: FieldDescriptor) -> Convert:
    kind = field.type
    if kind in _UNSIGNED:
        return _unsigned
    if kind in _SIGNED:
        return _signed
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return _double
    if kind == FieldDescriptor.TYPE_STRING:
        return _string
    if kind == FieldDescriptor.TYPE_BOOL:
        return _bool
    if field.enum_type is not None:
        return _enum({v.name: v.number for v in field.enum_type.values})
    if kind == FieldDescriptor.TYPE_BYTES and field.name in _HEX_IDS:
        return _hex
    return _unsupported


def _unsigned(value: Any) -> int:
    if type(value) is int:
        return value
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    raise Unsupported(f"integer {value!r}")


def _signed(value: Any) -> int:
    if type(value) is int:
        return value
    if type(value) is str and value.isascii():
        digits = value[1:] if value.startswith("-") else value
        if digits.isdigit():
            return int(value)
    raise Unsupported(f"integer {value!r}")


def _double(value: Any) -> float:
    # JSON numbers only: the strings "NaN" and "Infinity" are left to the
    # general parser, as is any other text.
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise Unsupported(f"double {value!r}")


def _string(value: Any) -> str:
    if type(value) is str:
        return value
    raise Unsupported(f"string {value!r}")


def _bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    raise Unsupported(f"bool {value!r}")


def _enum(by_name: dict[str, int]) -> Convert:
    def read(value: Any) -> int:
        if type(value) is int:
            return value
        if type(value) is str and value in by_name:
            return by_name[value]
        raise Unsupported(f"enum {value!r}")

    return read


def _hex(value: Any) -> bytes:
    if type(value) is str:
        return bytes.fromhex(value)
    raise Unsupported(f"id {value!r}")


def _unsupported(value: Any) -> Any:
    raise Unsupported("a field read only by the general parser")


_METRICS = _readers(ExportMetricsServiceRequest.DESCRIPTOR)
_TRACES = _readers(ExportTraceServiceRequest.DESCRIPTOR)
