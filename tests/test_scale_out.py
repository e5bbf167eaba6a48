"""Two processes, each owning Kafka partitions, publish what one process does;
so does one process with two workers."""

from __future__ import annotations

from pathlib import Path

import pytest
from bytewax.testing import run_main

from connectors.kafka import consume_all
from foreshock.config import load_settings
from foreshock.jobs import kafka_flow
from tests.flow_runs import (
    MINUTES,
    Outputs,
    free_ports,
    incident_events,
    produce,
    read_outputs,
    start_run,
    write_config,
)
from tests.kafka_helpers import TopicFactory

pytestmark = pytest.mark.kafka

_OUTPUTS = ("kpis", "anomalies", "incidents", "early_warnings", "data_quality")
# With librdkafka's default partitioner (CRC32 of the key) on four
# partitions, orders-db goes to partition 0 and web to partition 1, which
# Bytewax gives to different processes, or to different workers of one.
_PARTITIONS = 4


def _topics(make: TopicFactory, prefix: str) -> tuple[str, dict[str, str]]:
    [source] = make(f"{prefix}-in", partitions=_PARTITIONS)
    names = make(*(f"{prefix}-{kind}" for kind in _OUTPUTS))
    return source, dict(zip(_OUTPUTS, names, strict=True))


def _one_process(bootstrap: str, make: TopicFactory, tmp_path: Path) -> Outputs:
    source, outputs = _topics(make, "one")
    produce(bootstrap, source, incident_events(0, MINUTES))
    config = write_config(tmp_path / "one.toml", bootstrap, source, outputs)
    run_main(kafka_flow(load_settings(config), until_end=True))  # type: ignore[no-untyped-call]
    return read_outputs(bootstrap, outputs)


# (processes, workers per process) of the layout compared with one worker.
_LAYOUTS = {"two processes": (2, 1), "two workers in one process": (1, 2)}


@pytest.mark.parametrize("layout", list(_LAYOUTS))
def test_a_cluster_publishes_what_one_worker_does(
    layout: str, kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    bootstrap = kafka_bootstrap
    processes, workers = _LAYOUTS[layout]
    one = _one_process(bootstrap, kafka_topics, tmp_path)
    source, outputs = _topics(kafka_topics, "many")
    produce(bootstrap, source, incident_events(0, MINUTES))
    cluster: dict[str, object] = {"workers_per_process": workers}
    if processes > 1:
        cluster["addresses"] = [f"127.0.0.1:{p}" for p in free_ports(processes)]
    config = write_config(
        tmp_path / "many.toml", bootstrap, source, outputs, extra={"cluster": cluster}
    )

    flows = [
        start_run(
            config,
            tmp_path / f"process-{i}.log",
            until_end=True,
            env={"FORESHOCK_CLUSTER__PROCESS_ID": str(i)},
        )
        for i in range(processes)
    ]
    codes = [flow.wait(timeout=90) for flow in flows]

    assert codes == [0] * processes, (tmp_path / "process-0.log").read_text()[-3000:]
    partitions = {m.partition for m in consume_all(bootstrap, source)}
    assert partitions == {0, 1}, "the services are on two partitions"
    many = read_outputs(bootstrap, outputs)
    assert len(many.by_kind["kpis"]) == len(one.by_kind["kpis"])
    assert many.kpis() == one.kpis()
    assert many.anomalies() == one.anomalies()
    # The correlator judges a window once every shard has closed it and all
    # its scores are in, so the incident is the same record for record, and
    # published as many times.
    assert many.by_kind["incidents"] == one.by_kind["incidents"]
    assert many.by_kind["early_warnings"] == one.by_kind["early_warnings"]
    assert len(one.incidents()) == 1
