"""The stateful steps of the main dataflow, each a thin shell over core logic.

Bytewax snapshots the state of every key a step touched at each epoch, so
state is handed over as pickled bytes: far cheaper than the deep copy the
built-in operators make.
"""

from __future__ import annotations

import logging
import pickle
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter

import msgspec
from bytewax.operators import StatefulBatchLogic, StatefulLogic

from connectors.messages import RawBatch, RawMessage
from foreshock import shutdown, telemetry
from foreshock.correlation import Correlator, Output, ShardProgress
from foreshock.decode import (
    Decoder,
    InputLimits,
    Rejection,
    SampleDecoder,
    dead_letter_of,
    decode_native,
    decode_with,
    oversized,
    scan_with,
)
from foreshock.feedback import Feedback
from foreshock.kpis import Kpi
from foreshock.native import NativeScanner, scanner_for
from foreshock.native_scan import scan_native
from foreshock.records import Change, DeadLetter, KpiRecord, KpiScore, LateEvent
from foreshock.schema import EVENT_ADAPTER, Event
from foreshock.version_kpis import is_breakdown
from foreshock.windows import (
    EPOCH,
    SERIES_CAP,
    Late,
    LateSample,
    Refused,
    RefusedSample,
    Sample,
    WindowSpec,
    WindowStore,
    sample_of,
)
from models import Detector

__all__ = ["CorrelateLogic", "DetectLogic", "WindowItem", "WindowLogic"]

log = logging.getLogger(__name__)

WindowItem = KpiRecord | DeadLetter | LateEvent | ShardProgress
# What a window step reported last: nothing yet.
_NOTHING_REPORTED = datetime.min.replace(tzinfo=UTC)


def wall_clock_us() -> int:
    """Processing time: microseconds since the Unix epoch by the system clock."""
    return time.time_ns() // 1000


