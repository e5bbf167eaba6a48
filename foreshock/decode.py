"""From raw bytes to validated events, or to a dead letter with its reason.

Every input format is a decoder: a function from one message's bytes to the
events it carries and the rejections it caused, ``(bytes) -> (events,
rejections)``. Decoders are registered by format name ("native", "rum", ...)
and a topic names its format in the configuration (`kafka.formats`), so the
flow and `foreshock decode` share one lookup.

A rejection says what was refused, and how much:

- scope "message": nothing in the message is usable; the flow writes it to
  the dead-letter topic with its reason.
- scope "event": one event of a batch message is unusable; its dead letter
  carries that event alone (`data`) and the batch's other events count.
- scope "field": one measurement was impossible and is left out; the event
  keeps the field as NaN, so the window counts it as rejected by field name
  and every other measurement of the event still counts.
- scope "excluded": the message is valid but kept out of the KPIs on purpose
  (a bot's page view); the flow counts it by reason.

Hostile input stays bounded: a message larger than `InputLimits` allows is a
dead letter ("too_large") before any parser sees it, and a native document
nested deeper than `MAX_JSON_DEPTH` is one ("too_deep") instead of
exhausting the parser's recursion. A dead letter carries at most
`InputLimits.dead_letter_bytes` of its message, so that it fits in a Kafka
message whatever it refuses, and a message gives at most
`InputLimits.max_event_letters` letters of scope "event": the window step
puts the rest of its refused events in one letter of the whole message.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import ValidationError

from connectors.messages import RawMessage
from foreshock.records import DeadLetter
from foreshock.schema import EVENT_ADAPTER, EVENTS_ADAPTER, Event
from foreshock.windows import Sample

if TYPE_CHECKING:
    from foreshock.config import Settings

__all__ = [
    "DECODER_FAILED",
    "MAX_JSON_DEPTH",
    "Decoded",
    "Decoder",
    "FormatUnavailableError",
    "InputLimits",
    "Rejection",
    "SampleDecoder",
    "Scanned",
    "Tombstone",
    "UnknownFormatError",
    "dead_letter_of",
    "decode",
    "decode_native",
    "decode_with",
    "decoder_for",
    "format_names",
    "oversized",
    "register_format",
    "scan_with",
    "to_dead_letter",
]

log = logging.getLogger(__name__)

Scope = Literal["message", "event", "field", "excluded"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Something a decoder refused: a stable `reason` code and a readable detail.

    `field` names the measurement left out when `scope` is "field"; `event_id`
    says which event of the message it concerns, when the format has ids.
    `data` is the refused event's own JSON when `scope` is "event", so that
    its dead letter can be fixed and sent again without its batch.
    """

    reason: str
    detail: str
    scope: Scope = "message"
    field: str | None = None
    event_id: str | None = None
    data: bytes | None = None


Decoded = tuple[list[Event], list[Rejection]]
Decoder = Callable[[bytes], Decoded]
# A message as the window samples of its events, and its rejections.
Scanned = tuple[list[Sample], list[Rejection]]


@runtime_checkable
class SampleDecoder(Protocol):
    """A decoder that also hands over window samples without making events.

    A format whose messages carry many events (OTLP) offers `scan`, so that
    the window step adds them in bulk, as it does native events. `scan`
    gives the samples of the events a call gives, with the same rejections.
    """

    def __call__(self, data: bytes) -> Decoded: ...

    def scan(self, data: bytes) -> Scanned: ...


# A decoder that raises instead of rejecting, or hands back something other
# than what it promises, has a bug, not bad input: the message it failed on
# is refused whole under this reason, and the traceback is logged at DEBUG
# (`foreshock -v`).
DECODER_FAILED = "decoder_failed"


def decode_with(decoder: Decoder, data: bytes, fmt: str) -> Decoded:
    """The events and rejections `decoder`, of format `fmt`, makes of `data`.

    A decoder that fails gives the message one rejection, `decoder_failed`,
    so that the flow dead-letters it and goes on.
    """
    try:
        events, rejections = _pair(decoder(data), "events")
        if not isinstance(events, list) or not all(
            isinstance(e, Event) for e in events
        ):
            raise TypeError("returned events that are not a list of Event")
        return events, _rejections(rejections)
    except Exception as error:
        return [], [_failed(fmt, error)]


def scan_with(decoder: SampleDecoder, data: bytes, fmt: str) -> Scanned:
    """The samples and rejections a sample decoder's `scan` makes of `data`,
    with a failure turned into a rejection as `decode_with` does."""
    try:
        samples, rejections = _pair(decoder.scan(data), "samples")
        if not isinstance(samples, list) or not all(
            type(s) is tuple and len(s) == 5 for s in samples
        ):
            raise TypeError("scan returned samples that are not a list of Sample")
        return samples, _rejections(rejections)
    except Exception as error:
        return [], [_failed(fmt, error)]


