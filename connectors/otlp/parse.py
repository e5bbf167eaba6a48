"""From a Kafka message value to an OTLP export request, with the official types.

`otlp_proto` values are serialized `Export{Metrics,Trace}ServiceRequest`
messages. `otlp_json` values follow the OTLP/JSON encoding of the OTLP
specification, which differs from protobuf's canonical JSON mapping in one
place that matters: trace and span ids are hex strings, not base64. They are
turned into base64 before `google.protobuf.json_format.ParseDict` reads the
document; everything else (lowerCamelCase or original field names, 64-bit
integers as strings or numbers, enums as names or numbers) the official
parser accepts as it is. Unknown fields are ignored, as the specification
asks of receivers, so that newer producers keep working.

`ParseDict` is slow, so a document in the form exporters write is read by
`connectors.otlp.json_reader` instead, to the same message; any other form
still goes through `ParseDict`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any, Literal

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from connectors.otlp.json_reader import Unsupported, read_metrics, read_traces
from connectors.otlp.settings import Signal

__all__ = ["Encoding", "OtlpParseError", "detect_json_signal", "parse"]

Encoding = Literal["proto", "json"]
Request = ExportMetricsServiceRequest | ExportTraceServiceRequest

_ROOT: dict[Signal, tuple[str, str]] = {
    "metrics": ("resourceMetrics", "resource_metrics"),
    "traces": ("resourceSpans", "resource_spans"),
}
_METRIC_DATA = (
    "gauge",
    "sum",
    "histogram",
    "exponentialHistogram",
    "exponential_histogram",
)


class OtlpParseError(ValueError):
    """The message is not an OTLP request of the expected signal."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse(data: bytes, signal: Signal, encoding: Encoding) -> Request:
    """The export request in `data`; raises `OtlpParseError` with a reason."""
    request: Request = (
        ExportMetricsServiceRequest()
        if signal == "metrics"
        else ExportTraceServiceRequest()
    )
    if encoding == "proto":
        try:
            request.ParseFromString(data)
        except DecodeError as error:
            raise OtlpParseError(
                "otlp_decode_error",
                f"not a protobuf OTLP {signal} request ({error}); is the topic's "
                "format otlp_json rather than otlp_proto?",
            ) from error
        return request

    document = _json_object(data)
    _check_signal(document, signal)
    try:
        return read_metrics(document) if signal == "metrics" else read_traces(document)
    except Unsupported:
        # Not the usual form: the general parser reads what the
        # specification allows, and says why it refuses the rest.
        pass
    _hex_ids_to_base64(document, signal)
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except json_format.ParseError as error:
        raise OtlpParseError(
            "otlp_schema", f"not an OTLP/JSON request: {error}"
        ) from error
    return request


def detect_json_signal(data: bytes) -> Signal:
    """The signal of an OTLP/JSON request, from its top-level member."""
    document = _json_object(data)
    for signal, names in _ROOT.items():
        if any(name in document for name in names):
            return signal
    raise OtlpParseError(
        "otlp_schema",
        "an OTLP/JSON request has 'resourceMetrics' or 'resourceSpans'; "
        f"found {sorted(document)[:5]!r}",
    )


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise OtlpParseError("json_decode_error", str(error)) from error
    if not isinstance(document, dict):
        raise OtlpParseError(
            "otlp_schema",
            f"an OTLP/JSON request is an object, got {type(document).__name__}",
        )
    return document


def _check_signal(document: dict[str, Any], signal: Signal) -> None:
    # Ignoring unknown fields would turn a request of the other signal into
    # an empty one, losing it without a word.
    for other, names in _ROOT.items():
        if other != signal and any(name in document for name in names):
            raise OtlpParseError(
                "otlp_wrong_signal",
                f"expected an OTLP {signal} request, found {other}; check the "
                "topic's signal in the configuration",
            )


def _hex_ids_to_base64(document: dict[str, Any], signal: Signal) -> None:
    if signal == "traces":
        for span in _items(document, ("resourceSpans", "resource_spans"), 3):
            _convert(span, "traceId", "trace_id")
            _convert(span, "spanId", "span_id")
            _convert(span, "parentSpanId", "parent_span_id")
            for link in _list(span, "links", "links"):
                _convert(link, "traceId", "trace_id")
                _convert(link, "spanId", "span_id")
        return
    for metric in _items(document, ("resourceMetrics", "resource_metrics"), 3):
        for kind in _METRIC_DATA:
            data = metric.get(kind)
            if not isinstance(data, dict):
                continue
            for point in _list(data, "dataPoints", "data_points"):
                for exemplar in _list(point, "exemplars", "exemplars"):
                    _convert(exemplar, "traceId", "trace_id")
                    _convert(exemplar, "spanId", "span_id")


def _items(
    document: dict[str, Any], root: tuple[str, str], depth: int
) -> Iterator[dict[str, Any]]:
    # resource* -> scope* -> spans or metrics, each level under either name.
    levels = (root, ("scopeSpans", "scope_spans"), ("spans", "spans"))
    if root[0] == "resourceMetrics":
        levels = (root, ("scopeMetrics", "scope_metrics"), ("metrics", "metrics"))
    yield from _walk([document], levels[:depth])


def _walk(
    nodes: list[dict[str, Any]], levels: tuple[tuple[str, str], ...]
) -> Iterator[dict[str, Any]]:
    if not levels:
        yield from nodes
        return
    camel, snake = levels[0]
    for node in nodes:
        yield from _walk(_list(node, camel, snake), levels[1:])


def _list(node: dict[str, Any], camel: str, snake: str) -> list[dict[str, Any]]:
    value = node.get(camel, node.get(snake))
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _convert(node: dict[str, Any], camel: str, snake: str) -> None:
    for key in (camel, snake):
        value = node.get(key)
        if isinstance(value, str) and value:
            node[key] = _hex_to_base64(value, key)


def _hex_to_base64(value: str, key: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError as error:
        raise OtlpParseError(
            "otlp_schema",
            f"{key} must be hex as OTLP/JSON writes ids, got {value!r:.60}",
        ) from error
    return base64.b64encode(raw).decode()