class WindowLogic(StatefulLogic[RawBatch, WindowItem, bytes]):
    """Decodes the batches of one shard and keeps its event-time windows.

    Each batch is decoded by the decoder of its format. A message refused
    whole becomes a dead letter; a dropped measurement is already counted by
    the window (the event carries it as NaN); a message excluded on purpose,
    such as a bot's page view, is counted in `excluded` by reason.

    Before any decoder runs, a message beyond `limits.max_message_bytes` is
    a dead letter. An event whose time is too far from its message's receive
    time is quarantined (a `LateEvent` with reason "clock_skew", counted in
    `quarantined`), so that one host with a wrong clock cannot push the
    watermark and make every honest event late. `clock` gives processing
    time in microseconds since the epoch: it marks backfill windows and
    measures how long the shard has been idle (see `WindowPolicy`); the
    engine calls `on_notify` once the idle timeout closes a window.

    Native messages go to the native scanner first (`foreshock.native`),
    which takes what it can place exactly as this step would and hands the
    rest back message by message; `native=False` keeps every message on the
    Python path, with the same results.

    Hostile input cannot multiply: a message gives at most
    `limits.max_event_letters` letters of refused events, the rest sharing
    one letter of the message ("too_many_refused"), and refused, late and
    quarantined input is logged a few lines per batch (see `_BatchLog`);
    metrics count every letter and late event.
    """

    # Set by the flow: whether snapshots are kept (recovery is on).
    keep_state: bool = True

    def __init__(
        self,
        store: WindowStore,
        decoders: Mapping[str, Decoder] | None = None,
        on_window_closed: Callable[[datetime], None] | None = None,
        limits: InputLimits | None = None,
        clock: Callable[[], int] = wall_clock_us,
        native: bool = True,
    ) -> None:
        self.store = store
        self.on_window_closed = on_window_closed
        self.decoders = dict(decoders or {"native": decode_native})
        self.limits = limits or InputLimits()
        self.clock = clock
        self.tombstones = 0
        self.quarantined = 0
        self.excluded: Counter[str] = Counter()
        self._skew = _SkewBounds.of(self.limits)
        self._log = _BatchLog()
        policy = store.policy
        self._tracks_receipt = (
            policy.backfill_after_s is not None and policy.backfill_clock == "receive"
        )
        # False keeps every native event on the Python path (for comparison).
        self._scanner = scanner_for(store, self._tracks_receipt) if native else None
        # A store resumed from a snapshot starts its idle timeout afresh.
        store.restart_idle_clock(clock())
        # The shard this step keeps (named by its first batch, or restored),
        # and how far it last told the correlator it had closed.
        self.shard: str | None = None
        self._reported: datetime | None = _NOTHING_REPORTED

    def on_item(self, value: RawBatch) -> tuple[Iterable[WindowItem], bool]:
        out: list[WindowItem] = []
        store = self.store
        store.now_us = self.clock()
        tombstones = self.tombstones
        decoder = self.decoders.get(value.format)
        if decoder is decode_native:
            self._native(value.messages, out)
        elif isinstance(decoder, SampleDecoder):
            self._scanned(value.messages, value.format, decoder, out)
        else:
            self._decoded(value, decoder, out)
        out.extend(self._closed(store.close_ready()))
        self._log.end()
        telemetry.window_batch(value, out, self.tombstones - tombstones)
        self.shard = value.shard
        # A partition with nothing to read holds nothing back.
        idle = value.caught_up and not value.messages and not store.holds_windows()
        self._progress(out, idle=idle)
        return out, StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """When the idle timeout next closes a window of this shard."""
        deadline = self.store.idle_deadline_us()
        if deadline is None:
            return None
        return EPOCH + timedelta(microseconds=deadline)

    def on_notify(self) -> tuple[Iterable[WindowItem], bool]:
        now = self.clock()
        deadline = self.store.idle_deadline_us()
        out: list[WindowItem] = []
        out.extend(self._closed(self.store.close_idle(now)))
        telemetry.window_batch(None, out, 0)
        # Past its timeout the shard is idle: it holds no window back until
        # events come again.
        self._progress(out, idle=deadline is not None and now >= deadline)
        return out, StatefulLogic.RETAIN

    def _progress(self, out: list[WindowItem], idle: bool) -> None:
        """Tell the correlator how far this shard got (see `ShardProgress`).

        Sent when windows closed or the shard's state changed; an idle or
        finished shard reports None, so that no window waits for it.
        """
        if self.shard is None:
            return
        counts = Counter(
            r.window_end for r in out if isinstance(r, KpiRecord) and not r.restated
        )
        through = None if idle else self.store.closed_through() or EPOCH
        if counts or through != self._reported:
            self._reported = through
            out.append(ShardProgress(self.shard, through, dict(counts)))

    def _usable(self, message: RawMessage, out: list[WindowItem]) -> bytes | None:
        """The message's value, unless it is a tombstone or too large."""
        data = message.value
        if data is None:
            self.tombstones += 1
            return None
        too_large = oversized(data, self.limits)
        if too_large is not None:
            out.append(self._letter(message, too_large))
            return None
        self._received(message)
        return data

    def _received(self, message: RawMessage) -> None:
        # Kept up to date message by message, so that a window this message
        # closes is judged by the receive time that closed it.
        received = message.timestamp_ms
        if received is not None:
            store = self.store
            if store.received_us is None or received * 1000 > store.received_us:
                store.received_us = received * 1000

    def _decoded(
        self, batch: RawBatch, decoder: Decoder | None, out: list[WindowItem]
    ) -> None:
        for message in batch.messages:
            data = self._usable(message, out)
            if data is None:
                continue
            if decoder is None:
                out.append(self._letter(message, _unknown_format(batch.format)))
                continue
            events, rejections = decode_with(decoder, data, batch.format)
            out.extend(self._letters(rejections, message))
            self._add_events(events, message, out)

    def _add_events(
        self, events: list[Event], message: RawMessage, out: list[WindowItem]
    ) -> None:
        capped: list[str] = []
        for event in events:
            sample = sample_of(event)
            if self._skewed(sample[0], message):
                out.append(self._quarantine(sample, message, event.event_id))
                continue
            taken = self.store.add(event)
            if isinstance(taken, Late):
                out.append(
                    self._late(
                        taken.event, taken.window_start, taken.watermark, message
                    )
                )
            elif isinstance(taken, Refused):
                capped.append(taken.detail)
        if capped:
            out.append(self._capped(message, capped))

    def _scanned(
        self,
        messages: Sequence[RawMessage],
        fmt: str,
        decoder: SampleDecoder,
        out: list[WindowItem],
    ) -> None:
        """Formats that hand over samples (OTLP): a message's samples at once.

        A message carries many samples and no event is made of them; a late
        or quarantined one is reported from its sample, and the samples a
        cap refused make one dead letter of their message.
        """
        spec = self.store.spec
        for message in messages:
            data = self._usable(message, out)
            if data is None:
                continue
            samples, rejections = scan_with(decoder, data, fmt)
            out.extend(self._letters(rejections, message))
            samples = self._unskewed(samples, message, out)
            for position, index, watermark_us in self.store.add_samples(samples):
                watermark = EPOCH + timedelta(microseconds=watermark_us)
                start = spec.start(index)
                late = self._late_sample(samples[position], start, watermark, message)
                out.append(late)
            if self.store.refused:
                refused = [d for _, _, d in self.store.refused]
                out.append(self._capped(message, refused))

    def _unskewed(
        self, samples: list[Sample], message: RawMessage, out: list[WindowItem]
    ) -> list[Sample]:
        if message.timestamp_ms is None or not self._skew.checked:
            return samples
        kept = []
        for sample in samples:
            if self._skewed(sample[0], message):
                out.append(self._quarantine(sample, message))
            else:
                kept.append(sample)
        return kept

    def _native(self, messages: Sequence[RawMessage], out: list[WindowItem]) -> None:
        """Native events: the native scanner where it can take them, else
        the fast decoder, else the pydantic model if unusual."""
        batch = _NativeBatch(self)
        if self._scanner is None:
            late = self.store.add_samples(batch.samples(messages))
            batch.refused.extend(self.store.refused)
        else:
            late = self._scan(messages, batch, self._scanner)
        out.extend(batch.rejected(late, self.store.spec))

    def _scan(
        self,
        messages: Sequence[RawMessage],
        batch: _NativeBatch,
        scanner: NativeScanner,
    ) -> list[LateSample]:
        """The scanner takes what it can; each message it stops at goes the
        Python way, and the scanner goes on after it."""
        store = self.store
        values = [m.value for m in messages]
        stamps = [m.timestamp_ms for m in messages]
        skew = self._skew.bounds()
        bound = self.limits.max_message_bytes
        late: list[LateSample] = []
        at = 0
        while at < len(messages):
            stop, events = scanner.take(values, stamps, at, skew, bound)
            if events:
                batch.skip(events)
                at = stop
            if at == len(messages):
                break
            # What the scanner handed back, up to where it stopped.
            offset = batch.position
            rest = batch.samples(messages[at : stop + 1])
            late.extend(store.add_samples(rest, offset))
            batch.refused.extend(store.refused)
            at = stop + 1
        return late

    def _skewed(self, t_us: int, message: RawMessage) -> bool:
        received = message.timestamp_ms
        if received is None:
            return False
        return self._skew.beyond(t_us - received * 1000)

    def _quarantine(
        self, sample: Sample, message: RawMessage, event_id: str | None = None
    ) -> LateEvent:
        """The record of an event kept out for clock skew; counted here."""
        self.quarantined += 1
        assert message.timestamp_ms is not None
        received = EPOCH + timedelta(milliseconds=message.timestamp_ms)
        t_us, _, service, _, _ = sample
        event_time = EPOCH + timedelta(microseconds=t_us)
        spec = self.store.spec
        self._log.line(
            logging.WARNING,
            "clock_skew",
            "clock skew service=%s event_time=%s received=%s skew_s=%.0f "
            "topic=%s partition=%s offset=%s",
            service,
            event_time,
            received,
            (event_time - received).total_seconds(),
            message.topic,
            message.partition,
            message.offset,
        )
        return _late_record(
            sample,
            spec.start(spec.first_index_us(t_us)),
            self.store.watermark or received,
            message,
            event_id,
            received_at=received,
        )

    def _late(
        self,
        event: Event,
        window_start: datetime,
        watermark: datetime,
        message: RawMessage,
    ) -> LateEvent:
        sample = sample_of(event)
        return self._late_sample(
            sample, window_start, watermark, message, event.event_id
        )

    def _late_sample(
        self,
        sample: Sample,
        window_start: datetime,
        watermark: datetime,
        message: RawMessage,
        event_id: str | None = None,
    ) -> LateEvent:
        """The record of an event that came after its window closed; logged."""
        self._log.line(
            logging.WARNING,
            "late",
            "late event service=%s window=%s watermark=%s "
            "topic=%s partition=%s offset=%s",
            sample[2],
            window_start,
            watermark,
            message.topic,
            message.partition,
            message.offset,
        )
        return _late_record(sample, window_start, watermark, message, event_id)

    def _closed(self, records: list[KpiRecord]) -> list[KpiRecord]:
        if self.on_window_closed is not None and records:
            for start in sorted({r.window_start for r in records}):
                self.on_window_closed(start)
        return records

    def _letters(
        self, rejections: list[Rejection], message: RawMessage
    ) -> list[DeadLetter]:
        """The dead letters of a message's rejections; the others are counted.

        Past `limits.max_event_letters` refused events, the rest of them
        share one letter of the whole message, whose detail counts them.
        """
        letters: list[DeadLetter] = []
        cap = self.limits.max_event_letters
        events = 0
        unlettered: Counter[str] = Counter()
        for rejection in rejections:
            if rejection.scope == "event":
                events += 1
                if events > cap:
                    unlettered[rejection.reason] += 1
                    continue
            if rejection.scope in ("message", "event"):
                letters.append(self._letter(message, rejection))
            else:
                self._noted(rejection, message)
        if unlettered:
            letters.append(self._letter(message, _too_many(events, cap, unlettered)))
        return letters

    def _noted(self, rejection: Rejection, message: RawMessage) -> None:
        """Log and count a refusal that makes no dead letter."""
        # Exclusions are expected traffic (bots), not data at risk.
        level = logging.WARNING
        if rejection.scope == "excluded":
            self.excluded[rejection.reason] += 1
            level = logging.DEBUG
        self._log.line(
            level,
            rejection.reason,
            "%s rejected reason=%s field=%s topic=%s partition=%s offset=%s",
            rejection.scope,
            rejection.reason,
            rejection.field,
            message.topic,
            message.partition,
            message.offset,
        )

    def _letter(self, message: RawMessage, rejection: Rejection) -> DeadLetter:
        """The dead letter of one refusal, logged within the batch's lines."""
        # The store warned once for each capped service.
        capped = rejection.reason == SERIES_CAP
        self._log.line(
            logging.DEBUG if capped else logging.WARNING,
            rejection.reason,
            "dead letter reason=%s topic=%s partition=%s offset=%s",
            rejection.reason,
            message.topic,
            message.partition,
            message.offset,
        )
        return dead_letter_of(message, rejection, self.limits.dead_letter_bytes)

    def _capped(self, message: RawMessage, details: list[str]) -> DeadLetter:
        """The dead letter of a message whose events a series cap refused."""
        detail = details[0]
        if len(details) > 1:
            detail = f"{len(details)} events refused; the first: {detail}"
        return self._letter(message, Rejection(SERIES_CAP, detail))

    def on_eof(self) -> tuple[Iterable[WindowItem], bool]:
        # Stopped by a signal, the input has not ended: open windows are
        # partial and wait in the snapshot for a restart.
        if shutdown.requested():
            return [], StatefulLogic.RETAIN
        self.store.now_us = self.clock()
        out: list[WindowItem] = []
        out.extend(self._closed(self.store.close_all()))
        telemetry.window_batch(None, out, 0)
        self._progress(out, idle=True)
        return out, StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        # Empty when nothing will read it back: a flow without recovery.
        if not self.keep_state:
            return b""
        state = {"shard": self.shard, "store": self.store.state()}
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, state: dict[str, object]) -> None:
        """Take back what `snapshot` kept."""
        self.store.restore(state["store"])  # type: ignore[arg-type]
        self.shard = state["shard"]  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class _SkewBounds:
    """How far (in microseconds) an event time may lead or trail its receipt.

    Kept as integers, with an unreachable bound for "not checked", so that
    the check costs two comparisons per event.
    """

    ahead_us: int
    behind_us: int

    @classmethod
    def of(cls, limits: InputLimits) -> _SkewBounds:
        def bound(seconds: float | None) -> int:
            return _UNCHECKED if seconds is None else round(seconds * 1_000_000)

        return cls(bound(limits.max_ahead_s), bound(limits.max_behind_s))

    @property
    def checked(self) -> bool:
        return self.ahead_us != _UNCHECKED or self.behind_us != _UNCHECKED

    def bounds(self) -> tuple[int | None, int | None]:
        """(ahead, behind) with None for "not checked"."""
        ahead = None if self.ahead_us == _UNCHECKED else self.ahead_us
        behind = None if self.behind_us == _UNCHECKED else self.behind_us
        return ahead, behind

    def beyond(self, lead_us: int) -> bool:
        return lead_us > self.ahead_us or -lead_us > self.behind_us


