"""What the `foreshock` command says when things are not as asked: one line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NoReturn

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    ConfigSource,
    NewTopic,
)

from connectors.kafka import consume_all, produce_all
from connectors.messages import OutMessage
from foreshock import incidents_cli
from foreshock.cli import _parser, main
from foreshock.config import load_settings
from foreshock.jobs import kafka_flow
from tests.flow_runs import free_ports
from tests.kafka_helpers import TopicFactory, delete_topics

_REPO = Path(__file__).resolve().parent.parent
NEZHA = (
    Path(os.environ.get("FORESHOCK_DATA", _REPO.parent / "shared" / "data")) / "nezha"
)


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    command = [sys.executable, "-m", "foreshock.cli", "schema"]
    with subprocess.Popen(
        command, cwd=_REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.read(10)
        process.stdout.close()  # as `| head -c 10` does
        said = process.stderr.read().decode()
        code = process.wait(timeout=60)

    assert (code, said) == (0, "")


def _config(path: Path, bootstrap: str, topic: str) -> Path:
    path.write_text(
        f'[kafka]\nbootstrap_servers = "{bootstrap}"\n'
        f'input_topics = ["{topic}"]\ngroup_id = "{topic}"\n'
        "[metrics]\nenabled = false\n"
    )
    return path


@pytest.mark.kafka
def test_a_missing_topic_is_one_line_when_topics_are_not_created(
    kafka_bootstrap: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FORESHOCK_KAFKA__CREATE_TOPICS", "false")
    config = _config(tmp_path / "f.toml", kafka_bootstrap, "no-such-topic")

    code = main(["run", "--config", str(config), "--until-end"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("foreshock: missing Kafka topics: ")
    assert "no-such-topic" in err and "Traceback" not in err


@pytest.mark.kafka
def test_a_run_that_reads_nothing_says_why_it_may_be(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [topic] = kafka_topics("empty-in")
    config = _config(tmp_path / "f.toml", kafka_bootstrap, topic)

    code = main(["run", "--config", str(config), "--until-end"])

    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 0
    assert last == (
        f"foreshock: this run read nothing from {topic}: empty, or read already "
        f"by group '{topic}' (set kafka.group_id to another name to read it again)"
    )


@pytest.mark.kafka
def test_a_resumed_run_that_reads_nothing_points_at_its_recovery_store(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [topic] = kafka_topics("resumed-in")
    store = tmp_path / "recovery"
    monkeypatch.setenv("FORESHOCK_RECOVERY__DIR", str(store))
    monkeypatch.setenv("FORESHOCK_RECOVERY__SNAPSHOT_INTERVAL_S", "1")
    config = _config(tmp_path / "f.toml", kafka_bootstrap, topic)
    produce_all(
        kafka_bootstrap,
        [OutMessage(topic, b"web", _page_view(n)) for n in range(20)],
    )
    assert main(["run", "--config", str(config), "--until-end"]) == 0
    capsys.readouterr()
    # Another group does not read it again: the snapshots hold the offsets.
    monkeypatch.setenv("FORESHOCK_KAFKA__GROUP_ID", f"{topic}-again")

    code = main(["run", "--config", str(config), "--until-end"])

    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 0
    assert last == (
        f"foreshock: this run read nothing from {topic}: empty, or read already: "
        "with recovery a job goes on from the offsets of its snapshots in "
        f"{store}, whatever kafka.group_id says (to read it again, start every "
        "process with an empty recovery.dir: the saved state is then lost)"
    )


def _page_view(n: int) -> bytes:
    event = {
        "time": f"2025-03-04T10:{n:02d}:00Z",
        "layer": "frontend",
        "service": "web",
        "payload": {"kind": "page_view", "load_ms": 800},
    }
    return json.dumps(event).encode()


@pytest.mark.kafka
def test_a_run_on_a_topic_it_had_to_create_says_to_check_the_name(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"foreshock-test-typo-{uuid.uuid4().hex[:8]}"
    config = _config(tmp_path / "f.toml", kafka_bootstrap, topic)

    code = main(["run", "--config", str(config), "--until-end"])

    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 0
    assert last == (
        f"foreshock: nothing was read from {topic}: this run created it; check "
        "the name in kafka.input_topics"
    )


@pytest.mark.kafka
def test_a_replay_into_a_new_topic_makes_it_as_asked_keeping_records_of_any_age(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"foreshock-test-replay-{uuid.uuid4().hex[:8]}"
    config = _config(tmp_path / "f.toml", kafka_bootstrap, topic)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})

    code, said = _replay_day(config, caplog, "--partitions", "3")

    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    [entry] = [
        e
        for name, e in admin.describe_configs([resource])[resource]
        .result(timeout=30)
        .items()
        if name == "retention.ms"
    ]
    partitions = admin.list_topics(topic, timeout=30).topics[topic].partitions
    delete_topics(admin, [topic])
    assert code == 0
    assert len(partitions) == 3
    assert (entry.value, entry.source) == (
        "-1",
        ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
    )
    assert said == []


def _replay_day(
    config: Path, caplog: pytest.LogCaptureFixture, *more: str
) -> tuple[int, list[str]]:
    """Replay one Nezha day with `config`: the exit code, and what the run
    said of the topic's retention."""
    if not NEZHA.is_dir():
        pytest.skip(f"the Nezha data is not at {NEZHA}; set FORESHOCK_DATA")
    with caplog.at_level(logging.WARNING):
        day = ["--data", str(NEZHA), "--day", "2022-08-23"]
        code = main(["replay", *day, "--config", str(config), *more])
    return code, [
        r.getMessage() for r in caplog.records if "retention.ms" in r.getMessage()
    ]


