"""The main dataflow: raw telemetry in; KPIs, anomalies and incidents out.

    read ─ RawBatch per source partition; change topics go to correlate
      └ window    decode, validate, aggregate per (layer, service, window);
                  closed windows become KPI records, bad input dead letters,
                  events of closed windows late events; each partition's
                  progress (`ShardProgress`) goes to correlate
          └ detect     one detector per KPI series, once per closed window
              └ correlate  incidents and early warnings across services,
                           a window once every partition has closed it

Every record any step produces goes to the one sink given, which routes it by
type (to Kafka topics, a console, a list in tests).
"""

from __future__ import annotations

import gc
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from connectors.messages import RawBatch
from flows.reports import ReportOutput, report_pages
from flows.steps import CorrelateLogic, DetectLogic, WindowItem, WindowLogic
from foreshock import telemetry
from foreshock.changes import CHANGE_FORMAT, read_change
from foreshock.config import DEFAULT_DETECTOR, DEFAULT_THRESHOLD
from foreshock.correlation import (
    CorrelationConfig,
    Correlator,
    Output,
    ShardProgress,
)
from foreshock.decode import Decoder, InputLimits, decode_native
from foreshock.feedback import Feedback, SuppressionBook, feedback_of_batch
from foreshock.kpis import DEFAULT_REGISTRY, KpiRegistry
from foreshock.records import (
    Anomaly,
    Change,
    DeadLetter,
    KpiRecord,
    KpiScore,
    LateEvent,
    Record,
)
from foreshock.topology import Topology
from foreshock.windows import WindowPolicy, WindowSpec, WindowStore
from models import Detector, make_detector

__all__ = [
    "FLOW_ID",
    "WINDOW_STEP",
    "FlowConfig",
    "Record",
    "build_flow",
    "tune_garbage_collector",
    "window_state_step",
]


# The dataflow's id, which names its steps' snapshots in a recovery store.
FLOW_ID = "foreshock"
# The window step, and the id under which Bytewax snapshots its state
# (`op.stateful` runs as a `stateful_batch` inside it).
WINDOW_STEP = "window"


def window_state_step(flow_id: str) -> str:
    """The step id of the window step's snapshots in flow `flow_id`."""
    return f"{flow_id}.{WINDOW_STEP}.stateful_batch"


@dataclass(frozen=True)
class FlowConfig:
    """What the dataflow needs besides its source and sink."""

    # Bytewax asks every stateful step for a snapshot of each key it touched
    # at every epoch, recovery or not. Without recovery nothing reads them:
    # False skips the work (pickling every detector touched, each epoch).
    snapshots: bool = True

    window: WindowSpec = field(default_factory=WindowSpec)
    forget_after_windows: int = 60
    # Idle timeout, backfill marking and caps of the window step; bounds on
    # its input messages (size, clock skew).
    window_policy: WindowPolicy = field(default_factory=WindowPolicy)
    input_limits: InputLimits = field(default_factory=InputLimits)
    registry: KpiRegistry = field(default_factory=lambda: DEFAULT_REGISTRY)
    detector: str = DEFAULT_DETECTOR
    # Detectors other than `detector` for the series of some KPIs, by name.
    detectors_by_kpi: Mapping[str, str] = field(default_factory=dict)
    threshold: float = DEFAULT_THRESHOLD
    topology: Topology = field(default_factory=Topology)
    correlation: CorrelationConfig = field(default_factory=CorrelationConfig)
    # Every shard (source partition) whose windows the correlator waits
    # for from the start, so that a process that starts late loses no
    # window of its shards; empty, shards are learned as they report.
    shards: frozenset[str] = frozenset()
    # The window step's state key of each source partition, one Bytewax
    # keeps where the partition is read (`flows.placement`); a partition
    # not named is keyed by its name.
    window_keys: Mapping[str, str] = field(default_factory=dict)
    # Format name -> decoder; each batch names its format (`RawBatch.format`).
    decoders: Mapping[str, Decoder] = field(
        default_factory=lambda: {"native": decode_native}
    )
    # Called with a window's start each time the window step emits its KPI
    # records; benchmarks time the way from there to the sink with it.
    on_window_closed: Callable[[datetime], None] | None = field(
        default=None, compare=False
    )

    def new_detector(self, direction: str, kpi: str = "") -> Detector:
        """A detector for a series of `kpi` whose bad side is `direction`."""
        return make_detector(self.detectors_by_kpi.get(kpi, self.detector), direction)


