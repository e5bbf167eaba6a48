"""`foreshock run` survives a crash and a broker restart with nothing lost.

Each test runs the job as a process of its own on a small input (50
one-minute windows of two services, one incident) and compares what it
published, upserted the way consumers read it, with an uninterrupted run
over the same input on topics of its own.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from bytewax.testing import run_main
from confluent_kafka.admin import AdminClient

from foreshock.broker import LocalKafka
from foreshock.config import load_settings
from foreshock.jobs import kafka_flow
from foreshock.recovery import held_parts, last_snapshot_epoch
from tests.flow_runs import (
    MINUTES,
    Outputs,
    committed,
    incident_events,
    produce,
    read_outputs,
    start_run,
    wait_until,
    write_config,
)
from tests.kafka_helpers import TopicFactory, create_topics, delete_topics

pytestmark = pytest.mark.kafka

_OUTPUTS = ("kpis", "anomalies", "incidents", "early_warnings", "data_quality")
_SNAPSHOT_S = 4.0
_WAIT_S = 30.0
# The input in three parts: the detectors are ready (30 windows) before the
# crash, and the incident comes after the restart.
_FIRST = incident_events(0, 30)
_REST_OF_FIRST_HALF = incident_events(30, 34)
_SECOND_HALF = incident_events(34, MINUTES)
_ALL = _FIRST + _REST_OF_FIRST_HALF + _SECOND_HALF


def _topics(make: TopicFactory, prefix: str) -> tuple[str, dict[str, str]]:
    names = make(f"{prefix}-in", *(f"{prefix}-{kind}" for kind in _OUTPUTS))
    return names[0], dict(zip(_OUTPUTS, names[1:], strict=True))


def _uninterrupted(bootstrap: str, make: TopicFactory, tmp_path: Path) -> Outputs:
    """The whole input read in one bounded run without recovery."""
    source, outputs = _topics(make, "whole")
    produce(bootstrap, source, _ALL)
    config = write_config(tmp_path / "whole.toml", bootstrap, source, outputs)
    run_main(kafka_flow(load_settings(config), until_end=True))  # type: ignore[no-untyped-call]
    return read_outputs(bootstrap, outputs)


def _recovering(
    path: Path, bootstrap: str, source: str, outputs: dict[str, str], store: Path
) -> Path:
    """A configuration that snapshots into `store` every few seconds."""
    return write_config(
        path,
        bootstrap,
        source,
        outputs,
        recovery=store,
        snapshot_interval_s=_SNAPSHOT_S,
    )


def _drain(config: Path, log: Path) -> None:
    """Resume once more, bounded: the windows still open close at the end."""
    done = start_run(config, log, until_end=True)
    assert done.wait(timeout=60) == 0, log.read_text()[-3000:]


def _resume(config: Path, log: Path, bootstrap: str, source: str, read: int) -> None:
    """Run again while the second half arrives, until a snapshot holds it
    all; then drain. `read`: how many records the topic held before."""
    flow = start_run(config, log)
    try:
        total = produce(bootstrap, source, _SECOND_HALF) + read
        wait_until(
            lambda: committed(bootstrap, source, source) == total,
            _WAIT_S,
            "snapshot of the whole input",
            flow,
        )
    finally:
        flow.send_signal(signal.SIGKILL)
        flow.wait()
    _drain(config, log)


def _kpi_messages_of_window(outputs: Outputs, minute: int) -> int:
    start = f"2025-03-04T09:{minute:02d}:00Z"
    return sum(1 for r in outputs.by_kind["kpis"] if r["kpi"]["window_start"] == start)


def _assert_same_results(crashed: Outputs, whole: Outputs) -> None:
    assert crashed.kpis() == whole.kpis()
    assert crashed.anomalies() == whole.anomalies()
    assert crashed.incidents() == whole.incidents()
    # An incident published again is published as it was: same id, same
    # content, so an on-call tool that upserts by id sees one incident.
    for incident_id, records in crashed.opened().items():
        assert all(r == records[0] for r in records), incident_id


def test_a_killed_flow_resumes_from_its_snapshot(
    kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    bootstrap = kafka_bootstrap
    whole = _uninterrupted(bootstrap, kafka_topics, tmp_path)
    source, outputs = _topics(kafka_topics, "crash")
    store = tmp_path / "recovery"
    config = _recovering(tmp_path / "crash.toml", bootstrap, source, outputs, store)
    log = tmp_path / "crash.log"

    # First run: a snapshot holds the first 30 minutes; the next four are
    # read and published, then the process is killed before they are
    # snapshotted.
    first = produce(bootstrap, source, _FIRST)
    flow = start_run(config, log)
    try:
        wait_until(
            lambda: committed(bootstrap, source, source) == first,
            _WAIT_S,
            "snapshot of the first part",
            flow,
        )
        epoch = last_snapshot_epoch(store)
        wait_until(
            lambda: (last_snapshot_epoch(store) or 0) > (epoch or 0),
            _WAIT_S,
            "next snapshot",
            flow,
        )
        produce(bootstrap, source, _REST_OF_FIRST_HALF)
        wait_until(
            lambda: _kpi_messages_of_window(read_outputs(bootstrap, outputs), 32) > 0,
            _WAIT_S,
            "KPIs of minute 32",
            flow,
        )
    finally:
        flow.send_signal(signal.SIGKILL)
        flow.wait()
    assert committed(bootstrap, source, source) == first, "killed after a snapshot"

    # Second run: resumes from the snapshot while the rest arrives.
    _resume(config, log, bootstrap, source, first + len(_REST_OF_FIRST_HALF))

    crashed = read_outputs(bootstrap, outputs)
    _assert_same_results(crashed, whole)
    # Minute 32 was published, lost with the process, published again,
    # whole each time. (The second run is killed too: whether its last
    # snapshot was complete when it died decides if the drain publishes
    # the minute a third time.)
    published = _kpi_messages_of_window(crashed, 32)
    once = _kpi_messages_of_window(whole, 32)
    assert published >= 2 * once and published % once == 0
    # The detectors came back with what they had learned: scores after the
    # restart are those of the uninterrupted run, not a new warm-up.
    after = [
        r
        for r in crashed.kpis().values()
        if r["kpi"]["window_start"] >= "2025-03-04T09:34"
    ]
    assert after and {r["detector_state"] for r in after} <= {"ready", "skipped"}
    assert len(crashed.incidents()) == 1
    assert held_parts(store) == {0: 1}


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_flow_keeps_its_open_windows_for_the_restart(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    tmp_path: Path,
    stop: signal.Signals,
) -> None:
    bootstrap = kafka_bootstrap
    whole = _uninterrupted(bootstrap, kafka_topics, tmp_path)
    source, outputs = _topics(kafka_topics, f"stop{int(stop)}")
    store = tmp_path / "recovery"
    config = _recovering(tmp_path / "stop.toml", bootstrap, source, outputs, store)
    log = tmp_path / "stop.log"

    first = produce(bootstrap, source, _FIRST + _REST_OF_FIRST_HALF)
    flow = start_run(config, log)
    wait_until(
        lambda: _kpi_messages_of_window(read_outputs(bootstrap, outputs), 32) > 0,
        _WAIT_S,
        "KPIs of minute 32",
        flow,
    )
    flow.send_signal(stop)
    assert flow.wait(timeout=_WAIT_S) == 0, log.read_text()[-3000:]
    said = log.read_text()
    assert "panicked" not in said and "Traceback" not in said, said[-3000:]
    assert "stopped:" in said
    # Minute 33 was still open: not published as if it were whole.
    assert _kpi_messages_of_window(read_outputs(bootstrap, outputs), 33) == 0

    _resume(config, log, bootstrap, source, first)

    stopped = read_outputs(bootstrap, outputs)
    _assert_same_results(stopped, whole)
    assert len(stopped.incidents()) == 1


@pytest.fixture
def own_broker() -> Iterator[LocalKafka]:
    """A broker of this test's own, so that restarting it disturbs no other."""
    with LocalKafka() as broker:
        yield broker


