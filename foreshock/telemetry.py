"""Foreshock's own health as Prometheus metrics.

The metrics live in prometheus-client's default registry, beside the
process metrics it collects itself, and `serve_metrics` exposes them over
HTTP for Prometheus to scrape. The flow's steps report through the hooks
below once per batch, per closed window or per correlator output, never per
event, so counting costs nothing measurable on the hot path.

What is counted, and where it is read:

    read        foreshock_events_in_total{topic}             records read
    window      foreshock_events_decoded_total               records decoded
                foreshock_dead_letters_total{reason}         records refused
                foreshock_tombstones_total                   records with no
                                                             value, skipped
                foreshock_late_events_total                  events too late
                foreshock_events_scanned_total               events the native
                                                             scanner took
                foreshock_windows_closed_total               per shard
                foreshock_backfill_windows_total             of those, old
                                                             news: never paged
                foreshock_series_live{shard}                 KPI series
                foreshock_processing_delay_seconds{shard}    wall clock minus
                                                             the latest window
                                                             end closed
    detect      foreshock_anomalies_total
    correlate   foreshock_incidents_opened_total
                foreshock_incidents_resolved_total
                foreshock_early_warnings_total
    Kafka       foreshock_consumer_lag{topic, partition}     records behind
                foreshock_output_refused_total{topic}        output records
                                                             refused for good,
                                                             dead-lettered
    alerts      foreshock_alertmanager_posts_total{outcome}  sent or failed
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, Counter, Gauge, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from connectors.messages import RawBatch
from foreshock.records import (
    DataGap,
    DeadLetter,
    EarlyWarning,
    Incident,
    KpiRecord,
    LateEvent,
)

__all__ = [
    "MetricsServer",
    "alert_post",
    "anomaly",
    "consumer_lag",
    "correlated",
    "output_refused",
    "serve_metrics",
    "window_batch",
]

log = logging.getLogger(__name__)

_EVENTS_IN = Counter(
    "foreshock_events_in", "Records read from the input, by topic.", ["topic"]
)
_DECODED = Counter(
    "foreshock_events_decoded",
    "Input records decoded whole into events (no dead letter, not a tombstone).",
)
_DEAD_LETTERS = Counter(
    "foreshock_dead_letters",
    "Input records refused whole and written as dead letters, by reason.",
    ["reason"],
)
_TOMBSTONES = Counter(
    "foreshock_tombstones",
    "Input records with no value (deletion markers), skipped.",
)
_LATE = Counter(
    "foreshock_late_events", "Events that arrived after their window had closed."
)
_SCANNED = Counter(
    "foreshock_events_scanned",
    "Events the native scanner placed in their windows; the rest of the "
    "decoded events went the Python way.",
)
_WINDOWS_CLOSED = Counter(
    "foreshock_windows_closed",
    "Event-time windows closed with KPI records, counted once per shard.",
)
_BACKFILL_WINDOWS = Counter(
    "foreshock_backfill_windows",
    "Windows closed as backfill (old news when they closed): scored and "
    "learned, never paged.",
)
_ANOMALIES = Counter("foreshock_anomalies", "KPI windows judged anomalous.")
_OPENED = Counter("foreshock_incidents_opened", "Incidents opened.")
_RESOLVED = Counter("foreshock_incidents_resolved", "Incidents resolved.")
_WARNINGS = Counter("foreshock_early_warnings", "Early warnings published.")
_DATA_GAPS = Counter(
    "foreshock_data_gaps",
    "Services found silent while their users were fine (telemetry gaps).",
)
_LAG = Gauge(
    "foreshock_consumer_lag",
    "Records in a Kafka partition not yet read, as of the latest batch.",
    ["topic", "partition"],
)
_OUTPUT_REFUSED = Counter(
    "foreshock_output_refused",
    "Output records Kafka refused for good (too large, invalid), by topic; "
    "a dead letter was written in place of each.",
    ["topic"],
)
_ALERT_POSTS = Counter(
    "foreshock_alertmanager_posts",
    "Posts of alerts to Alertmanager, by outcome (sent, failed).",
    ["outcome"],
)


@dataclass(slots=True)
class _Shard:
    latest_window_end: float
    series: int


class _ShardCollector(Collector):
    """Gauges per shard whose value depends on when they are scraped.

    The processing delay grows while nothing closes, so it is worked out at
    scrape time from the latest window end rather than set when windows close.
    """

    def __init__(self) -> None:
        self.shards: dict[str, _Shard] = {}

    def collect(self) -> Iterator[Metric]:
        # A plain dict is copied without releasing the GIL, so the flow's
        # thread can keep adding shards while a scrape reads them.
        shards = self.shards.copy()
        now = datetime.now(UTC).timestamp()
        live = GaugeMetricFamily(
            "foreshock_series_live",
            "KPI series of a shard that got a record for its latest window.",
            labels=["shard"],
        )
        delay = GaugeMetricFamily(
            "foreshock_processing_delay_seconds",
            "Wall-clock time minus the end of the latest window a shard closed.",
            labels=["shard"],
        )
        for name, shard in sorted(shards.items()):
            live.add_metric([name], shard.series)
            delay.add_metric([name], now - shard.latest_window_end)
        yield live
        yield delay


_SHARDS = _ShardCollector()
REGISTRY.register(_SHARDS)


def window_batch(
    batch: RawBatch | None, out: Sequence[object], tombstones: int
) -> None:
    """Count what the window step made of one batch (None: the input ended).

    `out` is everything the step returned for it; `tombstones` how many of
    the batch's records were deletion markers. A batch comes from one source
    partition, hence one topic.
    """
    if batch is not None and batch.messages:
        _EVENTS_IN.labels(batch.messages[0].topic).inc(len(batch.messages))

    late = 0
    # A batch message may give several dead letters, one per refused event.
    dead: set[tuple[str, int, int]] = set()
    per_window: dict[datetime, int] = {}
    backfill: set[datetime] = set()
    for item in out:
        if isinstance(item, KpiRecord):
            per_window[item.window_end] = per_window.get(item.window_end, 0) + 1
            if item.backfill:
                backfill.add(item.window_end)
        elif isinstance(item, DeadLetter):
            _DEAD_LETTERS.labels(item.reason).inc()
            dead.add((item.topic, item.partition, item.offset))
        elif isinstance(item, LateEvent):
            late += 1

    if batch is not None:
        _DECODED.inc(len(batch.messages) - tombstones - len(dead))
        _TOMBSTONES.inc(tombstones)
    if late:
        _LATE.inc(late)
    if per_window:
        _WINDOWS_CLOSED.inc(len(per_window))
        _BACKFILL_WINDOWS.inc(len(backfill))
        if batch is not None:
            latest = max(per_window)
            _SHARDS.shards[batch.shard] = _Shard(latest.timestamp(), per_window[latest])


def anomaly() -> None:
    """One KPI window was judged anomalous."""
    _ANOMALIES.inc()


def correlated(outputs: Iterable[Incident | EarlyWarning | DataGap]) -> None:
    """Count what the correlator published."""
    for output in outputs:
        if isinstance(output, EarlyWarning):
            if output.status != "ended":
                _WARNINGS.inc()
        elif isinstance(output, DataGap):
            if output.status == "open":
                _DATA_GAPS.inc()
        elif output.status == "open":
            _OPENED.inc()
        elif output.status == "resolved":
            _RESOLVED.inc()


def consumer_lag(topic: str, partition: int, lag: int) -> None:
    """A Kafka partition is `lag` records behind its high watermark."""
    _LAG.labels(topic, str(partition)).set(lag)


def scanned(events: int) -> None:
    """The native scanner placed `events` events in their windows."""
    _SCANNED.inc(events)


def output_refused(topic: str) -> None:
    """Kafka refused an output record for `topic` for good."""
    _OUTPUT_REFUSED.labels(topic).inc()


def alert_post(sent: bool) -> None:
    """One post of alerts to Alertmanager succeeded, or failed for good."""
    _ALERT_POSTS.labels("sent" if sent else "failed").inc()


class MetricsServer:
    """Prometheus' HTTP endpoint (`/metrics`) in a thread of this process."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve_metrics(port: int, address: str = "0.0.0.0") -> MetricsServer:
    """Expose the metrics on `address:port`; port 0 picks a free port.

    Raises OSError if the port is taken, so that a second job on the same
    host fails at start-up instead of running unobserved.
    """
    server, thread = start_http_server(port, address, registry=REGISTRY)
    metrics = MetricsServer(server, thread)
    log.info("metrics served address=%s port=%s", address, metrics.port)
    return metrics


