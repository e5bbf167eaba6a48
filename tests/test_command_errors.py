"""What the `foreshock` command says when things are not as asked: one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.kafka import consume_all
from foreshock.cli import main
from tests.kafka_helpers import TopicFactory

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
        f"foreshock: nothing was read from {topic}: empty, or read already by "
        f"group '{topic}' (set kafka.group_id to another name to read it again)"
    )


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
        said = process.stderr.read().decode().strip().splitlines()[-1]
        code = process.wait(timeout=60)

    held = len(consume_all(kafka_bootstrap, topic))
    assert code == 130
    assert (
        said == f"foreshock: replay stopped after {held} events delivered to '{topic}'"
    )


def _wait_for_records(bootstrap: str, topic: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not consume_all(bootstrap, topic):
        assert time.monotonic() < deadline, f"nothing reached {topic}"
        time.sleep(0.5)
