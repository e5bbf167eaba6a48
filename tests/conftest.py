"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os

import pytest

from tests.kafka_helpers import kafka_bootstrap, kafka_topics, register_kafka_marker

__all__ = ["kafka_bootstrap", "kafka_topics"]

# The suite reads what the flow publishes as the records themselves; the
# CloudEvents that `foreshock run` writes by default are tested on their own
# (tests/connectors/test_cloudevents*.py). Explicit settings still win, and
# subprocesses the tests start inherit this.
os.environ.setdefault("FORESHOCK_OUTPUT__FORMAT", "native")
# The suite replays recorded events of 2025 as if they were live; marking
# backlogs (on by default: `window.backfill_after_s`) is tested on its own
# (tests/core/test_event_time.py, tests/flows/test_event_time_flow.py).
os.environ.setdefault("FORESHOCK_WINDOW__BACKFILL_AFTER_S", "0")


def pytest_configure(config: pytest.Config) -> None:
    register_kafka_marker(config)