def total(name: str) -> int:
    """A counter's total over its labels, in this process so far."""
    return int(
        sum(
            sample.value
            for metric in REGISTRY.collect()
            if metric.name == name
            for sample in metric.samples
            if sample.name == f"{name}_total"
        )
    )


def records_read() -> int:
    """Input records this process has read so far."""
    return total("foreshock_events_in")


def summary() -> str:
    """One line of what this process has done so far, for a person.

    Input is counted in records, each decoded, refused or a tombstone, so
    that the first figures add up. A record may hold several events (a JSON
    array), and how many is not counted: the window step does not report it.
    """

    def count(metric: str, one: str, many: str) -> str:
        n = total(metric)
        return f"{n} {one if n == 1 else many}"

    read, decoded = total("foreshock_events_in"), total("foreshock_events_decoded")
    refused = read - decoded - total("foreshock_tombstones")
    backfill = total("foreshock_backfill_windows")
    old_news = (
        f" ({backfill} as backfill, which never pages: see window.backfill_after_s)"
        if backfill
        else ""
    )
    return (
        f"{count('foreshock_events_in', 'record', 'records')} read: "
        f"{decoded} decoded, {refused} refused whole or in part "
        f"({count('foreshock_dead_letters', 'dead letter', 'dead letters')}), "
        f"{count('foreshock_tombstones', 'tombstone', 'tombstones')}; "
        f"{count('foreshock_late_events', 'event', 'events')} late; "
        f"{count('foreshock_windows_closed', 'window', 'windows')} closed"
        f"{old_news}, "
        f"{count('foreshock_anomalies', 'anomaly', 'anomalies')}, "
        f"{count('foreshock_early_warnings', 'early warning', 'early warnings')}, "
        f"{count('foreshock_incidents_opened', 'incident', 'incidents')} opened, "
        f"{total('foreshock_incidents_resolved')} resolved"
    )
