"""The quick OTLP/JSON reader reads what ParseDict reads, or leaves it to it."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from connectors.otlp.json_reader import Unsupported, read_metrics, read_traces
from connectors.otlp.parse import OtlpParseError, _hex_ids_to_base64, parse
from foreshock.benchmarks.otlp_decode import requests
from tests.cases import CASES
from tests.connectors.test_otlp import TEN, otlp_json, sdk_metrics, sdk_spans

Document = dict[str, Any]


def _by_parse_dict(document: Document, signal: Any) -> Message:
    """The message ParseDict reads, ids turned from hex as `parse` does."""
    document = copy.deepcopy(document)
    _hex_ids_to_base64(document, signal)
    request: Message = (
        ExportMetricsServiceRequest()
        if signal == "metrics"
        else ExportTraceServiceRequest()
    )
    return json_format.ParseDict(document, request, ignore_unknown_fields=True)


def _metrics_documents() -> list[Document]:
    lines = [
        line
        for name in (
            "C08-otlp-json-int64-encoding.otlp.jsonl",
            "C09-cumulative-counter-reset.otlp.jsonl",
            "C20-histogram-percentile-artefacts.otlp.jsonl",
        )
        for line in (CASES / name).read_bytes().splitlines()
    ]
    documents = [orjson.loads(line) for line in lines]
    documents += [
        json.loads(otlp_json(encode_metrics(m))) for m in sdk_metrics("a", TEN, 2)
    ]
    documents += [json_format.MessageToDict(r) for r in requests(5)]
    # Empty messages are present all the same; a negative zero keeps its sign.
    metrics = [
        {"name": "g", "gauge": {}, "metadata": [{"key": "a", "value": {}}]},
        {
            "name": "s",
            "sum": {
                "aggregationTemporality": "AGGREGATION_TEMPORALITY_DELTA",
                "dataPoints": [{"asDouble": -0.0, "exemplars": [{"spanId": ""}]}],
            },
        },
    ]
    scope = {"scope": {}, "metrics": metrics}
    documents.append({"resourceMetrics": [{"resource": {}, "scopeMetrics": [scope]}]})
    return [d for d in documents if "resourceMetrics" in d]


def test_the_usual_form_is_read_to_the_same_message() -> None:
    documents = _metrics_documents()
    c08 = (CASES / "C08-otlp-json-int64-encoding.otlp.jsonl").read_bytes()
    traces = [orjson.loads(line) for line in c08.splitlines()]
    traces = [d for d in traces if "resourceSpans" in d]
    traces.append(json.loads(otlp_json(encode_spans(sdk_spans(TEN)))))

    assert len(documents) >= 10 and len(traces) == 2
    for document in documents:
        read = read_metrics(document)
        expected = _by_parse_dict(document, "metrics")
        assert read == expected
        assert read.SerializeToString() == expected.SerializeToString()
    for document in traces:
        assert read_traces(document) == _by_parse_dict(document, "traces")
    [span] = read_traces(traces[0]).resource_spans[0].scope_spans[0].spans
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"


def _point(**fields: Any) -> Document:
    point = {"timeUnixNano": "1741082400000000000", **fields}
    metric = {"name": "m", "gauge": {"dataPoints": [point]}}
    return {"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}


@pytest.mark.parametrize(
    "document",
    [
        _point(asDouble="NaN"),
        _point(asDouble="1.5"),
        _point(asInt=1.0),
        _point(asInt=None),
        _point(asInt="1", asDouble=2.0),
        _point(time_unix_nano="5"),
        _point(unknownField=1),
        _point(flags=-1),
        _point(flags=2**40),
        _point(attributes=[{"key": "k", "value": {"bytesValue": "AAE="}}]),
        _point(exemplars=[{"spanId": "zz"}]),
        {"resource_metrics": []},
    ],
)
def test_any_other_form_is_left_to_parse_dict(document: Document) -> None:
    with pytest.raises(Unsupported):
        read_metrics(document)


def _nested(levels: int) -> Document:
    value: Document = {"stringValue": "x"}
    for _ in range(levels):
        value = {"arrayValue": {"values": [value]}}
    attributes = [{"key": "deep", "value": value}]
    return {"resourceMetrics": [{"resource": {"attributes": attributes}}]}


def test_nesting_is_refused_where_parse_dict_refuses_it() -> None:
    # Request, resource metrics, resource, key-value and value are 5 levels
    # of messages, each array 2 more: 47 arrays make 99, 48 make 101, and
    # ParseDict reads at most 100.
    deepest, too_deep = _nested(47), _nested(48)

    read = read_metrics(deepest)

    assert read == _by_parse_dict(deepest, "metrics")
    with pytest.raises(Unsupported):
        read_metrics(too_deep)
    with pytest.raises(OtlpParseError, match="too deep") as refused:
        parse(json.dumps(too_deep).encode(), "metrics", "json")
    assert refused.value.reason == "otlp_schema"