# Further than any event time can be from a receive time.
_UNCHECKED = 1 << 80
_TIME = itemgetter(0)
# Lines about refused or late input logged one by one per batch, at each level.
_LINES_PER_BATCH = 5


class _BatchLog:
    """Lines about refused and late input, a bounded number per batch and level.

    The first `_LINES_PER_BATCH` lines of a level are logged as they come,
    with where the input was; the rest are counted by reason and summed up
    in one line of that level when the batch ends. One hostile message can
    refuse a hundred thousand events; the log gets a handful of lines for
    it, while the metrics still count every dead letter.
    """

    def __init__(self) -> None:
        self._lines: Counter[int] = Counter()
        self._unlogged: defaultdict[int, Counter[str]] = defaultdict(Counter)

    def line(self, level: int, reason: str, message: str, *args: object) -> None:
        if self._lines[level] < _LINES_PER_BATCH:
            self._lines[level] += 1
            log.log(level, message, *args)
        else:
            self._unlogged[level][reason] += 1

    def end(self) -> None:
        """Sum up what the batch did not log line by line, and start afresh."""
        for level, reasons in sorted(self._unlogged.items()):
            log.log(
                level,
                "more input refused or late in this batch, not logged one by "
                "one count=%s reasons=%s",
                sum(reasons.values()),
                dict(sorted(reasons.items())),
            )
        self._lines.clear()
        self._unlogged.clear()


