"""How the processes of a cluster stop: on a signal, when a peer dies, and
when one cannot listen on its address. Each test runs real processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.flow_runs import free_ports
from tests.kafka_helpers import TopicFactory

_REPO = Path(__file__).resolve().parent.parent
_TIMEOUT_S = 120.0


def _config(path: Path, bootstrap: str, topic: str, ports: list[int], i: int) -> Path:
    addresses = ", ".join(f'"127.0.0.1:{port}"' for port in ports)
    path.write_text(
        f'[kafka]\nbootstrap_servers = "{bootstrap}"\n'
        f'input_topics = ["{topic}"]\ngroup_id = "{topic}"\n'
        "[metrics]\nenabled = false\n"
        f"[cluster]\naddresses = [{addresses}]\nprocess_id = {i}\n"
    )
    return path


def _start(config: Path, log: Path, *options: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "foreshock.cli", *options, "run"]
    with log.open("wb") as sink:
        return subprocess.Popen(
            [*command, "--config", str(config)], cwd=_REPO, stderr=sink
        )


def _wait_for(text: str, log: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _TIMEOUT_S
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text(errors="replace")[-2000:]
        assert time.monotonic() < deadline, f"{text!r} never came"
        time.sleep(0.2)


def _cluster(
    tmp_path: Path, bootstrap: str, topic: str, verbose: tuple[bool, bool]
) -> tuple[list[subprocess.Popen[bytes]], list[Path], list[int]]:
    """Two processes of one cluster, each reading one partition of `topic`,
    returned once both have opened it (which `-v` logs)."""
    ports = free_ports(2)
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    processes = [
        _start(
            _config(tmp_path / f"f{i}.toml", bootstrap, topic, ports, i),
            logs[i],
            *(["-v"] if verbose[i] else []),
        )
        for i in range(2)
    ]
    for i in range(2):
        if verbose[i]:
            _wait_for("kafka source assigned", logs[i], processes[i])
    return processes, logs, ports


def _end(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.kill()
        process.wait()


@pytest.mark.kafka
def test_a_process_stopped_alone_says_it_waits_for_its_cluster(
    kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    [topic] = kafka_topics("cluster-stop", partitions=2)
    processes, logs, ports = _cluster(tmp_path, kafka_bootstrap, topic, (True, True))

    try:
        processes[1].send_signal(signal.SIGTERM)
        _wait_for("is still stopping", logs[1], processes[1])
        processes[0].send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=60) for process in processes]
    finally:
        _end(processes)

    said = logs[1].read_text(errors="replace").splitlines()
    warned = [line for line in said if "is still stopping" in line]
    assert codes == [0, 0]
    assert len(warned) == 1
    assert warned[0].endswith(
        "WARNING foreshock.jobs: process 1 is still stopping: a cluster stops "
        "as a whole, so it waits until every other process is stopped as "
        f"well: 127.0.0.1:{ports[0]} (cluster.addresses); send the signal "
        "again to stop it at once (a restart with recovery carries on from "
        "the last snapshot)"
    )


@pytest.mark.kafka
def test_a_process_whose_peer_is_killed_says_so_in_one_line(
    kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    # Process 1 opens its partition only once the cluster is connected.
    [topic] = kafka_topics("cluster-kill", partitions=2)
    processes, logs, _ = _cluster(tmp_path, kafka_bootstrap, topic, (False, True))

    try:
        processes[1].kill()
        code = processes[0].wait(timeout=60)
    finally:
        _end(processes)

    said = logs[0].read_text(errors="replace")
    assert code == 2
    assert said.strip().splitlines()[-1] == (
        "foreshock: another process of the cluster went away (stopped or "
        "killed); restart every process, which with recovery carry on from "
        "the last snapshot"
    )
    assert "Traceback" not in said


@pytest.mark.kafka
def test_a_process_whose_address_is_taken_says_so_in_one_line(
    kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    [topic] = kafka_topics("cluster-port")
    ports = free_ports(2)
    config = _config(tmp_path / "f.toml", kafka_bootstrap, topic, ports, 0)
    log = tmp_path / "run.log"

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[0]))
        taken.listen()
        process = _start(config, log)
        try:
            code = process.wait(timeout=_TIMEOUT_S)
        finally:
            _end([process])

    said = log.read_text(errors="replace")
    assert code == 2
    assert said.strip().splitlines() == [
        f"foreshock: this process cannot listen on its address "
        f"127.0.0.1:{ports[0]} (in use): is another process running with "
        "cluster.process_id 0, or another program on that port?"
    ]
