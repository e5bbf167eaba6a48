"""The stateful steps of the main dataflow, each a thin shell over core logic.

Bytewax snapshots the state of every key a step touched at each epoch, so
state is handed over as pickled bytes: far cheaper than the deep copy the
built-in operators make.
"""

from __future__ import annotations

import logging
import pickle
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta

from bytewax.operators import StatefulBatchLogic, StatefulLogic

from connectors.messages import RawBatch, RawMessage
from foreshock import telemetry
from foreshock.correlation import Correlator, Output
from foreshock.decode import (
    Decoder,
    Rejection,
    SampleDecoder,
    decode_native,
    to_dead_letter,
)
from foreshock.feedback import Feedback
from foreshock.kpis import Kpi
from foreshock.native_scan import scan_native
from foreshock.records import Change, DeadLetter, KpiRecord, KpiScore, LateEvent
from foreshock.schema import Event
from foreshock.windows import (
    EPOCH,
    LateSample,
    Sample,
    WindowSpec,
    WindowStore,
    sample_of,
)
from models import Detector

__all__ = ["CorrelateLogic", "DetectLogic", "WindowLogic"]

log = logging.getLogger(__name__)

WindowItem = KpiRecord | DeadLetter | LateEvent


class WindowLogic(StatefulLogic[RawBatch, WindowItem, bytes]):
    """Decodes the batches of one shard and keeps its event-time windows.

    Each batch is decoded by the decoder of its format. A message refused
    whole becomes a dead letter; a dropped measurement is already counted by
    the window (the event carries it as NaN); a message excluded on purpose,
    such as a bot's page view, is counted in `excluded` by reason.
    """

    def __init__(
        self,
        store: WindowStore,
        decoders: Mapping[str, Decoder] | None = None,
        on_window_closed: Callable[[datetime], None] | None = None,
    ) -> None:
        self.store = store
        self.on_window_closed = on_window_closed
        self.decoders = dict(decoders or {"native": decode_native})
        self.tombstones = 0
        self.excluded: Counter[str] = Counter()

    def on_item(self, value: RawBatch) -> tuple[Iterable[WindowItem], bool]:
        out: list[WindowItem] = []
        store = self.store
        tombstones = self.tombstones
        decoder = self.decoders.get(value.format)
        if decoder is decode_native:
            self._native(value.messages, out)
        elif isinstance(decoder, SampleDecoder):
            self._scanned(value.messages, decoder, out)
        else:
            self._decoded(value, decoder, out)
        out.extend(self._closed(store.close_ready()))
        telemetry.window_batch(value, out, self.tombstones - tombstones)
        return out, StatefulLogic.RETAIN

    def _decoded(
        self, batch: RawBatch, decoder: Decoder | None, out: list[WindowItem]
    ) -> None:
        store = self.store
        for message in batch.messages:
            if message.value is None:
                self.tombstones += 1
                continue
            if decoder is None:
                out.append(to_dead_letter(message, _unknown_format(batch.format)))
                continue
            events, rejections = decoder(message.value)
            for rejection in rejections:
                letter = self._reject(rejection, message)
                if letter is not None:
                    out.append(letter)
            for event in events:
                late = store.add(event)
                if late is not None:
                    out.append(
                        _late(late.event, late.window_start, late.watermark, message)
                    )

    def _scanned(
        self,
        messages: Sequence[RawMessage],
        decoder: SampleDecoder,
        out: list[WindowItem],
    ) -> None:
        """Formats that hand over samples (OTLP): a message's samples at once.

        A message carries many samples and no event is made of them; a late
        one is reported from its sample.
        """
        spec = self.store.spec
        for message in messages:
            if message.value is None:
                self.tombstones += 1
                continue
            samples, rejections = decoder.scan(message.value)
            for rejection in rejections:
                letter = self._reject(rejection, message)
                if letter is not None:
                    out.append(letter)
            for position, index, watermark_us in self.store.add_samples(samples):
                watermark = EPOCH + timedelta(microseconds=watermark_us)
                start = spec.start(index)
                out.append(_late_sample(samples[position], start, watermark, message))

    def _native(self, messages: Sequence[RawMessage], out: list[WindowItem]) -> None:
        """Native events: the fast decoder first, the pydantic model if unusual."""
        batch = _NativeBatch(self)
        late = self.store.add_samples(batch.samples(messages))
        out.extend(batch.rejected(late, self.store.spec))

    def _closed(self, records: list[KpiRecord]) -> list[KpiRecord]:
        if self.on_window_closed is not None and records:
            for start in sorted({r.window_start for r in records}):
                self.on_window_closed(start)
        return records

    def _reject(self, rejection: Rejection, message: RawMessage) -> DeadLetter | None:
        """The dead letter of a message refused whole; else log and count."""
        if rejection.scope == "message":
            return to_dead_letter(message, rejection)
        # Exclusions are expected traffic (bots), not data at risk.
        level = logging.WARNING
        if rejection.scope == "excluded":
            self.excluded[rejection.reason] += 1
            level = logging.DEBUG
        log.log(
            level,
            "%s rejected reason=%s field=%s topic=%s partition=%s offset=%s",
            rejection.scope,
            rejection.reason,
            rejection.field,
            message.topic,
            message.partition,
            message.offset,
        )
        return None

    def on_eof(self) -> tuple[Iterable[WindowItem], bool]:
        closed = self._closed(self.store.close_all())
        telemetry.window_batch(None, closed, 0)
        return closed, StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.store.state(), protocol=pickle.HIGHEST_PROTOCOL)