class _NativeBatch:
    """One batch of native messages on its way into the window store.

    The samples of the whole batch are gathered into one list, message by
    message, so that the per-event work is the decoder's and the store's
    alone. Where each sample came from is kept per message, not per
    sample, and looked up only for the few samples that need it afterwards:
    dead letters, late and quarantined events.
    """

    def __init__(self, logic: WindowLogic) -> None:
        self._logic = logic
        # Per message that gave samples: the message and its first sample's
        # position. By that message's index, when some of its events were
        # held back: the place in the message of each sample it gave; when
        # the model decoded it: its events.
        self._origins: list[RawMessage] = []
        self._starts: list[int] = []
        self._places: dict[int, list[int]] = {}
        self._events: dict[int, list[Event]] = {}
        # The position the next message's first sample takes.
        self._next = 0
        self._letters: list[tuple[int, int, WindowItem]] = []
        # (position, sample, message, its event when the model made one, or
        # its place in the message when the fast decoder did)
        self._skewed: list[tuple[int, Sample, RawMessage, Event | int]] = []
        # Samples the store's caps refused, by position.
        self.refused: list[RefusedSample] = []

    def samples(self, messages: Iterable[RawMessage]) -> Iterable[Sample]:
        """The sample of every usable event, in input order.

        Gathered into one list, unless windows are judged by receive time:
        then the store takes them message by message, so that a window
        closed by a message is judged by that message's receive time.
        """
        parts = self._parts(messages)
        if self._logic._tracks_receipt:
            return (sample for part in parts for sample in part)
        gathered: list[Sample] = []
        for part in parts:
            gathered.extend(part)
        return gathered

    def _parts(self, messages: Iterable[RawMessage]) -> Iterator[list[Sample]]:
        """The samples of each message that has any, in input order."""
        logic, origins, starts = self._logic, self._origins, self._starts
        bound = logic.limits.max_message_bytes or _UNCHECKED
        # Receive times matter only to a skew bound or a receive-time
        # backfill clock; without either, no event pays for them.
        watch = logic._skew.checked or logic._tracks_receipt
        for message in messages:
            data = message.value
            if data is None:
                logic.tombstones += 1
                continue
            if len(data) > bound:
                self._refuse(message, data, self._next)
                continue
            scanned = scan_native(data)
            if scanned is None:
                scanned = self._slowly(message, data)
            elif watch and message.timestamp_ms is not None:
                scanned = self._received(scanned, message)
            else:
                # `_add`, written out: this runs once per message.
                origins.append(message)
                starts.append(self._next)
                self._next += len(scanned)
            if scanned:
                yield scanned

    def _add(self, message: RawMessage, size: int) -> int:
        """Note where a message's samples start; return its index."""
        self._origins.append(message)
        self._starts.append(self._next)
        self._next += size
        return len(self._origins) - 1

    def _origin_of(self, position: int) -> tuple[int, int]:
        """The index of the message that gave a sample position, and the
        sample's place among that message's samples."""
        at = bisect_right(self._starts, position) - 1
        return at, position - self._starts[at]

    def _received(self, samples: list[Sample], message: RawMessage) -> list[Sample]:
        """The samples not quarantined for clock skew; notes the receipt."""
        logic = self._logic
        if logic._tracks_receipt:
            logic._received(message)
        received_us = (message.timestamp_ms or 0) * 1000
        skew = logic._skew
        # Usually every event is within bounds: two comparisons say so.
        if len(samples) == 1:
            latest = earliest = samples[0][0]
        else:
            stamps = list(map(_TIME, samples))
            latest, earliest = max(stamps), min(stamps)
        if (
            latest - received_us <= skew.ahead_us
            and received_us - earliest <= skew.behind_us
        ):
            self._add(message, len(samples))
            return samples
        kept: list[Sample] = []
        places: list[int] = []
        for element, sample in enumerate(samples):
            if skew.beyond(sample[0] - received_us):
                position = self._next + len(kept)
                self._skewed.append((position, sample, message, element))
            else:
                kept.append(sample)
                places.append(element)
        if kept:
            self._places[self._add(message, len(kept))] = places
        return kept

    def _refuse(self, message: RawMessage, data: bytes, position: int) -> None:
        rejection = oversized(data, self._logic.limits)
        assert rejection is not None
        self._letters.append((position, 0, self._logic._letter(message, rejection)))

    def _slowly(self, message: RawMessage, data: bytes) -> list[Sample]:
        # The model decides, so that a dead letter keeps its exact reason.
        events, rejections = decode_native(data)
        for letter in self._logic._letters(rejections, message):
            self._letters.append((self._next, 0, letter))
        kept: list[Event] = []
        samples: list[Sample] = []
        for event in events:
            sample = sample_of(event)
            if not self._held(sample, message, event, self._next + len(kept)):
                kept.append(event)
                samples.append(sample)
        if kept:
            self._events[self._add(message, len(kept))] = kept
        return samples

    def _held(
        self, sample: Sample, message: RawMessage, event: Event, position: int
    ) -> bool:
        """Whether the sample is quarantined for clock skew; notes its receipt."""
        logic = self._logic
        if logic._tracks_receipt:
            logic._received(message)
        if not logic._skewed(sample[0], message):
            return False
        self._skewed.append((position, sample, message, event))
        return True

    def _event(self, position: int) -> tuple[RawMessage, Event]:
        """The message of the sample at a position, and its event."""
        at, place = self._origin_of(position)
        message = self._origins[at]
        if at in self._events:
            return message, self._events[at][place]
        element = self._places[at][place] if at in self._places else place
        return message, _event_of(message, element)

    @property
    def position(self) -> int:
        """The position the next message's first sample takes."""
        return self._next

    def skip(self, events: int) -> None:
        """Count events placed without samples (the native scanner's)."""
        self._next += events

    def rejected(self, late: list[LateSample], spec: WindowSpec) -> list[WindowItem]:
        """Dead letters, late and quarantined events in input order.

        At one position, what was refused before reaching the store comes
        first.
        """
        items = self._letters
        for position, sample, message, found in self._skewed:
            event = found if isinstance(found, Event) else _event_of(message, found)
            quarantined = self._logic._quarantine(sample, message, event.event_id)
            items.append((position, 0, quarantined))
        for position, index, watermark_us in late:
            message, event = self._event(position)
            watermark = EPOCH + timedelta(microseconds=watermark_us)
            late_event = self._logic._late(event, spec.start(index), watermark, message)
            items.append((position, 1, late_event))
        for position, _, detail in self.refused:
            message = self._origins[self._origin_of(position)[0]]
            items.append((position, 1, self._logic._capped(message, [detail])))
        items.sort(key=lambda item: item[:2])
        return [item for _, _, item in items]


