"""Foreshock's own metrics, scraped over HTTP after a flow ran on known input."""

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from bytewax.testing import TestingSink, run_main
from prometheus_client.parser import text_string_to_metric_families

from connectors.iterables import IterableSource
from connectors.messages import RawBatch, RawMessage
from flows.pipeline import FlowConfig, build_flow
from foreshock import telemetry
from foreshock.telemetry import MetricsServer, serve_metrics
from foreshock.windows import WindowSpec

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
# Windows of a minute that close as soon as an event of the next one arrives.
CONFIG = FlowConfig(window=WindowSpec(60, 0, T0))

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def metrics() -> Iterator[MetricsServer]:
    server = serve_metrics(0, "127.0.0.1")
    yield server
    server.close()


def _scrape(server: MetricsServer) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{server.port}/metrics")
    response.raise_for_status()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _page_view(topic: str, offset: int, at: datetime) -> RawMessage:
    doc = {
        "time": at.isoformat(),
        "layer": "frontend",
        "service": "checkout",
        "payload": {"kind": "page_view", "load_ms": 800.0},
    }
    return RawMessage(topic, 0, offset, b"checkout", json.dumps(doc).encode())


def _batches(topic: str) -> list[RawBatch]:
    """33 records: 30 page views over three minutes, a poison message, a
    tombstone, and a page view of the first minute sent in the second."""
    messages = [
        [
            _page_view(topic, 0, T0 + timedelta(minutes=m, seconds=6 * i))
            for i in range(10)
        ]
        for m in range(3)
    ]
    messages[0] += [
        RawMessage(topic, 0, 0, b"checkout", b"{not json"),
        RawMessage(topic, 0, 0, b"checkout", None),
    ]
    messages[1].append(_page_view(topic, 0, T0 + timedelta(seconds=10)))
    return [RawBatch(f"{topic}:0", tuple(batch)) for batch in messages]


def test_a_flow_counts_what_it_read_refused_and_closed(
    metrics: MetricsServer,
) -> None:
    topic = f"metrics-{uuid.uuid4().hex[:8]}"
    shard = f"{topic}:0"
    before = _scrape(metrics)
    source = IterableSource(lambda: _batches(topic))

    run_main(build_flow(source, TestingSink([]), CONFIG))
    scraped_from = datetime.now(UTC).timestamp()
    after = _scrape(metrics)
    scraped_to = datetime.now(UTC).timestamp()

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert _value(after, "foreshock_events_in_total", topic=topic) == 33
    assert delta("foreshock_events_decoded_total") == 31
    assert delta("foreshock_dead_letters_total", reason="json_decode_error") == 1
    assert delta("foreshock_late_events_total") == 1
    # Windows 09:00 and 09:01 close on later events, 09:02 when input ends.
    assert delta("foreshock_windows_closed_total") == 3
    # The latest window closed on an event is 09:01; a page view feeds the
    # eight page KPIs of the registry.
    assert _value(after, "foreshock_series_live", shard=shard) == 8
    delay = _value(after, "foreshock_processing_delay_seconds", shard=shard)
    window_end = (T0 + timedelta(minutes=2)).timestamp()
    assert scraped_from - window_end <= delay <= scraped_to - window_end


def test_the_summary_line_adds_up_what_a_run_did() -> None:
    # The same 33 records: 33 read, of which 31 decoded, 1 refused (with 1
    # dead letter) and 1 tombstone; then 1 event late and 3 windows closed
    # (the counters are the process's, so compare deltas).
    def numbers() -> list[int]:
        return [int(word) for word in re.findall(r"\d+", telemetry.summary())]

    before = numbers()
    topic = f"summary-{uuid.uuid4().hex[:8]}"
    run_main(
        build_flow(IterableSource(lambda: _batches(topic)), TestingSink([]), CONFIG)
    )
    after = numbers()

    deltas = [a - b for a, b in zip(after, before, strict=True)]
    assert deltas[:7] == [33, 31, 1, 1, 1, 1, 3]
