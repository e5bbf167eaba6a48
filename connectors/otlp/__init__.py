"""OTLP metrics and traces, as the OpenTelemetry Collector's kafka exporter writes them.

`decode_otlp(data, signal, encoding)` turns one message into Foreshock events
and rejections; `OtlpDecoder` does the same while remembering cumulative
series and the call graph across messages, and its `scan` gives the window
samples of those events without making them, which is what the window step
takes. `foreshock.decode` registers a format per encoding and signal
("otlp_proto_metrics", "otlp_json_traces", ...); "otlp_json" alone tells the
signal from the document.
"""

from connectors.otlp.callgraph import CallGraph
from connectors.otlp.decoder import (
    OtlpDecoder,
    decode_otlp,
    format_for_topic,
    json_decoder,
    json_metrics_decoder,
    json_traces_decoder,
    proto_metrics_decoder,
    proto_traces_decoder,
    unqualified_proto_decoder,
)
from connectors.otlp.histograms import Percentile
from connectors.otlp.parse import Encoding, OtlpParseError, parse
from connectors.otlp.settings import OtlpSettings, PlacementRule, Signal

__all__ = [
    "CallGraph",
    "Encoding",
    "OtlpDecoder",
    "OtlpParseError",
    "OtlpSettings",
    "Percentile",
    "PlacementRule",
    "Signal",
    "decode_otlp",
    "format_for_topic",
    "json_decoder",
    "json_metrics_decoder",
    "json_traces_decoder",
    "parse",
    "proto_metrics_decoder",
    "proto_traces_decoder",
    "unqualified_proto_decoder",
]
