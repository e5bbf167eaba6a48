"""Long-running jobs of the `foreshock` command: the Kafka flow and replays."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from functools import partial
from pathlib import Path

from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink
from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main

from connectors.alertmanager import AlertmanagerConfig, AlertmanagerSink
from connectors.fanout import FanOutSink
from connectors.kafka import (
    KafkaSink,
    KafkaSource,
    ensure_topics,
    parts_of_process,
    retention_ms,
)
from connectors.reports import ReportDirectorySink
from connectors.routing import encoder, refusal_encoder
from connectors.webhook import WebhookSink
from flows.pipeline import (
    FLOW_ID,
    FlowConfig,
    build_flow,
    tune_garbage_collector,
    window_state_step,
)
from flows.placement import window_keys
from flows.reports import ReportOutput
from foreshock import shutdown, telemetry
from foreshock.config import MetricsSettings, Settings, load_settings, redacted_url
from foreshock.correlation import CorrelationConfig, Output
from foreshock.decode import CHANGE_FORMAT, Decoder, decoder_for
from foreshock.errors import UserError
from foreshock.recovery import check_window_keys, last_snapshot_epoch, open_store
from foreshock.telemetry import MetricsServer, serve_metrics
from foreshock.topology import Topology

__all__ = [
    "alertmanager_sink",
    "decoders",
    "execute",
    "feedback_source",
    "flow_config",
    "kafka_flow",
    "notice_sink",
    "replay_dataset",
    "report_output",
    "run_kafka_job",
]

log = logging.getLogger(__name__)


def flow_config(settings: Settings, topology: Topology | None = None) -> FlowConfig:
    """The dataflow's configuration from the job's settings."""
    c = settings.correlation
    if topology is None:
        topology = Topology.load(c.topology) if c.topology else Topology()
    w = settings.window
    return FlowConfig(
        window=w.spec(),
        forget_after_windows=w.forget_after_windows,
        window_policy=w.policy(),
        input_limits=replace(
            w.input_limits(settings.kafka.max_message_bytes),
            dead_letter_bytes=settings.kafka.dead_letter_bytes or None,
        ),
        detector=settings.detection.detector,
        detectors_by_kpi=settings.detection.by_kpi,
        threshold=settings.detection.threshold,
        topology=topology,
        correlation=CorrelationConfig(**c.model_dump(exclude={"topology"})),
        decoders=decoders(settings),
        snapshots=settings.recovery.dir is not None,
    )


def decoders(settings: Settings) -> dict[str, Decoder]:
    """A decoder for native events and for every format an input topic names."""
    names = {"native", *settings.kafka.formats.values()} - {CHANGE_FORMAT}
    return {name: decoder_for(name, settings) for name in sorted(names)}


def kafka_flow(settings: Settings, *, until_end: bool = False) -> Dataflow:
    """The main dataflow between the configured Kafka topics."""
    k = settings.kafka
    client = k.client_config()
    source = KafkaSource(
        k.input_topics,
        {**client, "group.id": k.group_id},
        starting_offset=k.starting_offset,
        batch_size=k.batch_size,
        stop_at_end=until_end,
        formats=k.formats,
        process=_process_of(settings),
        workers=settings.cluster.workers_per_process,
    )
    # With recovery, nothing may be snapshotted before Kafka has it. A record
    # Kafka refuses for good is replaced by its dead letter.
    sink = KafkaSink(
        client,
        wait_for_delivery=settings.recovery.dir is not None,
        replace_refused=refusal_encoder(
            settings.topics, settings.output, k.dead_letter_bytes or None
        ),
    )
    encode = encoder(settings.topics, settings.output)
    # Every process lists the same partitions: the correlator waits for
    # each windowed one, whichever process reads it and whenever it starts.
    parts = source.all_parts()
    index, count = _process_of(settings)
    mine = parts_of_process(parts, index, count, settings.cluster.workers_per_process)
    if count > 1 and not mine:
        log.warning(
            "process %s of %s has no partition to read: the input topics (%s) "
            "have %s in all; give them at least as many partitions as processes",
            index,
            count,
            ", ".join(k.input_topics),
            len(parts),
        )
    windowed = [
        part
        for part in parts
        if k.formats.get(part.rpartition(":")[0]) != CHANGE_FORMAT
    ]
    keys = window_keys(parts)
    if settings.recovery.dir is not None and settings.recovery.dir.is_dir():
        check_window_keys(
            settings.recovery.dir,
            window_state_step(FLOW_ID),
            {keys.get(part, part) for part in windowed},
        )
    config = replace(
        flow_config(settings),
        shards=frozenset(windowed),
        window_keys=keys,
    )
    return build_flow(
        source,
        sink,
        config,
        encode=encode,
        alerts=notice_sink(settings),
        feedback=feedback_source(settings, until_end=until_end),
        reports=report_output(settings),
    )


def _process_of(settings: Settings) -> tuple[int, int]:
    """(this process's index, how many processes) of the configured cluster."""
    c = settings.cluster.this_process()
    if not c.addresses or c.process_id is None:
        return 0, 1
    return c.process_id, len(c.addresses)


def feedback_source(
    settings: Settings, *, until_end: bool = False
) -> KafkaSource | None:
    """The feedback topic, read from its start, if `feedback.enabled`.

    No group: offsets are never committed, so a run without recovery reads
    every verdict again and no suppression in force is forgotten.
    """
    if not settings.feedback.enabled:
        return None
    k = settings.kafka
    return KafkaSource(
        [settings.topics.feedback],
        k.client_config(),
        starting_offset="earliest",
        stop_at_end=until_end,
    )


def report_output(settings: Settings) -> ReportOutput | None:
    """Where incident reports go, if `reports.dir` is set."""
    r = settings.reports
    if r.dir is None:
        return None
    return ReportOutput(ReportDirectorySink(r.dir), r.history_s, r.base_url)


def alertmanager_sink(settings: Settings) -> AlertmanagerSink | None:
    """The Alertmanager sink, if `alertmanager.url` is set."""
    a = settings.alertmanager
    if a.url is None:
        return None
    return AlertmanagerSink(AlertmanagerConfig(**a.model_dump()))


def notice_sink(settings: Settings) -> DynamicSink[Output] | None:
    """Where incidents and early warnings go besides Kafka, if anywhere.

    Alertmanager when `alertmanager.url` is set, a chat webhook when
    `webhook.url` is set, both at once when both are.
    """
    sinks: list[DynamicSink[Output]] = []
    alertmanager = alertmanager_sink(settings)
    if alertmanager is not None:
        sinks.append(alertmanager)
    webhook = settings.webhook.config()
    if webhook is not None:
        sinks.append(WebhookSink(webhook))
    if len(sinks) < 2:
        return sinks[0] if sinks else None
    return FanOutSink(sinks)


def run_kafka_job(config: Path | None, *, until_end: bool = False) -> int:
    settings = load_settings(config)
    # Only the flow runs as one process of a cluster, so only it needs to
    # know which one.
    settings.cluster = settings.cluster.this_process()
    log.info(
        "starting topics=%s bootstrap=%s alertmanager=%s",
        settings.kafka.input_topics,
        settings.kafka.bootstrap_servers,
        redacted_url(settings.alertmanager.url),
    )
    created = ensure_topics(
        settings.kafka.client_config(),
        [*settings.kafka.input_topics, *_output_topics(settings)],
        create=settings.kafka.create_topics,
    )
    new_inputs = [t for t in settings.kafka.input_topics if t in created]
    if new_inputs:
        log.warning(
            "input topics did not exist and were created empty: %s; check "
            "kafka.input_topics if data was expected there",
            ", ".join(new_inputs),
        )
    recovery = open_store(settings.recovery, settings.cluster)
    resumed = (
        settings.recovery.dir is not None
        and last_snapshot_epoch(settings.recovery.dir) is not None
    )
    metrics = _serve_metrics(settings.metrics) if settings.metrics.enabled else None
    read_before = telemetry.records_read()
    try:
        flow = kafka_flow(settings, until_end=until_end)
        tune_garbage_collector()
        waiting = (
            "the flow had not started: the processes of a cluster wait for "
            "each other (cluster.addresses) before they read anything"
            if len(settings.cluster.addresses) > 1
            else "the flow had not started"
        )
        at_once = (
            "a restart carries on from the last snapshot"
            if recovery is not None
            else "windows still open are lost (recovery is off)"
        )
        with shutdown.on_signals(waiting, _slow_stop(settings), at_once):
            execute(flow, settings, recovery)
    finally:
        if metrics is not None:
            metrics.close()
    if shutdown.requested():
        kept = "kept in the last snapshot" if recovery else "lost (no recovery)"
        print(f"stopped: {telemetry.summary()}; open windows {kept}", file=sys.stderr)
    elif until_end:
        print(f"done: {telemetry.summary()}", file=sys.stderr)
        if telemetry.records_read() == read_before:
            print(_nothing_read(settings, new_inputs, resumed), file=sys.stderr)
    log.info("stopped")
    return 0


def _serve_metrics(settings: MetricsSettings) -> MetricsServer:
    """The metrics endpoint, or one line on what to change if it cannot open.

    A port picked by the system (`metrics.port = 0`) is said on stderr, since
    nothing else tells it.
    """
    try:
        server = serve_metrics(settings.port, settings.address)
    except OSError as error:
        raise UserError(
            f"cannot serve metrics on {settings.address}:{settings.port} "
            f"({error.strerror or error}); set metrics.port to a free port "
            "(0 picks one) or metrics.enabled = false"
        ) from error
    if settings.port == 0:
        print(
            f"foreshock: metrics on http://{settings.address}:{server.port}/metrics",
            file=sys.stderr,
        )
    return server


def _nothing_read(settings: Settings, created: list[str], resumed: bool) -> str:
    k = settings.kafka
    if created == k.input_topics:
        return (
            f"foreshock: nothing was read from {', '.join(k.input_topics)}: this "
            "run created it; check the name in kafka.input_topics"
        )
    topics = ", ".join(k.input_topics)
    _, processes = _process_of(settings)
    reader = "this process" if processes > 1 else "this run"
    if resumed:
        return (
            f"foreshock: {reader} read nothing from {topics}: empty, or read "
            "already: with recovery a job goes on from the offsets of its "
            f"snapshots in {settings.recovery.dir}, whatever kafka.group_id "
            "says (to read it again, start every process with an empty "
            "recovery.dir: the saved state is then lost)"
        )
    return (
        f"foreshock: {reader} read nothing from {topics}: empty, or read "
        f"already by group {k.group_id!r} (set kafka.group_id to another name "
        "to read it again)"
    )


def _output_topics(settings: Settings) -> list[str]:
    """Every topic the job writes to, feedback included when it reads it."""
    names = [
        name
        for field, name in settings.topics.model_dump().items()
        if field != "feedback" or settings.feedback.enabled
    ]
    return names


def execute(
    flow: Dataflow, settings: Settings, recovery: RecoveryConfig | None = None
) -> None:
    """Run `flow` as this process's share of the configured cluster.

    One process unless `cluster.addresses` lists several; each process reads
    the Kafka partitions Bytewax assigns it. The epoch, and so the snapshot
    interval, is `recovery.snapshot_interval_s` whether or not recovery is on.
    """
    c = settings.cluster
    epoch = timedelta(seconds=settings.recovery.snapshot_interval_s)
    log.info(
        "running processes=%s process_id=%s workers=%s epoch_s=%s recovery=%s",
        max(1, len(c.addresses)),
        c.process_id,
        c.workers_per_process,
        epoch.total_seconds(),
        settings.recovery.dir,
    )
    # The processes of a cluster wait for each other, silently, before any
    # of them starts; a wait this long is said.
    waiting = threading.Timer(
        _CLUSTER_QUIET_S,
        _still_waiting,
        args=(c.process_id, c.addresses),
    )
    waiting.daemon = True
    if len(c.addresses) > 1:
        waiting.start()
    try:
        cli_main(  # type: ignore[no-untyped-call]
            flow,
            workers_per_process=c.workers_per_process,
            process_id=c.process_id if c.addresses else None,
            addresses=c.addresses or None,
            epoch_interval=epoch,
            recovery_config=recovery,
        )
    except RuntimeError as error:
        if not c.addresses or "Address already in use" not in str(error):
            raise
        raise UserError(
            f"this process cannot listen on its address "
            f"{c.addresses[c.process_id or 0]} (in use): is another process "
            f"running with cluster.process_id {c.process_id}, or another "
            "program on that port?"
        ) from error
    except BaseException as error:
        # Bytewax panics (pyo3's PanicException, not an Exception) in the
        # thread that sends to a process of the cluster that went away.
        panicked = type(error).__name__ == "PanicException"
        if len(c.addresses) < 2 or not panicked or "thread panic" not in str(error):
            raise
        raise UserError(
            "another process of the cluster went away (stopped or killed); "
            "restart every process, which with recovery carry on from the "
            "last snapshot"
        ) from error
    finally:
        waiting.cancel()


_CLUSTER_QUIET_S = 10.0


def _peers(process_id: int | None, addresses: list[str]) -> str:
    """The addresses of the other processes of the cluster, listed."""
    return ", ".join(a for i, a in enumerate(addresses) if i != process_id)


def _still_waiting(process_id: int | None, addresses: list[str]) -> None:
    if shutdown.running():
        return
    log.warning(
        "process %s is waiting for the other processes of the cluster to "
        "connect: %s (cluster.addresses); start each with its own "
        "cluster.process_id",
        process_id,
        _peers(process_id, addresses),
    )


def _slow_stop(settings: Settings) -> Callable[[], None] | None:
    """What to say when a stop waits for the rest of the cluster, if a
    cluster it is."""
    c = settings.cluster
    if len(c.addresses) < 2:
        return None
    return partial(_stopping_with_cluster, c.process_id, c.addresses)


def _stopping_with_cluster(process_id: int | None, addresses: list[str]) -> None:
    log.warning(
        "process %s is still stopping: a cluster stops as a whole, so it "
        "waits until every other process is stopped as well: %s "
        "(cluster.addresses); send the signal again to stop it at once (a "
        "restart with recovery carries on from the last snapshot)",
        process_id,
        _peers(process_id, addresses),
    )


def replay_dataset(
    dataset: str,
    data: Path,
    day: str | None,
    topic: str | None,
    speedup: float,
    config: Path | None,
    partitions: int | None = None,
) -> int:
    from connectors.nezha import load_day
    from foreshock.datasets import nezha_days
    from foreshock.replay import replay

    settings = load_settings(config)
    days = nezha_days(data, day)
    target = topic or settings.kafka.input_topics[0]
    client = settings.kafka.client_config()
    # Records keep their event times as Kafka timestamps, years old: a topic
    # made here keeps them for ever, and one that would delete them is said.
    ensure_topics(
        client,
        [target],
        create=settings.kafka.create_topics,
        config={"retention.ms": "-1"},
        partitions=partitions,
    )
    kept_ms = retention_ms(client, target)
    if kept_ms >= 0:
        log.warning(
            "topic %s deletes records older than %.1f days (retention.ms), and "
            "replayed records carry their event times: the broker deletes them "
            "within minutes. Set retention.ms=-1 on the topic, or replay into a "
            "topic that does not exist yet",
            target,
            kept_ms / 86_400_000,
        )
    for folder in days:
        sent = replay(
            load_day(folder).batches(5000),
            settings.kafka.bootstrap_servers,
            target,
            speedup,
        )
        print(f"{folder.name}: {sent} events to {target}")
    return 0