@pytest.mark.kafka
def test_a_replay_into_a_topic_that_deletes_old_records_says_so(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"foreshock-test-week-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    week = NewTopic(topic, 1, 1, config={"retention.ms": str(7 * 86_400_000)})
    admin.create_topics([week])[topic].result(timeout=30)
    config = _config(tmp_path / "f.toml", kafka_bootstrap, topic)

    code, said = _replay_day(config, caplog)

    delete_topics(admin, [topic])
    assert code == 0
    assert said == [
        f"topic {topic} deletes records older than 7.0 days (retention.ms), and "
        "replayed records carry their event times: the broker deletes them "
        "within minutes. Set retention.ms=-1 on the topic, or replay into a "
        "topic that does not exist yet"
    ]


@pytest.mark.kafka
def test_a_replay_stopped_by_ctrl_c_says_how_many_events_it_published(
    kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    if not NEZHA.is_dir():
        pytest.skip(f"the Nezha data is not at {NEZHA}; set FORESHOCK_DATA")
    [topic] = kafka_topics("replayed")
    config = _config(tmp_path / "f.toml", kafka_bootstrap, topic)
    # At 60x a minute of data takes a second: the replay is still going when
    # it is interrupted.
    command = [
        *("foreshock.cli", "replay", "--data", str(NEZHA), "--day", "2022-08-22"),
        *("--speedup", "60", "--config", str(config)),
    ]
    with subprocess.Popen(
        [sys.executable, "-m", *command], cwd=_REPO, stderr=subprocess.PIPE
    ) as process:
        assert process.stderr is not None
        _wait_for_records(kafka_bootstrap, topic)
        process.send_signal(signal.SIGINT)
        said = process.stderr.read().decode().strip().splitlines()
        code = process.wait(timeout=60)

    held = len(consume_all(kafka_bootstrap, topic))
    assert code == 130
    assert [line for line in said if "replay stopped" in line] == [
        f"foreshock: replay stopped after {held} events delivered to '{topic}'"
    ]
    assert said[-1].startswith("foreshock: replay stopped")


def _wait_for_records(bootstrap: str, topic: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not consume_all(bootstrap, topic):
        assert time.monotonic() < deadline, f"nothing reached {topic}"
        time.sleep(0.5)


_SECRET = "AMPASSWORD42"
_CAN_USE = "{id}, {kind}, {alertname}, {service}, {root_cause}, {layer}"


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (
            f'[alertmanager]\nurl = "admin:{_SECRET}@host"\n',
            "invalid settings: alertmanager: Value error, Alertmanager url must "
            "start with http:// or https://, got '***@host'",
        ),
        (
            f'[alertmanager]\nurl = "ftp://user:{_SECRET}@host"\n',
            "invalid settings: alertmanager: Value error, Alertmanager url must "
            "start with http:// or https://, got 'ftp://***@host'",
        ),
        (
            '[alertmanager]\nurl = "http://am:9093"\n'
            f'runbook_url = "https://wiki:{_SECRET}@wiki/{{nope}}"\n',
            "invalid settings: alertmanager: Value error, URL template "
            "'https://***@wiki/{nope}' is not valid (KeyError('nope')); it may use "
            + _CAN_USE,
        ),
        (
            f'[webhook]\nurl = "admin:{_SECRET}@hooks.example/T0/B0"\n',
            "invalid settings: webhook: Value error, webhook url must start with "
            "http:// or https://, got no scheme",
        ),
        (
            f'[webhook]\nurl = "ftp://hooks.example/{_SECRET}"\n',
            "invalid settings: webhook: Value error, webhook url must start with "
            "http:// or https://, got scheme 'ftp'",
        ),
        (
            '[webhook]\nurl = "https://hooks.example/T0"\n'
            f'link = "https://u:{_SECRET}@ops/{{nope}}"\n',
            "invalid settings: webhook: Value error, webhook link "
            "'https://***@ops/{nope}' may use only {id}: KeyError('nope')",
        ),
    ],
)
def test_a_mistyped_url_is_said_without_its_secret(
    settings: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "f.toml"
    config.write_text(settings)

    code = main(["incidents", "--config", str(config)])

    assert (code, capsys.readouterr().err) == (2, f"foreshock: {said}\n")


def test_a_configuration_that_is_not_toml_is_named_with_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "f.toml"
    config.write_text('[kafka]\nbootstrap_servers = "a:9092"\n[metrics\n')

    code = main(["incidents", "--config", str(config)])

    assert (code, capsys.readouterr().err) == (
        2,
        f"foreshock: {config} is not valid TOML: Expected ']' at the end of a "
        "table declaration (at line 3, column 9)\n",
    )


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (
            ["incidents", "--since", "yesterday"],
            "cannot read 'yesterday' as a time; give an ISO 8601 time such as "
            "2025-03-04T09:00Z or a duration such as 2h",
        ),
        (
            ["feedback", "--incident", "i1", "--verdict", "expected", "--for", "1y"],
            "cannot read '1y' as a duration; write it like 30m, 24h or 7d",
        ),
        (
            [
                *("silence", "--service", "web", "--reason", "rebuild"),
                *("--from", "2025-03-04T10:00Z", "--until", "2025-03-04T09:00Z"),
            ],
            "expires_at '2025-03-04T09:00:00+00:00' is not after the start "
            "'2025-03-04T10:00:00+00:00'; give a later end",
        ),
    ],
)
def test_an_on_call_command_asked_the_impossible_says_so_in_one_line(
    command: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(command)

    assert (code, capsys.readouterr().err) == (2, f"foreshock: {said}\n")


_UNREACHABLE = (
    "foreshock: Kafka: Failed to get metadata: Local: Broker transport failure "
    "(bootstrap servers 'kafka.invalid:9092', from {origin}); check that the "
    "broker is up at that address, and that kafka.client's security.protocol "
    "and sasl.* settings match the broker's listener\n"
)


@pytest.mark.parametrize(
    ("environment", "origin"),
    [
        ({}, "kafka.bootstrap_servers"),
        (
            {"KAFKA_BOOTSTRAP_SERVERS": "kafka.invalid:9092"},
            "KAFKA_BOOTSTRAP_SERVERS",
        ),
    ],
)
def test_an_unreachable_broker_is_named_with_what_to_check(
    environment: dict[str, str],
    origin: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "f.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "kafka.invalid:9092"\n[kafka.client]\n'
        f'"security.protocol" = "SASL_SSL"\n"sasl.password" = "{_SECRET}"\n'
    )

    def unreachable(*args: object, **kwargs: object) -> NoReturn:
        # What librdkafka raises once it has given up on every broker.
        reason = "Failed to get metadata: Local: Broker transport failure"
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, reason))

    monkeypatch.setattr(incidents_cli, "consume_all", unreachable)

    code = main(["incidents", "--config", str(config)])

    assert (code, capsys.readouterr().err) == (2, _UNREACHABLE.format(origin=origin))


