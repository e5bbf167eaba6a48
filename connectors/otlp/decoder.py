"""One entry point for OTLP messages: bytes in, events and rejections out.

The OpenTelemetry Collector's kafka exporter writes one export request per
message, to one topic per signal (`otlp_metrics`, `otlp_spans` by default),
encoded as `otlp_proto` (default) or `otlp_json`. A request becomes many
events. Whole-message failures (not OTLP, wrong signal, empty) come back as
one rejection of scope "message", which the flow sends to the dead-letter
topic; a point or span that cannot be used is a rejection of scope
"excluded" while the rest of the message counts, and a message none of whose
items could be used is refused whole.

Cumulative series, recent spans and the call graph are remembered across
messages, so one `OtlpDecoder` should read all messages of a topic partition.

A registered format's decoder is a `foreshock.decode.SampleDecoder`: called,
it returns events; its `scan` returns their window samples instead, which
costs a fraction as much per metric point (see `connectors.otlp.events`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connectors.otlp.callgraph import CallGraph
from connectors.otlp.events import Collected
from connectors.otlp.metrics import MetricDecoder
from connectors.otlp.parse import (
    Encoding,
    OtlpParseError,
    detect_json_signal,
    parse,
)
from connectors.otlp.placement import Placer
from connectors.otlp.settings import OtlpSettings, Signal
from connectors.otlp.targets import Targets
from connectors.otlp.traces import TraceDecoder
from foreshock.decode import Decoded, Rejection, SampleDecoder, Scanned

if TYPE_CHECKING:
    from foreshock.config import Settings

__all__ = [
    "OtlpDecoder",
    "decode_otlp",
    "format_for_topic",
    "json_decoder",
    "json_metrics_decoder",
    "json_traces_decoder",
    "proto_metrics_decoder",
    "proto_traces_decoder",
    "unqualified_proto_decoder",
]

log = logging.getLogger(__name__)


class OtlpDecoder:
    """Decodes OTLP export requests into Foreshock events or window samples.

    `call_graph` accumulates the caller -> callee edges seen in traces; its
    `topology()` is what `foreshock.topology` reads.
    """

    def __init__(self, settings: OtlpSettings | None = None) -> None:
        self.settings = settings if settings is not None else OtlpSettings()
        self.call_graph = CallGraph()
        placer = Placer(self.settings)
        targets = Targets(self.settings)
        self._metrics = MetricDecoder(self.settings, placer, targets)
        self._traces = TraceDecoder(self.settings, placer, targets, self.call_graph)

    def decode(self, data: bytes, signal: Signal, encoding: Encoding) -> Decoded:
        """The events in one message, and what in it could not be used."""
        out = self.collect(data, signal, encoding)
        return out.events(), out.rejections

    def scan(self, data: bytes, signal: Signal, encoding: Encoding) -> Scanned:
        """The window samples in one message, and what in it could not be used.

        The samples of the events `decode` returns, without making them.
        """
        out = self.collect(data, signal, encoding)
        return out.samples, out.rejections

    def decode_json(self, data: bytes) -> Decoded:
        """Decode OTLP/JSON of either signal, told apart by its top-level member."""
        out = self.collect(data, None, "json")
        return out.events(), out.rejections

    def collect(
        self, data: bytes, signal: Signal | None, encoding: Encoding
    ) -> Collected:
        """Everything one message gives: samples, their events, rejections.

        `signal` None reads OTLP/JSON of either signal.
        """
        out = Collected()
        empty = not data if encoding == "proto" else not data.strip()
        if empty:
            out.rejections.append(
                Rejection("empty_payload", "the record's value is empty")
            )
            return out
        try:
            if signal is None:
                signal = detect_json_signal(data)
            request = parse(data, signal, encoding)
        except OtlpParseError as error:
            out.rejections.append(Rejection(error.reason, error.detail))
            return out

        if signal == "metrics":
            self._metrics.decode(request, out)  # type: ignore[arg-type]
        else:
            self._traces.decode(request, out)  # type: ignore[arg-type]
        out.rejections = _summarised(out)
        return out


@dataclass(frozen=True)
class _Format:
    """The decoder of one registered format: events, or samples in bulk.

    `signal` None is OTLP/JSON that names its signal itself.
    """

    decoder: OtlpDecoder
    signal: Signal | None
    encoding: Encoding

    def __call__(self, data: bytes) -> Decoded:
        out = self.decoder.collect(data, self.signal, self.encoding)
        return out.events(), out.rejections

    def scan(self, data: bytes) -> Scanned:
        out = self.decoder.collect(data, self.signal, self.encoding)
        return out.samples, out.rejections


def _summarised(out: Collected) -> list[Rejection]:
    if not out.rejections:
        return []
    reasons = Counter(r.reason for r in out.rejections)
    log.warning(
        "otlp items rejected count=%s reasons=%s used=%s",
        len(out.rejections),
        dict(reasons),
        len(out.samples),
    )
    if out.samples:
        return out.rejections
    # Nothing in the message could be used: it is refused whole, so that it
    # reaches the dead-letter topic with its bytes.
    first = out.rejections[0]
    detail = f"no item could be used ({dict(reasons)}); first: {first.detail}"
    return [Rejection(first.reason, detail)]


def decode_otlp(
    data: bytes,
    signal: Signal,
    encoding: Encoding,
    *,
    decoder: OtlpDecoder | None = None,
) -> Decoded:
    """Decode one OTLP message, as the flow would.

    Without `decoder`, a fresh one is used: cumulative series are then met
    for the first time, so old ones give baselines only.
    """
    return (decoder or OtlpDecoder()).decode(data, signal, encoding)


def format_for_topic(topic: str, format: str, signals: dict[str, Signal]) -> str:
    """The registered format of a topic configured as `otlp_proto` or `otlp_json`.

    The Collector encodes each signal on its own topic without saying which
    signal it is, so the signal comes from the topic (`otlp.signals`).
    OTLP/JSON names its signal itself and may stay unqualified. Other formats
    are returned unchanged.
    """
    if format not in ("otlp_proto", "otlp_json"):
        return format
    signal = signals.get(topic)
    if signal is not None:
        return f"{format}_{signal}"
    if format == "otlp_json":
        return format
    raise ValueError(
        f"topic {topic!r} is read as 'otlp_proto' but its signal is unknown; "
        f'add it to [otlp.signals] ({topic} = "metrics" or "traces") or '
        "name the format 'otlp_proto_metrics' or 'otlp_proto_traces'"
    )


def _settings_of(settings: Settings) -> OtlpSettings:
    return settings.otlp


def proto_metrics_decoder(settings: Settings) -> SampleDecoder:
    """The decoder of format "otlp_proto_metrics"."""
    return _Format(OtlpDecoder(_settings_of(settings)), "metrics", "proto")


def proto_traces_decoder(settings: Settings) -> SampleDecoder:
    """The decoder of format "otlp_proto_traces"."""
    return _Format(OtlpDecoder(_settings_of(settings)), "traces", "proto")


def json_metrics_decoder(settings: Settings) -> SampleDecoder:
    """The decoder of format "otlp_json_metrics"."""
    return _Format(OtlpDecoder(_settings_of(settings)), "metrics", "json")


def json_traces_decoder(settings: Settings) -> SampleDecoder:
    """The decoder of format "otlp_json_traces"."""
    return _Format(OtlpDecoder(_settings_of(settings)), "traces", "json")


def unqualified_proto_decoder(settings: Settings) -> SampleDecoder:
    """Refuses to build: protobuf OTLP needs the signal its topic carries."""
    raise ValueError(
        "format 'otlp_proto' needs its topic's signal; configure the topic in "
        "kafka.formats (with [otlp.signals]) or use 'otlp_proto_metrics' or "
        "'otlp_proto_traces'"
    )


def json_decoder(settings: Settings) -> SampleDecoder:
    """The decoder of format "otlp_json": either signal, told by the document."""
    return _Format(OtlpDecoder(_settings_of(settings)), None, "json")
