"""Fixtures of the interoperability tier: a real Collector in front of Kafka."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.collector import (
    Collector,
    CollectorError,
    Encoding,
    collector_binary,
    running_collector,
)
from tests.kafka_helpers import TopicFactory

ENCODINGS: tuple[Encoding, ...] = ("otlp_proto", "otlp_json")


@pytest.fixture(scope="session")
def otelcol_binary() -> Path:
    """The Collector built by `make otelcol`; the tier fails without it."""
    try:
        return collector_binary()
    except CollectorError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(params=ENCODINGS)
def otel_collector(
    request: pytest.FixtureRequest,
    otelcol_binary: Path,
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    tmp_path: Path,
) -> Iterator[Collector]:
    """A Collector writing to fresh metrics and spans topics, once per encoding."""
    encoding: Encoding = request.param
    metrics, spans = kafka_topics("otlp-metrics", "otlp-spans")
    log = tmp_path / "otelcol.log"
    try:
        with running_collector(
            otelcol_binary, kafka_bootstrap, (metrics, spans), encoding, log
        ) as collector:
            yield collector
    except CollectorError as error:
        pytest.fail(str(error), pytrace=False)