def _event_of(message: RawMessage, element: int) -> Event:
    """The model of one event the fast decoder took (late or quarantined).

    The model accepts whatever the fast decoder did. Of a batch, only the
    event asked for is validated: a late event in a batch of hundreds
    should not cost hundreds of validations.
    """
    data = message.value or b""
    document = msgspec.json.decode(data)
    if isinstance(document, list):
        return EVENT_ADAPTER.validate_python(document[element])
    return EVENT_ADAPTER.validate_json(data)


def _too_many(refused: int, lettered: int, unlettered: Counter[str]) -> Rejection:
    """The refusal of a message's events beyond those with letters of their own."""
    reasons = ", ".join(f"{r}={n}" for r, n in sorted(unlettered.items()))
    return Rejection(
        "too_many_refused",
        f"{refused} events of the message were refused: the first {lettered} "
        f"have dead letters of their own, the other {refused - lettered} "
        f"({reasons}) only this letter of the whole message; fix the "
        "producer, then send the message again",
    )


def _unknown_format(name: str) -> Rejection:
    return Rejection(
        "unknown_format",
        f"no decoder for format {name!r} in this flow; name the topic's format "
        "in kafka.formats",
    )


def _late_record(
    sample: Sample,
    window_start: datetime,
    watermark: datetime,
    message: RawMessage,
    event_id: str | None,
    received_at: datetime | None = None,
) -> LateEvent:
    """A `LateEvent`: late, or quarantined for clock skew when `received_at`
    (the receive time it was judged against) is given."""
    t_us, layer, service, kind, _ = sample
    event_time = EPOCH + timedelta(microseconds=t_us)
    return LateEvent(
        layer=layer,
        service=service,
        kind=kind,
        event_time=event_time,
        window_start=window_start,
        watermark=watermark,
        event_id=event_id,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        lateness_s=max(0.0, (watermark - event_time).total_seconds()),
        reason="late" if received_at is None else "clock_skew",
        received_at=received_at,
    )


