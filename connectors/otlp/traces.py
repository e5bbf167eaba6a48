"""OTLP spans as request events, and the call graph between services.

- A server span is an `http_request` at its service: status from
  `http.response.status_code` (older: `http.status_code`); a server span
  without one (gRPC, messaging) counts as 500 when its status is Error and
  200 otherwise, since every request needs a status to count in the error
  rate.
- A client span with `db.system.name` (older: `db.system`) is a `db_query`
  at the database (`peer.service`, `server.address`, `db.namespace`, else
  the system), at the database layer.
- A client span to a target that is not ours (see `connectors.otlp.targets`)
  is a `third_party_call` at the provider, at the third_party layer.
- A client span to one of our services is, with `edge_kpis`, an
  `http_request` of the call edge: service "caller->callee", at the caller's
  layer, so rate, errors and latency are watched per edge as the caller sees
  them.

Durations are end minus start; the event time is the span's end, when its
outcome was known (as for metrics, which record at completion). A span whose
end precedes its start keeps a negative duration, which the window counts as
a rejected measurement. Each event carries the hex trace id.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from connectors.otlp.callgraph import CallGraph, SpanIndex
from connectors.otlp.events import Collected
from connectors.otlp.placement import Place, Placer, attributes_of
from connectors.otlp.settings import OtlpSettings
from connectors.otlp.targets import Target, Targets
from foreshock.layers import Layer
from foreshock.schema import Attribute, DbQuery, HttpRequest, ThirdPartyCall

__all__ = ["TraceDecoder"]

_SERVER = Span.SpanKind.SPAN_KIND_SERVER
_CLIENT = Span.SpanKind.SPAN_KIND_CLIENT
_ERROR = Status.StatusCode.STATUS_CODE_ERROR


class TraceDecoder:
    """Turns export requests into request events and call-graph edges."""

    def __init__(
        self,
        settings: OtlpSettings,
        placer: Placer,
        targets: Targets,
        graph: CallGraph,
    ) -> None:
        self._settings = settings
        self._placer = placer
        self._targets = targets
        self._graph = graph
        self._index = SpanIndex(graph, settings.max_spans)

    def decode(self, request: ExportTraceServiceRequest, out: Collected) -> None:
        for resource_spans in request.resource_spans:
            resource = attributes_of(resource_spans.resource.attributes)
            place = self._placer.place(resource)
            spans = [s for scope in resource_spans.scope_spans for s in scope.spans]
            if place is None:
                out.reject("missing_service", f"{len(spans)} spans: {_NO_SERVICE}")
                continue
            if place.excluded:
                out.reject("excluded_by_rule", f"{len(spans)} spans of {place.service}")
                continue
            self._targets.learn(place.service)
            self._graph.place(place.service, place.layer)
            for span in spans:
                self._span(place, span, out)

    def _span(self, place: Place, span: Span, out: Collected) -> None:
        self._index.add(span.span_id, span.parent_span_id, place.service)
        if span.kind not in (_SERVER, _CLIENT):
            return

        attributes = attributes_of(span.attributes)
        error = span.status.code == _ERROR
        if span.kind == _SERVER:
            self._request(out, place, place.service, span, attributes, error)
            return
        target = self._targets.of(attributes)
        if target is None:
            return
        self._graph.add(place.service, target.service)
        if target.kind == "database":
            self._graph.place(target.service, Layer.DATABASE)
            self._query(out, place, target, span, attributes, error)
        elif target.kind == "third_party":
            self._graph.place(target.service, Layer.THIRD_PARTY)
            self._call(out, place, target, span, attributes, error)
        elif self._settings.edge_kpis:
            edge = f"{place.service}->{target.service}"
            self._request(out, place, edge, span, attributes, error)

    def _request(
        self,
        out: Collected,
        place: Place,
        service: str,
        span: Span,
        attributes: Mapping[str, Attribute],
        error: bool,
    ) -> None:
        status = _http_status(attributes)
        payload = out.payload(
            HttpRequest,
            route=_text(attributes, "http.route", "url.template") or span.name,
            method=_text(attributes, "http.request.method", "http.method"),
            status=status if status is not None else (500 if error else 200),
            duration_ms=_duration_ms(span),
        )
        if payload is not None:
            where = _with_trace(place.attributes, span)
            out.add(_time(span), place.layer, service, where, payload)

    def _query(
        self,
        out: Collected,
        place: Place,
        target: Target,
        span: Span,
        attributes: Mapping[str, Attribute],
        error: bool,
    ) -> None:
        rows = attributes.get("db.response.returned_rows")
        payload = out.payload(
            DbQuery,
            fingerprint=_fingerprint(span, attributes),
            duration_ms=_duration_ms(span),
            rows=rows if isinstance(rows, int) and rows >= 0 else None,
            error=error,
        )
        if payload is not None:
            where = {**_with_trace({}, span), "caller": place.service}
            out.add(_time(span), target.layer, target.service, where, payload)

    def _call(
        self,
        out: Collected,
        place: Place,
        target: Target,
        span: Span,
        attributes: Mapping[str, Attribute],
        error: bool,
    ) -> None:
        payload = out.payload(
            ThirdPartyCall,
            provider=target.service,
            operation=_text(attributes, "http.route", "url.template") or span.name,
            status=_http_status(attributes),
            success=not error,
            duration_ms=_duration_ms(span),
        )
        if payload is not None:
            where = {**_with_trace({}, span), "caller": place.service}
            out.add(_time(span), target.layer, target.service, where, payload)


def _http_status(attributes: Mapping[str, Attribute]) -> int | None:
    for key in ("http.response.status_code", "http.status_code"):
        value = attributes.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _text(attributes: Mapping[str, Attribute], *keys: str) -> str | None:
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _fingerprint(span: Span, attributes: Mapping[str, Attribute]) -> str:
    # Statements may hold literal values; summaries and operation names don't.
    summary = _text(attributes, "db.query.summary")
    if summary is not None:
        return summary
    operation = _text(attributes, "db.operation.name", "db.operation")
    collection = _text(attributes, "db.collection.name", "db.sql.table")
    if operation is not None:
        return f"{operation} {collection}" if collection else operation
    return span.name


def _duration_ms(span: Span) -> float:
    return (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6


def _time(span: Span) -> int:
    return span.end_time_unix_nano or span.start_time_unix_nano


def _with_trace(base: Mapping[str, Attribute], span: Span) -> dict[str, Attribute]:
    return {**base, "trace_id": span.trace_id.hex()}


_NO_SERVICE = "the resource has no service.name and no workload or host name"