def build_flow(
    source: Source[RawBatch],
    sink: Sink[Any],
    config: FlowConfig,
    flow_id: str = FLOW_ID,
    encode: Callable[[Record], Any] | None = None,
    alerts: Sink[Output] | None = None,
    feedback: Source[RawBatch] | None = None,
    reports: ReportOutput | None = None,
) -> Dataflow:
    """The main dataflow from `source` to `sink`.

    `encode`, when given, turns each record into what the sink takes (a Kafka
    message, say); otherwise the sink receives the records themselves.
    `alerts`, when given, also receives every incident and early warning as
    it is (an on-call tool such as Alertmanager, say). `feedback`, when
    given, is read for verdicts and silences (`foreshock.feedback`) that the
    correlation step applies; unusable ones go to the sink as dead letters.
    `reports`, when given, receives a report page each time an incident
    opens, changes or resolves.
    """
    flow = Dataflow(flow_id)
    read = op.input("read", flow, source)
    # Changes (deploys, flags) skip the windows: the correlator keeps them.
    split = op.branch("split_changes", read, lambda b: b.format == CHANGE_FORMAT)
    change_items = op.flat_map("read_changes", split.trues, _changes_of)
    changes = op.filter_map("changes", change_items, _change_or_none)
    bad_changes = op.filter_map("bad_changes", change_items, _dead_or_none)
    batches = split.falses
    # (shard's window key, RawBatch)
    keys = config.window_keys
    by_shard = op.key_on("key_shard", batches, lambda b: keys.get(b.shard, b.shard))
    # (shard's window key, KpiRecord | DeadLetter | LateEvent)
    windowed = op.stateful(WINDOW_STEP, by_shard, _window_builder(config))
    items = op.key_rm("unkey_shard", windowed)
    kpis = op.filter_map("kpis", items, _kpi_or_none)
    rejected = op.filter_map("rejected", items, _rejected_or_none)
    progress = op.filter_map("progress", items, _progress_or_none)
    # (series, KpiRecord)
    by_series = op.key_on("key_series", kpis, lambda r: r.series)
    # (series, KpiScore)
    scored = op.key_rm(
        "unkey_series", op.stateful("detect", by_series, _detect_builder(config))
    )
    anomalies = op.filter_map(
        "anomalies", scored, lambda s: Anomaly.from_score(s) if s.anomalous else None
    )
    anomalies = op.inspect("count_anomalies", anomalies, _count_anomaly)
    context: Stream[KpiScore | Change | Feedback | ShardProgress]
    context = op.merge("with_changes", scored, changes, progress)
    if feedback is not None:
        # Feedback | DeadLetter, from its own input: read from the start on
        # each run without recovery, so suppressions outlive restarts.
        said = op.flat_map(
            "read_feedback", op.input("feedback", flow, feedback), feedback_of_batch
        )
        verdicts = op.filter("verdicts", said, lambda x: isinstance(x, Feedback))
        context = op.merge("with_feedback", context, verdicts)
        unusable = op.filter("bad_feedback", said, lambda x: isinstance(x, DeadLetter))
        rejected = op.merge("rejected_all", rejected, unusable)
    # ("all", KpiScore | Change | Feedback): correlation sees every service.
    # Shards read by different processes reach it interleaved: each
    # shard's progress (`ShardProgress`, from the window step) tells it
    # when a window is whole, so it judges the same windows, with the same
    # scores, as one process does.
    together = op.key_on("key_all", context, lambda _: "all")
    correlate = op.stateful_batch("correlate", together, _correlate_builder(config))
    correlated = op.key_rm("unkey_all", correlate)
    correlated = op.inspect("count_correlated", correlated, _count_correlated)
    out = op.merge("outputs", scored, anomalies, correlated, rejected, bad_changes)
    if encode is not None:
        out = op.map("encode", out, encode)  # type: ignore[arg-type]
    op.output("write", out, sink)
    if alerts is not None:
        op.output("alert", correlated, alerts)
    if reports is not None:
        op.output(
            "write_reports", report_pages(scored, correlated, reports), reports.sink
        )
    return flow