class DetectLogic(StatefulLogic[KpiRecord, KpiScore, bytes]):
    """Scores, then learns, each closed window of one KPI series."""

    # Set by the flow: whether snapshots are kept (recovery is on).
    keep_state: bool = True

    def __init__(
        self,
        detector: Detector | None,
        threshold: float,
        new_detector: Callable[[str, str], Detector],
        kpi_of: Callable[[str], Kpi | None] = lambda name: None,
    ) -> None:
        self.detector = detector
        self.threshold = threshold
        self.new_detector = new_detector
        self.kpi_of = kpi_of
        # Failures of this series' detector so far: the first is an ERROR.
        self._failures = 0

    def on_item(self, value: KpiRecord) -> tuple[Iterable[KpiScore], bool]:
        try:
            if self.detector is None:
                self.detector = self.new_detector(value.direction, value.kpi)
            kpi = self.kpi_of(value.kpi)
            return [score_window(self.detector, self.threshold, value, kpi)], False
        except Exception as error:
            # A detector that fails on a value (a plugin's, or one of River's
            # on an extreme value) costs that window its score, not the flow.
            name = getattr(self.detector, "name", "?")
            self._failures += 1
            # The first failure of a series with its traceback, then one
            # line every hundred, so that a series failing each window is
            # neither silent nor flooding.
            if self._failures == 1 or self._failures % 100 == 0:
                log.error(
                    "detector %s failed on %s/%s %s at %s (failure %d of this "
                    "series), left unscored: %s: %s",
                    name,
                    value.layer.value,
                    value.service,
                    value.kpi,
                    value.window_start.isoformat(),
                    self._failures,
                    type(error).__name__,
                    error,
                    exc_info=error if self._failures == 1 else None,
                )
            return [unscored(name, value)], False

    def snapshot(self) -> bytes:
        # Empty when nothing will read it back: a flow without recovery.
        if not self.keep_state:
            return b""
        return pickle.dumps(self.detector, protocol=pickle.HIGHEST_PROTOCOL)


