"""Errors a Kafka client reports while its broker is away, in bounded number."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from connectors.kafka import _ClientErrors, waiting_on


def test_a_broker_away_gives_its_first_error_then_a_sum_every_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    errors = _ClientErrors("kafka sink", every_s=30.0, clock=lambda: now[0])

    with caplog.at_level(logging.WARNING, logger="connectors.kafka"):
        for at in (0.0, 1.0, 2.0, 31.0, 32.0, 100.0):
            now[0] = at
            errors.report(f"down at {at:.0f}")

    assert [r.getMessage() for r in caplog.records] == [
        "kafka sink: Kafka error, retrying (more are summed up every 30 s): down at 0",
        "kafka sink: 3 more Kafka errors in the last 31 s, the latest: down at 31",
        # The error at 32 waited in the sum; the one at 100 says both.
        "kafka sink: 2 more Kafka errors in the last 69 s, the latest: down at 100",
    ]


def _closed_port() -> str:
    # Nothing listens on port 1 of the loopback: connections are refused.
    return "127.0.0.1:1"


def test_a_broker_that_does_not_answer_is_named_once_while_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = AdminClient({"bootstrap.servers": _closed_port()})

    with caplog.at_level(logging.WARNING, logger="connectors.kafka"):
        began = time.monotonic()
        with (
            pytest.raises(KafkaException, match="Failed to get metadata"),
            waiting_on(_closed_port(), 1.0, after_s=0.2),
        ):
            admin.list_topics(timeout=1.0)
        waited = time.monotonic() - began

    assert waited >= 0.9
    assert [r.getMessage() for r in caplog.records] == [
        "no answer yet from the Kafka broker at 127.0.0.1:1; waiting up to 1 s "
        "(kafka.bootstrap_servers)"
    ]


def test_a_broker_that_answers_in_time_is_not_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="connectors.kafka"):
        with waiting_on(_closed_port(), 30.0, after_s=0.2):
            pass
        time.sleep(0.4)

    assert caplog.records == []
