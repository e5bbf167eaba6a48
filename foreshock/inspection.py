"""`foreshock decode`: what Foreshock takes from each message, line by line.

Someone debugging a pipeline feeds it the messages of a topic, one per line
(base64 for binary formats), and reads one JSON object per line back:

- ``{"outcome": "event", ...}``: an event as the flow holds it (time, layer,
  service, payload; a measurement dropped as impossible reads null), the
  window it falls in, and its KPI inputs: the counters and measurements it
  adds to that window and the fields the window refuses.
- ``{"outcome": "dead_letter" | "field_dropped" | "excluded", ...}``: a
  rejection with its stable reason and a readable detail.
- a last ``{"outcome": "summary", ...}`` with the counts of each.

Bad messages are the point of the command, so they never change its exit
status; only a wrong invocation does. (The module is not named `inspect`: run
as a script from this folder, that name would hide the standard library's.)
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from foreshock.config import load_settings
from foreshock.decode import Decoder, Rejection, decode_with, decoder_for
from foreshock.kpis import Aggregate
from foreshock.measure import observe
from foreshock.schema import Event, MetricSample
from foreshock.windows import WindowSpec

__all__ = ["BASE64_FORMATS", "decode_file", "decode_lines", "write_decoded"]

# Formats whose messages are binary, so a line of text holds them as base64.
BASE64_FORMATS = frozenset({"otlp_proto", "otlp_proto_metrics", "otlp_proto_traces"})
# Formats that take the OTLP signal (metrics, traces) as a suffix.
_OTLP_FORMATS = frozenset({"otlp_proto", "otlp_json"})

_OUTCOMES = {
    "message": "dead_letter",
    "event": "dead_letter",
    "field": "field_dropped",
    "excluded": "excluded",
}

Line = dict[str, Any]


def decode_file(
    path: str,
    format: str,
    *,
    config: Path | None = None,
    base64_lines: bool = False,
    signal: str | None = None,
    out: IO[str] | None = None,
) -> int:
    """Decode every line of `path` ("-": standard input) and print the outcome.

    `signal` qualifies an OTLP format ("otlp_proto" with "metrics" reads as
    "otlp_proto_metrics"), as `otlp.signals` does for a topic. Returns the
    exit status: 0 whatever the messages held, 2 when the format or the file
    cannot be used (the reason goes to standard error).
    """
    out = out or sys.stdout
    try:
        format = _qualified(format, signal)
        settings = load_settings(config)
        decoder = decoder_for(format, settings)
    except (LookupError, OSError, ValueError) as error:
        print(f"foreshock decode: {error}", file=sys.stderr)
        return 2

    binary = base64_lines or format in BASE64_FORMATS
    spec = settings.window.spec()
    try:
        with _open(path) as stream:
            decoded = decode_lines(
                stream, decoder, base64_lines=binary, window=spec, name=format
            )
            write_decoded(decoded, out)
    except BrokenPipeError:
        # The reader went away (`| head`): what it wanted was written.
        _quiet_stdout()
        return 0
    except OSError as error:
        print(f"foreshock decode: cannot read {path!r}: {error}", file=sys.stderr)
        return 2
    return 0


def _quiet_stdout() -> None:
    """Point standard output at nothing, so that flushing it at exit cannot
    raise again on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _qualified(format: str, signal: str | None) -> str:
    if signal is None:
        if format == "otlp_proto":
            # Protobuf OTLP does not say which signal it carries.
            raise ValueError("--format otlp_proto needs --signal metrics or traces")
        return format
    if format not in _OTLP_FORMATS:
        raise ValueError(
            f"--signal applies to otlp_proto and otlp_json, not {format!r}"
        )
    return f"{format}_{signal}"


@contextmanager
def _open(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdin.buffer
        return
    with open(path, "rb") as stream:
        yield stream


def decode_lines(
    lines: Iterable[bytes],
    decoder: Decoder,
    *,
    base64_lines: bool = False,
    window: WindowSpec | None = None,
    name: str = "given",
) -> Iterator[Line]:
    """One output object per event and per rejection, then a summary.

    Lines are numbered from 1; a trailing line break is not part of a message.
    A decoder that raises on a line gives that line a dead letter (`name` is
    the format it decodes), as the flow does.
    """
    spec = window or WindowSpec()
    counts: Counter[str] = Counter()
    for number, raw in enumerate(lines, start=1):
        counts["messages"] += 1
        message = raw.rstrip(b"\r\n")
        for line in _decode_one(number, message, decoder, base64_lines, spec, name):
            counts[line["outcome"]] += 1
            yield line
    yield _summary(counts)


def _decode_one(
    number: int,
    raw: bytes,
    decoder: Decoder,
    base64_lines: bool,
    spec: WindowSpec,
    name: str,
) -> Iterator[Line]:
    data = raw
    if base64_lines:
        try:
            data = base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            bad = Rejection("base64", f"the line is not base64: {exc}")
            yield _rejection(number, bad)
            return

    events, rejections = decode_with(decoder, data, name)
    lines = [_event(number, event, spec) for event in events]
    yield from lines
    for rejection in rejections:
        yield _rejection(number, rejection)

    # The window refuses negative and non-finite measurements by itself;
    # those the decoder did not already name are shown as drops too.
    named = {r.field for r in rejections if r.scope == "field"}
    for line in lines:
        for field in line["kpi_inputs"].get("rejected", {}):
            if field not in named:
                yield _rejection(number, _window_drop(field, line["event_id"]))


def _event(number: int, event: Event, spec: WindowSpec) -> Line:
    payload = event.payload.model_dump(mode="json", exclude_none=True)
    return {
        "line": number,
        "outcome": "event",
        "time": _iso(event.time),
        "window_start": _iso(spec.start(spec.index(event.time))),
        "layer": event.layer.value,
        "service": event.service,
        "event_id": event.event_id,
        "attributes": event.attributes,
        "payload": {k: _finite_or_none(v) for k, v in payload.items()},
        "kpi_inputs": _kpi_inputs(event),
    }


def _kpi_inputs(event: Event) -> dict[str, object]:
    """What the event adds to its window's aggregate, as the flow adds it."""
    payload = event.payload
    if isinstance(payload, MetricSample) and payload.type == "counter":
        # A counter's contribution is its increase since the previous sample
        # of its series, which only the window store knows.
        return {"counter_sample": {"metric:" + payload.name: payload.value}}
    aggregate = Aggregate()
    observe(aggregate, payload)
    return {
        "counts": aggregate.counts,
        "values": aggregate.values,
        "rejected": aggregate.rejected,
    }


def _rejection(number: int, rejection: Rejection) -> Line:
    return {
        "line": number,
        "outcome": _OUTCOMES[rejection.scope],
        "reason": rejection.reason,
        "field": rejection.field,
        "event_id": rejection.event_id,
        "detail": rejection.detail,
    }


def _window_drop(field: str, event_id: str | None) -> Rejection:
    detail = f"{field}: negative or not finite, left out of the window's KPIs"
    return Rejection("impossible_value", detail, "field", field, event_id)


def _summary(counts: Counter[str]) -> Line:
    return {
        "outcome": "summary",
        "messages": counts["messages"],
        "events": counts["event"],
        "dead_letters": counts["dead_letter"],
        "fields_dropped": counts["field_dropped"],
        "excluded": counts["excluded"],
    }


def write_decoded(lines: Iterable[Line], out: IO[str]) -> None:
    """Print each object as one line of strict JSON."""
    for line in lines:
        out.write(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _finite_or_none(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