def _options_without_help(parser: argparse.ArgumentParser, name: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                missing += _options_without_help(sub, f"{name} {command}")
        elif action.help is None:
            missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_of_every_command_says_what_it_is_for() -> None:
    assert _options_without_help(_parser(), "foreshock") == []


@pytest.mark.kafka
def test_a_metrics_port_in_use_is_one_line_naming_the_setting(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [topic] = kafka_topics("metrics-port-in")
    config = tmp_path / "f.toml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config.write_text(
            f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\n'
            f'input_topics = ["{topic}"]\ngroup_id = "{topic}"\n'
            f'[metrics]\naddress = "127.0.0.1"\nport = {port}\n'
        )

        code = main(["run", "--config", str(config), "--until-end"])

    assert (code, capsys.readouterr().err) == (
        2,
        f"foreshock: cannot serve metrics on 127.0.0.1:{port} (Address already in "
        "use); set metrics.port to a free port (0 picks one) or metrics.enabled "
        "= false\n",
    )


@pytest.mark.kafka
def test_a_topic_to_list_that_is_missing_is_named_with_its_setting(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = f"no-incidents-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "f.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\n'
        f'[topics]\nincidents = "{missing}"\n'
    )

    code = main(["incidents", "--config", str(config)])

    assert (code, capsys.readouterr().err) == (
        2,
        f"foreshock: Kafka topic '{missing}' (topics.incidents) does not exist on "
        f"'{kafka_bootstrap}'; check topics.incidents and kafka.bootstrap_servers "
        "against those of `foreshock run`, or start `foreshock run`, which "
        "creates it\n",
    )


@pytest.mark.kafka
def test_a_second_signal_stops_the_job_at_once_without_a_backtrace(
    kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    [topic] = kafka_topics("waiting-in")
    config = _config(tmp_path / "f.toml", kafka_bootstrap, topic)
    log = tmp_path / "run.log"
    # -v: the job says when it starts running.
    command = [sys.executable, "-m", "foreshock.cli", "-v", "run"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--config", str(config)], cwd=_REPO, stderr=sink
        )
    try:
        # Generous: a loaded machine takes long to import and connect.
        deadline = time.monotonic() + 180
        while "running processes=" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the job never started running"
            time.sleep(0.2)
        # Two different signals, so that neither merges into the other
        # while both are pending: the second finds the first's stop begun.
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()

    said = log.read_text(errors="replace")
    assert code == 128 + signal.SIGTERM
    # The job runs without recovery.
    assert said.strip().splitlines()[-1] == (
        "foreshock: stopped at once; windows still open are lost (recovery is off)"
    )
    assert "panicked" not in said and "Traceback" not in said


@pytest.mark.kafka
def test_a_process_waiting_for_its_cluster_says_so_and_stops_on_a_signal(
    kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    # Process 0 of two, started alone: Bytewax waits in native code for
    # process 1, where Python runs no signal handler.
    [topic] = kafka_topics("cluster-in")
    ports = free_ports(2)
    config = _config(tmp_path / "f.toml", kafka_bootstrap, topic)
    with config.open("a") as more:
        addresses = ", ".join(f'"127.0.0.1:{port}"' for port in ports)
        more.write(f"[cluster]\naddresses = [{addresses}]\nprocess_id = 0\n")
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "foreshock.cli", "run", "--config", str(config)],
            cwd=_REPO,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 120
        while "is waiting for the other" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the wait was never said"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    finally:
        process.kill()
        process.wait()

    said = log.read_text(errors="replace").strip().splitlines()
    assert code == 128 + signal.SIGINT
    assert said[-2].endswith(
        f"WARNING foreshock.jobs: process 0 is waiting for the other processes "
        f"of the cluster to connect: 127.0.0.1:{ports[1]} (cluster.addresses); "
        "start each with its own cluster.process_id"
    )
    assert said[-1] == (
        "foreshock: SIGINT received and the flow had not started: the "
        "processes of a cluster wait for each other (cluster.addresses) before "
        "they read anything; stopped at once"
    )


@pytest.mark.kafka
def test_a_process_left_without_a_partition_says_so_at_start(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    [topic] = kafka_topics("one-partition")
    config = _config(tmp_path / "f.toml", kafka_bootstrap, topic)
    with config.open("a") as more:
        more.write(
            '[cluster]\naddresses = ["127.0.0.1:1", "127.0.0.1:2"]\nprocess_id = 1\n'
        )

    with caplog.at_level(logging.WARNING, logger="foreshock.jobs"):
        kafka_flow(load_settings(config), until_end=True)

    assert [r.getMessage() for r in caplog.records] == [
        f"process 1 of 2 has no partition to read: the input topics ({topic}) "
        "have 1 in all; give them at least as many partitions as processes"
    ]


@pytest.mark.kafka
def test_a_metrics_port_the_system_picks_is_said(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [topic] = kafka_topics("metrics-in")
    config = _config(tmp_path / "f.toml", kafka_bootstrap, topic)
    monkeypatch.setenv("FORESHOCK_METRICS__ENABLED", "true")
    monkeypatch.setenv("FORESHOCK_METRICS__PORT", "0")
    monkeypatch.setenv("FORESHOCK_METRICS__ADDRESS", "127.0.0.1")

    code = main(["run", "--config", str(config), "--until-end"])

    said = capsys.readouterr().err.splitlines()
    assert code == 0
    [line] = [s for s in said if s.startswith("foreshock: metrics on ")]
    assert re.fullmatch(r"foreshock: metrics on http://127\.0\.0\.1:\d+/metrics", line)
    assert not line.endswith(":0/metrics")
