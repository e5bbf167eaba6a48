"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest

from tests.kafka_helpers import kafka_bootstrap, kafka_topics, register_kafka_marker

__all__ = ["kafka_bootstrap", "kafka_topics"]


def pytest_configure(config: pytest.Config) -> None:
    register_kafka_marker(config)
