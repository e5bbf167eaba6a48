"""No secret from the configuration reaches the logs of `foreshock run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.flow_runs import incident_events, produce, start_run, write_config
from tests.kafka_helpers import TopicFactory

pytestmark = pytest.mark.kafka

SECRET = "s3cr3t-Pa55word-7f1c"
_OUTPUTS = ("kpis", "anomalies", "incidents", "early_warnings", "data_quality")


def test_passwords_in_the_configuration_are_never_logged(
    kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    # The broker speaks plaintext, so the SASL settings are carried but not
    # used; librdkafka is asked to log its configuration and security steps,
    # and the job runs with debug logging, as when someone investigates.
    source, *names = kafka_topics("secret-in", *(f"secret-{k}" for k in _OUTPUTS))
    produce(kafka_bootstrap, source, incident_events(0, 3))
    client = {
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "foreshock",
        "sasl.password": SECRET,
        "ssl.key.password": SECRET,
        "debug": "conf,security",
    }
    alertmanager = f"http://foreshock:{SECRET}@127.0.0.1:9/"
    config = write_config(
        tmp_path / "run.toml",
        kafka_bootstrap,
        source,
        dict(zip(_OUTPUTS, names, strict=True)),
        extra={"alertmanager": {"url": alertmanager}},
    )
    # A table of its own: the helper writes only flat values.
    table = "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in client.items())
    config.write_text(config.read_text() + "[kafka.client]\n" + table)
    log = tmp_path / "run.log"

    process = start_run(config, log, until_end=True)
    assert process.wait(timeout=120) == 0

    text = log.read_text()
    assert "starting topics=" in text
    # The settings did reach the client, which logged them masked.
    assert "sasl.password = [redacted]" in text
    assert SECRET not in text
