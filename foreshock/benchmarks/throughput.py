"""Events per second of the main flow on a real broker, against a bare consumer.

One run fills a topic with `TrafficSpec.events` realistic native events
(`foreshock.benchmarks.traffic`), batched into messages per service as the
OpenTelemetry SDKs' exporters batch by default (up to 512 events, 5 s;
`--batch-events 1` sends one event a message), then reads the same topic
twice:

- baseline: a bare confluent-kafka loop that consumes in batches of the
  flow's batch size and decodes each value with `orjson.loads`, doing
  nothing else. No flow that decodes every event into Python objects
  does less.
- flow: the dataflow of `foreshock run` (`build_flow` with the job's
  configuration and `KafkaSource`), read to the topic's end. Its sink counts
  and times records instead of producing them, so the figure is the flow's
  own cost without the output topics' encoding and delivery.

The broker is the one KAFKA_BOOTSTRAP_SERVERS names, or a `LocalKafka`
started for the run. The topic is filled by a separate process, so that the
peak resident memory reported is that of the consuming process. A topic
already holding exactly the events asked for (named after the traffic
parameters) is read again rather than refilled, unless `--fresh`.

`p99_window_close_to_anomaly_ms` is the 99th percentile, over anomalies, of
the time from the window step emitting a window's KPI records to the
window's anomaly reaching the sink.

Usage: `python -m foreshock.benchmarks.throughput --json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from connectors.kafka import KafkaSource
from flows.pipeline import Record, build_flow, tune_garbage_collector
from foreshock.benchmarks.traffic import FLEET, TrafficSpec, add_options, spec_of
from foreshock.broker import LocalKafka, cache_dir
from foreshock.config import Settings, load_settings
from foreshock.jobs import flow_config
from foreshock.records import Anomaly, DeadLetter, KpiScore, LateEvent

__all__ = ["BOOTSTRAP_ENV", "FlowRun", "main", "measure", "run_baseline", "run_flow"]

logger = logging.getLogger(__name__)

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
_ADMIN_TIMEOUT_S = 30.0
_POLL_TIMEOUT_S = 0.05


@dataclass(slots=True)
class _Tally:
    """What the counting sink saw, and when each window was emitted."""

    by_type: Counter[str] = field(default_factory=Counter)
    series: set[tuple[str, str, str]] = field(default_factory=set)
    windows: set[datetime] = field(default_factory=set)
    events_in_windows: dict[tuple[str, str, datetime], int] = field(
        default_factory=dict
    )
    closed_at: dict[datetime, float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    def window_closed(self, window_start: datetime) -> None:
        # A window is emitted by each shard; the first emission counts.
        self.closed_at.setdefault(window_start, time.perf_counter())

    def take(self, record: Record) -> None:
        self.by_type[type(record).__name__] += 1
        if isinstance(record, KpiScore):
            k = record.kpi
            self.series.add((k.layer.value, k.service, k.kpi))
            self.windows.add(k.window_start)
            self.events_in_windows[(k.layer.value, k.service, k.window_start)] = (
                k.events
            )
        elif isinstance(record, Anomaly):
            closed = self.closed_at.get(record.window_start)
            if closed is not None:
                self.latencies_ms.append((time.perf_counter() - closed) * 1000)


class _CountingSink(DynamicSink[Record]):
    def __init__(self, tally: _Tally) -> None:
        self._tally = tally

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Record]:
        return _CountingPartition(self._tally)


class _CountingPartition(StatelessSinkPartition[Record]):
    def __init__(self, tally: _Tally) -> None:
        self._tally = tally

    def write_batch(self, items: list[Record]) -> None:
        for item in items:
            self._tally.take(item)


@dataclass(frozen=True, slots=True)
class FlowRun:
    """The flow's figures for one pass over the topic."""

    seconds: float
    cpu_seconds: float
    records: dict[str, int]
    series: int
    windows: int
    events_accounted: int
    p99_close_to_anomaly_ms: float | None


