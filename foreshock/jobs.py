"""Long-running jobs of the `foreshock` command: the Kafka flow and replays."""

from __future__ import annotations

import logging
from pathlib import Path

from bytewax.dataflow import Dataflow
from bytewax.testing import run_main

from connectors.kafka import KafkaSink, KafkaSource
from connectors.routing import to_message
from flows.pipeline import FlowConfig, build_flow
from foreshock.config import Settings, load_settings
from foreshock.correlation import CorrelationConfig
from foreshock.topology import Topology

__all__ = ["flow_config", "kafka_flow", "replay_dataset", "run_kafka_job"]

log = logging.getLogger(__name__)


def flow_config(settings: Settings, topology: Topology | None = None) -> FlowConfig:
    """The dataflow's configuration from the job's settings."""
    c = settings.correlation
    if topology is None:
        topology = Topology.load(c.topology) if c.topology else Topology()
    return FlowConfig(
        window=settings.window.spec(),
        forget_after_windows=settings.window.forget_after_windows,
        detector=settings.detection.detector,
        threshold=settings.detection.threshold,
        topology=topology,
        correlation=CorrelationConfig(
            lookback_s=c.lookback_s,
            resolve_after_windows=c.resolve_after_windows,
            cooldown_s=c.cooldown_s,
            confirm_windows=c.confirm_windows,
        ),
    )


def kafka_flow(settings: Settings, *, until_end: bool = False) -> Dataflow:
    """The main dataflow between the configured Kafka topics."""
    k = settings.kafka
    client = {"bootstrap.servers": k.bootstrap_servers, **k.client}
    source = KafkaSource(
        k.input_topics,
        {**client, "group.id": k.group_id},
        starting_offset=k.starting_offset,
        batch_size=k.batch_size,
        stop_at_end=until_end,
    )
    sink = KafkaSink(client)
    topics = settings.topics
    return build_flow(
        source, sink, flow_config(settings), encode=lambda r: to_message(r, topics)
    )


def run_kafka_job(config: Path | None, *, until_end: bool = False) -> int:
    settings = load_settings(config)
    log.info(
        "starting topics=%s bootstrap=%s",
        settings.kafka.input_topics,
        settings.kafka.bootstrap_servers,
    )
    run_main(kafka_flow(settings, until_end=until_end))  # type: ignore[no-untyped-call]
    log.info("stopped")
    return 0


def replay_dataset(
    dataset: str,
    data: Path,
    day: str | None,
    topic: str | None,
    speedup: float,
    config: Path | None,
) -> int:
    from connectors.nezha import load_day
    from foreshock.replay import replay

    settings = load_settings(config)
    days = sorted(p for p in (data / "rca_data").iterdir() if p.is_dir())
    if day is not None:
        days = [p for p in days if p.name == day]
    target = topic or settings.kafka.input_topics[0]
    for folder in days:
        sent = replay(
            load_day(folder).batches(5000),
            settings.kafka.bootstrap_servers,
            target,
            speedup,
        )
        print(f"{folder.name}: {sent} events to {target}")
    return 0
