"""What the `foreshock` command says when things are not as asked: one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from foreshock.cli import main
from tests.kafka_helpers import TopicFactory

_REPO = Path(__file__).resolve().parent.parent


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