def run_baseline(
    bootstrap: str, topic: str, expected: int, batch_size: int
) -> tuple[float, float]:
    """Wall and CPU seconds a bare consumer takes to read and decode records.

    `expected` counts messages, each one event or a JSON array of them.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"foreshock-bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": "false",
        }
    )
    partitions = _partitions(consumer, topic)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    loads = orjson.loads
    seen = 0
    clock = _Clock()
    try:
        while seen < expected:
            for message in consumer.consume(batch_size, _POLL_TIMEOUT_S):
                if message.error() is not None:
                    continue
                seen += 1
                value = message.value()
                if value is None:
                    continue
                # A bare try costs nothing until it catches; suppress() would.
                try:  # noqa: SIM105
                    loads(value)
                except orjson.JSONDecodeError:
                    pass
        return clock.spent()
    finally:
        consumer.close()


def run_flow(bootstrap: str, topic: str, settings: Settings) -> FlowRun:
    """Run the main flow over the whole topic once, with a counting sink."""
    tally = _Tally()
    k = settings.kafka
    source = KafkaSource(
        [topic],
        {
            "bootstrap.servers": bootstrap,
            **k.client,
            "group.id": f"foreshock-bench-{uuid.uuid4().hex[:8]}",
        },
        starting_offset="earliest",
        batch_size=k.batch_size,
        stop_at_end=True,
    )
    config = replace(flow_config(settings), on_window_closed=tally.window_closed)
    flow = build_flow(source, _CountingSink(tally), config, flow_id="bench")
    # As `foreshock run` does before running its flow.
    tune_garbage_collector()

    clock = _Clock()
    run_main(flow)  # type: ignore[no-untyped-call]
    seconds, cpu_seconds = clock.spent()

    accounted = (
        sum(tally.events_in_windows.values())
        + tally.by_type[DeadLetter.__name__]
        + tally.by_type[LateEvent.__name__]
    )
    return FlowRun(
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        records=dict(tally.by_type),
        series=len(tally.series),
        windows=len(tally.windows),
        events_accounted=accounted,
        p99_close_to_anomaly_ms=_p99(tally.latencies_ms),
    )


class _Clock:
    """Wall time and this process's CPU time (every thread) since creation.

    CPU time is reported beside wall time because the machine is shared: it
    moves less when other work competes for the cores.
    """

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def spent(self) -> tuple[float, float]:
        return time.perf_counter() - self._wall, time.process_time() - self._cpu


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def measure(
    bootstrap: str, spec: TrafficSpec, settings: Settings, *, fresh: bool = False
) -> dict[str, Any]:
    """Fill (or reuse) the topic, run baseline then flow, return the figures."""
    topic = (
        f"foreshock-bench-{spec.events}-{spec.seed}-{round(spec.span_s)}"
        f"-b{spec.batch_events}-{round(spec.batch_wait_s * 1000)}"
    )
    held = _ensure_filled(bootstrap, topic, spec, fresh)
    batch_size = settings.kafka.batch_size

    baseline_s, baseline_cpu_s = run_baseline(bootstrap, topic, held, batch_size)
    flow = run_flow(bootstrap, topic, settings)

    baseline_rate = spec.events / baseline_s
    rate = spec.events / flow.seconds
    return {
        "events": spec.events,
        "messages": held,
        "series": flow.series,
        "baseline_events_per_s": round(baseline_rate),
        "events_per_s": round(rate),
        "ratio": round(rate / baseline_rate, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "p99_window_close_to_anomaly_ms": _rounded(flow.p99_close_to_anomaly_ms),
        "baseline_events_per_cpu_s": round(spec.events / baseline_cpu_s),
        "events_per_cpu_s": round(spec.events / flow.cpu_seconds),
        "cpu_ratio": round(baseline_cpu_s / flow.cpu_seconds, 3),
        "fleet_series": FLEET.series(),
        "windows": flow.windows,
        "window_s": settings.window.length_s,
        "span_s": spec.span_s,
        "batch_events": spec.batch_events,
        "batch_wait_s": spec.batch_wait_s,
        "batch_size": batch_size,
        "baseline_s": round(baseline_s, 2),
        "flow_s": round(flow.seconds, 2),
        "events_accounted": flow.events_accounted,
        "records": flow.records,
        "sink": "count",
        "topic": topic,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    found = consumer.list_topics(topic, timeout=_ADMIN_TIMEOUT_S).topics.get(topic)
    if found is None or found.error is not None:
        raise LookupError(f"benchmark topic {topic!r} does not exist")
    return sorted(found.partitions)


def _ensure_filled(bootstrap: str, topic: str, spec: TrafficSpec, fresh: bool) -> int:
    """Fill the topic unless it holds a complete earlier fill; return its
    number of messages.

    How many messages a fill made is kept beside the cached broker (its
    count depends on how producers batched), so that a topic cut short by
    an interrupted fill is refilled rather than measured.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    held = _records_in(bootstrap, topic)
    filled = _filled_before()
    if held is not None and held == filled.get(topic) and not fresh:
        logger.info("reusing topic=%s messages=%s", topic, held)
        return held
    if held is not None:
        _wait(admin.delete_topics([topic], operation_timeout=_ADMIN_TIMEOUT_S))
        time.sleep(1.0)
    _wait(
        admin.create_topics(
            [NewTopic(topic, 1, replication_factor=1)],
            operation_timeout=_ADMIN_TIMEOUT_S,
        )
    )
    start = time.perf_counter()
    # A separate process, so that the producer's memory is not counted as
    # the consumer's.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "foreshock.benchmarks.traffic",
            f"--bootstrap={bootstrap}",
            f"--topic={topic}",
            f"--events={spec.events}",
            f"--span-s={spec.span_s}",
            f"--seed={spec.seed}",
            f"--batch-events={spec.batch_events}",
            f"--batch-wait-s={spec.batch_wait_s}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    sent = int(done.stdout.strip())
    logger.info(
        "filled topic=%s events=%s messages=%s seconds=%.1f",
        topic,
        spec.events,
        sent,
        time.perf_counter() - start,
    )
    fills = _fills()
    fills.parent.mkdir(parents=True, exist_ok=True)
    fills.write_text(json.dumps({**filled, topic: sent}))
    return sent