def _changes_of(batch: RawBatch) -> list[Change | DeadLetter]:
    return [c for m in batch.messages if (c := read_change(m)) is not None]


def _change_or_none(item: Change | DeadLetter) -> Change | None:
    return item if isinstance(item, Change) else None


def _dead_or_none(item: Change | DeadLetter) -> DeadLetter | None:
    return item if isinstance(item, DeadLetter) else None


def _count_anomaly(step_id: str, anomaly: Anomaly) -> None:
    telemetry.anomaly()


def _count_correlated(step_id: str, output: Output) -> None:
    telemetry.correlated([output])


def tune_garbage_collector() -> None:
    """Collect garbage less often while a flow runs in this process.

    A flow makes container objects per event that die within their batch,
    while its state (windows, detectors, correlation) lives long. With
    CPython's default thresholds the batch-lived objects get promoted, and
    full collections sweep the whole long-lived state again and again: on
    the throughput benchmark they took about a third of the flow's CPU
    time. What exists before the run (modules, schemas, the flow) is frozen
    out of collection, and young collections wait for 200,000 allocations.
    Call it once, just before running a long flow.
    """
    gc.freeze()
    gc.set_threshold(200_000, 50, 100)


def _kpi_or_none(item: WindowItem) -> KpiRecord | None:
    return item if isinstance(item, KpiRecord) else None


def _rejected_or_none(item: WindowItem) -> DeadLetter | LateEvent | None:
    return item if isinstance(item, DeadLetter | LateEvent) else None


def _progress_or_none(item: WindowItem) -> ShardProgress | None:
    return item if isinstance(item, ShardProgress) else None


def _window_builder(config: FlowConfig) -> Callable[[bytes | None], WindowLogic]:
    def build(resume: bytes | None) -> WindowLogic:
        store = WindowStore(
            spec=config.window,
            registry=config.registry,
            forget_after=config.forget_after_windows,
            policy=config.window_policy,
        )
        logic = WindowLogic(
            store, config.decoders, config.on_window_closed, config.input_limits
        )
        if resume:
            logic.restore(pickle.loads(resume))
        logic.keep_state = config.snapshots
        return logic

    return build


def _detect_builder(config: FlowConfig) -> Callable[[bytes | None], DetectLogic]:
    # The direction of a series is only known from its first record, so the
    # detector is made on first use (see DetectLogic) unless restored.
    def build(resume: bytes | None) -> DetectLogic:
        detector = pickle.loads(resume) if resume else None
        logic = DetectLogic(
            detector, config.threshold, config.new_detector, config.registry.get
        )
        logic.keep_state = config.snapshots
        return logic

    return build


def _correlate_builder(config: FlowConfig) -> Callable[[bytes | None], CorrelateLogic]:
    def build(resume: bytes | None) -> CorrelateLogic:
        if resume:
            correlator = pickle.loads(resume)
            # What it learned comes from the snapshot, how to judge from the
            # settings of this run: changed settings apply after a restart.
            correlator.config = config.correlation
            logic = CorrelateLogic(correlator)
        else:
            book = SuppressionBook(default_detector=config.detector)
            correlator = Correlator(config.topology, config.correlation, book)
            correlator.expect_shards(config.shards)
            logic = CorrelateLogic(correlator)
        logic.keep_state = config.snapshots
        return logic

    return build