def unscored(detector: str, record: KpiRecord) -> KpiScore:
    """A KPI window passed on without a score (state "skipped")."""
    return KpiScore(
        kpi=record,
        detector=detector,
        score=None,
        expected=None,
        side=0,
        detector_state="skipped",
        anomalous=False,
    )


def score_window(
    detector: Detector, threshold: float, record: KpiRecord, kpi: Kpi | None = None
) -> KpiScore:
    """Judge one KPI window; windows without a value never reach the model.

    A value counts as anomalous only on the side where the KPI hurts: a drop
    in latency is good news, not an alert. A window past the KPI's static
    objective is anomalous whatever the detector says, and scores 1. A
    restated window is a correction of one the model has learned already:
    it is passed on unjudged, so that it is neither learned twice nor paged.
    A breakdown (the crash rate of one app version) is passed on unjudged
    too, see `foreshock.version_kpis`.
    """
    if record.value is None or record.restated or is_breakdown(record.kpi):
        return unscored(detector.name, record)

    score = detector.score_one(record.value, record.window_start)
    detector.learn_one(record.value, record.window_start)

    harmful = (
        record.direction == "both"
        or (record.direction == "up" and score.side > 0)
        or (record.direction == "down" and score.side < 0)
    )
    breached = kpi is not None and kpi.breaches(record.value)
    return KpiScore(
        kpi=record,
        detector=detector.name,
        score=1.0 if breached else score.value,
        expected=score.expected,
        side=(1 if record.direction == "up" else -1) if breached else score.side,
        detector_state=score.state,
        anomalous=breached
        or (harmful and score.side != 0 and score.value >= threshold),
        objective=kpi.objective if breached and kpi is not None else None,
    )