def _fills() -> Path:
    """Where the message count of each topic's last complete fill is kept."""
    return cache_dir() / "bench-fills.json"


def _filled_before() -> dict[str, int]:
    try:
        found = json.loads(_fills().read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _records_in(bootstrap: str, topic: str) -> int | None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "foreshock-bench"})
    try:
        found = consumer.list_topics(timeout=_ADMIN_TIMEOUT_S).topics.get(topic)
        if found is None or found.error is not None:
            return None
        total = 0
        for partition in found.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=_ADMIN_TIMEOUT_S
            )
            total += high - low
        return total
    finally:
        consumer.close()


def _wait(futures: dict[str, Any]) -> None:
    for future in futures.values():
        future.result(timeout=_ADMIN_TIMEOUT_S)


@contextmanager
def _broker() -> Iterator[str]:
    named = os.environ.get(BOOTSTRAP_ENV)
    if named:
        yield named
        return
    with LocalKafka() as broker:
        yield broker.bootstrap_servers


def machine() -> dict[str, Any]:
    """Where the figures were measured: cores and CPU model."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command line: fill a topic, measure baseline and flow, print figures."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m foreshock.benchmarks.throughput",
        description=(__doc__ or "").splitlines()[0],
    )
    add_options(parser)
    parser.add_argument("--config", type=Path, default=None, help="a TOML file")
    parser.add_argument(
        "--fresh", action="store_true", help="refill the topic even if it is full"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)

    spec = spec_of(args)
    settings = load_settings(args.config)
    # The traffic's times are of 2025: the flow judges it as live, paging as
    # it would, not as a backlog (`window.backfill_after_s`).
    window = settings.window.model_copy(update={"backfill_after_s": 0.0})
    settings = settings.model_copy(update={"window": window})
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # The traffic holds refused and late input on purpose; the result
        # counts those records, and a warning for each would read as a fault.
        logging.getLogger("flows.steps").setLevel(logging.ERROR)
    with _broker() as bootstrap:
        result = measure(bootstrap, spec, settings, fresh=args.fresh)
    result["machine"] = machine()
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>32}  {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    sys.exit(main())