class _NativeBatch:
    """One batch of native messages on its way into the window store.

    Samples are made one at a time as the store takes them, so that none
    outlives its step: a batch's worth of live tuples got promoted by the
    garbage collector and made it sweep the whole heap. What a dead letter
    or a late event needs afterwards is kept aside, by sample position.
    """

    def __init__(self, logic: WindowLogic) -> None:
        self._logic = logic
        self._origins: list[RawMessage] = []
        self._slow: dict[int, Event] = {}
        self._letters: list[tuple[int, int, WindowItem]] = []

    def samples(self, messages: Iterable[RawMessage]) -> Iterator[Sample]:
        """The sample of every usable event, in input order (runs per event)."""
        origins = self._origins
        for message in messages:
            data = message.value
            if data is None:
                self._logic.tombstones += 1
                continue
            sample = scan_native(data)
            if sample is None:
                yield from self._slowly(message, data)
                continue
            origins.append(message)
            yield sample

    def _slowly(self, message: RawMessage, data: bytes) -> Iterator[Sample]:
        # The model decides, so that a dead letter keeps its exact reason.
        events, rejections = decode_native(data)
        for rejection in rejections:
            letter = self._logic._reject(rejection, message)
            if letter is not None:
                self._letters.append((len(self._origins), 0, letter))
        for event in events:
            self._slow[len(self._origins)] = event
            self._origins.append(message)
            yield sample_of(event)

    def rejected(self, late: list[LateSample], spec: WindowSpec) -> list[WindowItem]:
        """Dead letters and late events in input order, letters first at ties."""
        items = self._letters
        for position, index, watermark_us in late:
            message = self._origins[position]
            event = self._slow.get(position) or _event_of(message)
            watermark = EPOCH + timedelta(microseconds=watermark_us)
            late_event = _late(event, spec.start(index), watermark, message)
            items.append((position, 1, late_event))
        items.sort(key=lambda item: item[:2])
        return [item for _, _, item in items]


def _event_of(message: RawMessage) -> Event:
    # Only for a late event: the fast decoder made no model of it, and the
    # model accepts whatever the fast decoder did.
    events, _ = decode_native(message.value or b"")
    return events[0]


def _unknown_format(name: str) -> Rejection:
    return Rejection(
        "unknown_format",
        f"no decoder for format {name!r} in this flow; name the topic's format "
        "in kafka.formats",
    )


def _late(
    event: Event, window_start: datetime, watermark: datetime, message: RawMessage
) -> LateEvent:
    sample = sample_of(event)
    return _late_sample(sample, window_start, watermark, message, event.event_id)


def _late_sample(
    sample: Sample,
    window_start: datetime,
    watermark: datetime,
    message: RawMessage,
    event_id: str | None = None,
) -> LateEvent:
    t_us, layer, service, kind, _ = sample
    event_time = EPOCH + timedelta(microseconds=t_us)
    log.warning(
        "late event service=%s window=%s watermark=%s topic=%s partition=%s offset=%s",
        service,
        window_start,
        watermark,
        message.topic,
        message.partition,
        message.offset,
    )
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
    )


class DetectLogic(StatefulLogic[KpiRecord, KpiScore, bytes]):
    """Scores, then learns, each closed window of one KPI series."""

    def __init__(
        self,
        detector: Detector | None,
        threshold: float,
        new_detector: Callable[[str], Detector],
        kpi_of: Callable[[str], Kpi | None] = lambda name: None,
    ) -> None:
        self.detector = detector
        self.threshold = threshold
        self.new_detector = new_detector
        self.kpi_of = kpi_of

    def on_item(self, value: KpiRecord) -> tuple[Iterable[KpiScore], bool]:
        if self.detector is None:
            self.detector = self.new_detector(value.direction)
        kpi = self.kpi_of(value.kpi)
        return [score_window(self.detector, self.threshold, value, kpi)], False

    def snapshot(self) -> bytes:
        return pickle.dumps(self.detector, protocol=pickle.HIGHEST_PROTOCOL)


def score_window(
    detector: Detector, threshold: float, record: KpiRecord, kpi: Kpi | None = None
) -> KpiScore:
    """Judge one KPI window; windows without a value never reach the model.

    A value counts as anomalous only on the side where the KPI hurts: a drop
    in latency is good news, not an alert. A window past the KPI's static
    objective is anomalous whatever the detector says, and scores 1.
    """
    if record.value is None:
        return KpiScore(
            kpi=record,
            detector=detector.name,
            score=None,
            expected=None,
            side=0,
            detector_state="skipped",
            anomalous=False,
        )

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


class CorrelateLogic(StatefulBatchLogic[KpiScore | Change | Feedback, Output, bytes]):
    """Feeds every scored window, and every change, to the correlator.

    The detector step hands on a batch's scores grouped by series, so a batch
    that closed several windows arrives out of window order; sorting the batch
    by time puts it back before the correlator judges any window, with each
    change before the windows that end after it. Feedback from on-call
    engineers is taken first: it holds from the time it was given.
    """

    def __init__(self, correlator: Correlator) -> None:
        self.correlator = correlator

    def on_batch(
        self, values: list[KpiScore | Change | Feedback]
    ) -> tuple[Iterable[Output], bool]:
        out: list[Output] = []
        timed: list[KpiScore | Change] = []
        for value in values:
            if isinstance(value, Feedback):
                self.correlator.suppressions.add(value)
            else:
                timed.append(value)
        for item in sorted(timed, key=_time_of):
            if isinstance(item, Change):
                self.correlator.observe_change(item)
            else:
                out += self.correlator.observe(item)
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Output], bool]:
        return self.correlator.flush(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.correlator, protocol=pickle.HIGHEST_PROTOCOL)


def _time_of(item: KpiScore | Change) -> datetime:
    return item.time if isinstance(item, Change) else item.kpi.window_end
