"""The stateful steps of the main dataflow, each a thin shell over core logic.

Bytewax snapshots the state of every key a step touched at each epoch, so
state is handed over as pickled bytes: far cheaper than the deep copy the
built-in operators make.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable
from datetime import datetime

from bytewax.operators import StatefulLogic

from connectors.messages import RawBatch, RawMessage
from foreshock.correlation import Correlator, Output
from foreshock.decode import Tombstone, decode
from foreshock.records import DeadLetter, KpiRecord, KpiScore, LateEvent
from foreshock.schema import Event
from foreshock.windows import WindowStore
from models import Detector

__all__ = ["CorrelateLogic", "DetectLogic", "WindowLogic"]

log = logging.getLogger(__name__)

WindowItem = KpiRecord | DeadLetter | LateEvent


class WindowLogic(StatefulLogic[RawBatch, WindowItem, bytes]):
    """Decodes the batches of one shard and keeps its event-time windows."""

    def __init__(self, store: WindowStore) -> None:
        self.store = store
        self.tombstones = 0

    def on_item(self, value: RawBatch) -> tuple[Iterable[WindowItem], bool]:
        out: list[WindowItem] = []
        store = self.store
        for message in value.messages:
            decoded = decode(message)
            if isinstance(decoded, Tombstone):
                self.tombstones += 1
                continue
            if isinstance(decoded, DeadLetter):
                out.append(decoded)
                continue
            late = store.add(decoded)
            if late is not None:
                out.append(
                    _late(late.event, late.window_start, late.watermark, message)
                )
        out.extend(store.close_ready())
        return out, StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[WindowItem], bool]:
        return list(self.store.close_all()), StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.store.state(), protocol=pickle.HIGHEST_PROTOCOL)


def _late(
    event: Event, window_start: datetime, watermark: datetime, message: RawMessage
) -> LateEvent:
    log.warning(
        "late event service=%s window=%s watermark=%s topic=%s partition=%s offset=%s",
        event.service,
        window_start,
        watermark,
        message.topic,
        message.partition,
        message.offset,
    )
    return LateEvent(
        layer=event.layer,
        service=event.service,
        kind=event.payload.kind,
        event_time=event.time,
        window_start=window_start,
        watermark=watermark,
        event_id=event.event_id,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        lateness_s=max(0.0, (watermark - event.time).total_seconds()),
    )


class DetectLogic(StatefulLogic[KpiRecord, KpiScore, bytes]):
    """Scores, then learns, each closed window of one KPI series."""

    def __init__(
        self,
        detector: Detector | None,
        threshold: float,
        new_detector: Callable[[str], Detector],
    ) -> None:
        self.detector = detector
        self.threshold = threshold
        self.new_detector = new_detector

    def on_item(self, value: KpiRecord) -> tuple[Iterable[KpiScore], bool]:
        if self.detector is None:
            self.detector = self.new_detector(value.direction)
        return [score_window(self.detector, self.threshold, value)], False

    def snapshot(self) -> bytes:
        return pickle.dumps(self.detector, protocol=pickle.HIGHEST_PROTOCOL)


def score_window(detector: Detector, threshold: float, record: KpiRecord) -> KpiScore:
    """Judge one KPI window; windows without a value never reach the model.

    A value counts as anomalous only on the side where the KPI hurts: a drop
    in latency is good news, not an alert.
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
    return KpiScore(
        kpi=record,
        detector=detector.name,
        score=score.value,
        expected=score.expected,
        side=score.side,
        detector_state=score.state,
        anomalous=harmful and score.side != 0 and score.value >= threshold,
    )


class CorrelateLogic(StatefulLogic[KpiScore, Output, bytes]):
    """Feeds every scored window to the correlator."""

    def __init__(self, correlator: Correlator) -> None:
        self.correlator = correlator

    def on_item(self, value: KpiScore) -> tuple[Iterable[Output], bool]:
        return self.correlator.observe(value), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Output], bool]:
        return self.correlator.flush(), StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.correlator, protocol=pickle.HIGHEST_PROTOCOL)
