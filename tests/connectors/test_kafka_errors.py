"""Errors a Kafka client reports while its broker is away, in bounded number."""

from __future__ import annotations

import logging

import pytest

from connectors.kafka import _ClientErrors


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