def _pair(result: object, first: str) -> tuple[Any, Any]:
    if not (isinstance(result, tuple | list) and len(result) == 2):
        raise TypeError(
            f"returned {type(result).__name__}, not a pair ({first}, rejections)"
        )
    return result[0], result[1]


def _rejections(rejections: object) -> list[Rejection]:
    if not isinstance(rejections, list) or not all(
        isinstance(r, Rejection) for r in rejections
    ):
        raise TypeError("returned rejections that are not a list of Rejection")
    return rejections


def _failed(fmt: str, error: Exception) -> Rejection:
    log.debug("the %r decoder failed", fmt, exc_info=error)
    return Rejection(
        DECODER_FAILED,
        f"the {fmt!r} decoder failed: {type(error).__name__}: {error}; a "
        "decoder returns (events, rejections), with rejections for input it "
        "cannot use, and does not raise",
    )


# A format's decoder is built from the job's settings, so that a format with
# options (service mapping, bot rules) reads them from the same configuration.
DecoderFactory = Callable[["Settings"], Decoder]


class UnknownFormatError(LookupError):
    """No decoder is registered under the format name asked for."""


class FormatUnavailableError(LookupError):
    """A format is registered but the code that decodes it cannot be loaded."""


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Bounds on what one input message may be, checked before decoding.

    - `max_message_bytes`: a larger value is a dead letter ("too_large")
      whatever its format. None: no bound (the broker's own still holds).
    - `max_ahead_s` / `max_behind_s`: an event whose time is further ahead
      of (behind) the broker's receive time of its message is quarantined
      for clock skew instead of moving the watermark. None: not checked.
      Only messages that carry a receive time are checked.
    - `dead_letter_bytes`: how much of a refused message its dead letter
      carries (see `DeadLetter`). None: all of it.
    - `max_event_letters`: how many refused events of one message get a
      dead letter each; the others share one letter of the whole message.
    """

    max_message_bytes: int | None = 1_048_576
    max_ahead_s: float | None = None
    max_behind_s: float | None = None
    dead_letter_bytes: int | None = DeadLetter.VALUE_BYTES
    max_event_letters: int = 100

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "dead_letter_bytes", "max_event_letters"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value!r}")
        for name in ("max_ahead_s", "max_behind_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} cannot be negative, got {value!r}")


def oversized(data: bytes, limits: InputLimits) -> Rejection | None:
    """The rejection of a value beyond `limits.max_message_bytes`, if it is."""
    bound = limits.max_message_bytes
    if bound is None or len(data) <= bound:
        return None
    return Rejection(
        "too_large",
        f"the value is {len(data)} bytes, beyond the bound of {bound} "
        "(kafka.max_message_bytes); split the batch at the producer",
    )


# Far deeper than any native event, which nests three levels (event, payload,
# labels); Python's own parser would recurse a frame per level.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def _json_depth(data: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest, strings left out."""
    brackets = _JSON_BRACKET.findall(_JSON_STRING.sub(b"", data))
    steps = (1 if b in (b"[", b"{") else -1 for b in brackets)
    return max(accumulate(steps), default=0)


def _too_deep(depth: int) -> Rejection:
    return Rejection(
        "too_deep",
        f"the document nests {depth} levels deep, beyond {MAX_JSON_DEPTH}; "
        "a native event nests three",
    )


class Tombstone:
    """A record with no value: a deletion marker, never a measurement."""


TOMBSTONE = Tombstone()


def decode_native(data: bytes) -> Decoded:
    """Decode one native JSON event, or a JSON array of them (a batch).

    In a batch, each event stands alone: a refused one is a rejection of
    scope "event" carrying its own JSON, and the others are kept.
    """
    if not data.strip():
        return [], [Rejection("empty_payload", "the record's value is empty")]
    batch = data.lstrip()[:1] == b"["
    try:
        if batch:
            return _each(EVENTS_ADAPTER.validate_json(data))
        return [EVENT_ADAPTER.validate_json(data)], []
    except ValidationError as error:
        return _classify(data, error, batch)
    except RecursionError:
        return [], [_too_deep(_json_depth(data))]


def _classify(data: bytes, error: ValidationError, batch: bool) -> Decoded:
    first = error.errors(include_url=False)[0]
    if first["type"] != "json_invalid" and not batch:
        return [], [Rejection("schema", _describe(error))]

    # Python's json module writes NaN and Infinity as bare tokens, which strict
    # JSON rejects; such an event is still usable, its non-finite fields are
    # dropped one by one when it is aggregated. That parser recurses once per
    # level, so the depth is bounded first. A batch is parsed this way too
    # when one of its events is refused, so that the others are kept.
    depth = _json_depth(data)
    if depth > MAX_JSON_DEPTH:
        return [], [_too_deep(depth)]
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return [], [Rejection("json_decode_error", str(exc))]
    if isinstance(document, list):
        return _each(document)
    try:
        return [EVENT_ADAPTER.validate_python(document)], []
    except ValidationError as second:
        return [], [Rejection("schema", _describe(second))]


def _each(documents: Sequence[object]) -> Decoded:
    """The events of a batch, each refused one on its own.

    Validated events pass through as they are; parsed documents are
    validated one by one.
    """
    if not documents:
        return [], [Rejection("empty_payload", "the batch holds no event")]
    events: list[Event] = []
    rejections: list[Rejection] = []
    for position, document in enumerate(documents):
        if isinstance(document, Event):
            events.append(document)
            continue
        try:
            events.append(EVENT_ADAPTER.validate_python(document))
        except ValidationError as error:
            where = f"event {position + 1} of a batch of {len(documents)}: "
            rejections.append(
                Rejection(
                    "schema",
                    where + _describe(error),
                    scope="event",
                    data=json.dumps(document).encode(),
                )
            )
    return events, rejections


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "(document)"
        parts.append(f"{where}: {item['msg']} (got {item.get('input')!r:.60})")
    return "; ".join(parts)


def decode(message: RawMessage) -> Event | DeadLetter | Tombstone:
    """Decode one native JSON event, or say precisely why it cannot be used."""
    if message.value is None:
        return TOMBSTONE
    events, rejections = decode_native(message.value)
    if events:
        return events[0]
    return to_dead_letter(message, rejections[0])


def to_dead_letter(message: RawMessage, rejection: Rejection) -> DeadLetter:
    """The dead letter for a message refused whole, logged at WARNING.

    It carries at most `DeadLetter.VALUE_BYTES` of the message.
    """
    log.warning(
        "dead letter reason=%s topic=%s partition=%s offset=%s",
        rejection.reason,
        message.topic,
        message.partition,
        message.offset,
    )
    return dead_letter_of(message, rejection)


def dead_letter_of(
    message: RawMessage,
    rejection: Rejection,
    max_value_bytes: int | None = DeadLetter.VALUE_BYTES,
) -> DeadLetter:
    """The dead letter of a refusal, with (the first bytes of) what it refused.

    That is the refused event's own JSON when the rejection has it, else the
    message's value. Nothing is logged: a caller that makes letters by the
    thousand logs them in bounded number.
    """
    return DeadLetter.of(
        reason=rejection.reason,
        detail=rejection.detail,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value if rejection.data is None else rejection.data,
        timestamp_ms=message.timestamp_ms,
        max_value_bytes=max_value_bytes,
    )


# Change messages (deploys, flags) are no telemetry: the flow sends a topic of
# this format to the correlator instead of a decoder (see foreshock.changes).
CHANGE_FORMAT = "change"

# Format name -> where its decoder factory lives, as "module:attribute". The
# import waits until a format is asked for, so a format whose code is absent
# costs nothing until used and then fails with a clear message.
_FORMATS: dict[str, str] = {
    "native": "foreshock.decode:native_factory",
    "rum": "connectors.rum:beacon_decoder",
    # OTLP as the Collector's kafka exporter writes it; a topic configured as
    # "otlp_proto" is qualified with its signal when settings are loaded.
    "otlp_proto": "connectors.otlp:unqualified_proto_decoder",
    "otlp_proto_metrics": "connectors.otlp:proto_metrics_decoder",
    "otlp_proto_traces": "connectors.otlp:proto_traces_decoder",
    "otlp_json": "connectors.otlp:json_decoder",
    "otlp_json_metrics": "connectors.otlp:json_metrics_decoder",
    "otlp_json_traces": "connectors.otlp:json_traces_decoder",
}


def native_factory(settings: Settings) -> Decoder:
    """The native format has no options."""
    return decode_native


def register_format(name: str, factory: str) -> None:
    """Register a format's decoder factory, given as "module:attribute"."""
    if name in _FORMATS and _FORMATS[name] != factory:
        raise ValueError(
            f"format {name!r} is registered already (by {_FORMATS[name]!r}); "
            "choose another name"
        )
    _FORMATS[name] = factory


def format_names() -> list[str]:
    """Every registered format name, sorted."""
    return sorted(_FORMATS)


def decoder_for(name: str, settings: Settings | None = None) -> Decoder:
    """The decoder of format `name`, configured from `settings` (or defaults).

    Raises `UnknownFormatError` for a name nobody registered and
    `FormatUnavailableError` when the format's code cannot be imported.
    """
    location = _FORMATS.get(name)
    if location is None:
        raise UnknownFormatError(
            f"unknown message format {name!r}; known formats: "
            f"{', '.join(format_names())}"
        )
    factory = _load(name, location)
    if settings is None:
        from foreshock.config import Settings

        settings = Settings()
    return factory(settings)


def _load(name: str, location: str) -> DecoderFactory:
    module_name, _, attribute = location.partition(":")
    try:
        factory: DecoderFactory = getattr(import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise FormatUnavailableError(
            f"format {name!r} is registered but its decoder {location!r} cannot "
            f"be loaded ({exc}); this installation cannot decode {name!r} yet"
        ) from exc
    return factory