def test_the_flow_rides_out_a_broker_restart(
    own_broker: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker is this test's own: a session broker named in the
    # environment would override the configuration's.
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    bootstrap = own_broker.bootstrap_servers
    made: list[str] = []

    def make(*suffixes: str, partitions: int = 1) -> list[str]:
        names = [f"restart-{suffix}" for suffix in suffixes]
        create_topics(admin, names, partitions)
        made.extend(names)
        return names

    admin = AdminClient({"bootstrap.servers": bootstrap})
    whole = _uninterrupted(bootstrap, make, tmp_path)
    source, outputs = _topics(make, "live")
    config = _recovering(
        tmp_path / "live.toml", bootstrap, source, outputs, tmp_path / "recovery"
    )
    log = tmp_path / "live.log"

    first = produce(bootstrap, source, _FIRST)
    flow = start_run(config, log)
    try:
        wait_until(
            lambda: committed(bootstrap, source, source) == first,
            _WAIT_S,
            "the first part read",
            flow,
        )
        own_broker.restart(downtime_s=3.0)
        total = first + produce(bootstrap, source, _REST_OF_FIRST_HALF + _SECOND_HALF)
        wait_until(
            lambda: committed(bootstrap, source, source) == total,
            _WAIT_S,
            "the whole input read after the restart",
            flow,
        )
        assert flow.poll() is None, "the flow kept running through the restart"
    finally:
        flow.send_signal(signal.SIGTERM)
        _stop(flow)
    _drain(config, log)

    live = read_outputs(bootstrap, outputs)
    _assert_same_results(live, whole)
    delete_topics(admin, made)


def _stop(flow: subprocess.Popen[bytes]) -> None:
    try:
        flow.wait(timeout=10)
    except subprocess.TimeoutExpired:
        flow.kill()
        flow.wait()