CorrelateItem = KpiScore | Change | Feedback | ShardProgress


class CorrelateLogic(StatefulBatchLogic[CorrelateItem, Output, bytes]):
    """Feeds every scored window, and every change, to the correlator.

    The detector step hands on a batch's scores grouped by series, so a batch
    that closed several windows arrives out of window order; sorting the batch
    by time puts it back before the correlator judges any window, with each
    change before the windows that end after it. Feedback from on-call
    engineers is taken first: it holds from the time it was given.
    """

    # Set by the flow: whether snapshots are kept (recovery is on).
    keep_state: bool = True

    def __init__(self, correlator: Correlator) -> None:
        self.correlator = correlator

    def on_batch(self, values: list[CorrelateItem]) -> tuple[Iterable[Output], bool]:
        out: list[Output] = []
        timed: list[KpiScore | Change] = []
        progress: list[ShardProgress] = []
        for value in values:
            if isinstance(value, Feedback):
                self.correlator.suppressions.add(value)
            elif isinstance(value, ShardProgress):
                progress.append(value)
            else:
                timed.append(value)
        for item in sorted(timed, key=_time_of):
            if isinstance(item, Change):
                self.correlator.observe_change(item)
            else:
                out += self.correlator.observe(item)
        # Progress last: the batch's scores are all in before it completes
        # any window.
        for report in progress:
            out += self.correlator.observe_progress(report)
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Output], bool]:
        # Stopped by a signal: pending windows wait for a restart's scores.
        if shutdown.requested():
            return [], StatefulBatchLogic.RETAIN
        return self.correlator.flush(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        # Empty when nothing will read it back: a flow without recovery.
        if not self.keep_state:
            return b""
        return pickle.dumps(self.correlator, protocol=pickle.HIGHEST_PROTOCOL)


def _time_of(item: KpiScore | Change) -> datetime:
    return item.time if isinstance(item, Change) else item.kpi.window_end
