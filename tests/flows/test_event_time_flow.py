"""Idle shards and replayed backlogs through the whole dataflow."""

import json
from datetime import UTC, datetime, timedelta

from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.iterables import IterableSource
from connectors.messages import RawBatch, RawMessage
from flows.pipeline import FlowConfig, Record, build_flow
from foreshock.records import (
    Anomaly,
    DataGap,
    EarlyWarning,
    Incident,
    KpiScore,
    LateEvent,
)
from foreshock.windows import WindowPolicy, WindowSpec
from tests.cases import batches, event_messages

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


def _batch(shard: str, service: str, offset: int, at: datetime) -> RawBatch:
    doc = {
        "time": at.isoformat(),
        "layer": "api",
        "service": service,
        "payload": {"kind": "http_request", "status": 200, "duration_ms": 20.0},
    }
    message = RawMessage(shard, 0, offset, None, json.dumps(doc).encode())
    return RawBatch(shard, (message,))


def test_a_shard_that_stops_producing_closes_by_idle_timeout() -> None:
    # One-second windows without lateness. Shard "quiet" sends one event at
    # 10:00:00.9 and stops; shard "busy" goes on for 1.5 s of processing
    # time, an event each 0.05 s. Without the timeout, quiet's window would
    # wait for the end of the input; with it, it closes half a second after
    # quiet's last advance, while busy is still producing.
    config = FlowConfig(
        window=WindowSpec(1, 0, T0),
        window_policy=WindowPolicy(idle_timeout_s=0.5),
    )
    items: list[RawBatch | TestingSource.PAUSE] = [
        _batch("busy", "busy-api", 0, T0),
        _batch("quiet", "quiet-api", 0, T0 + timedelta(milliseconds=900)),
    ]
    for i in range(1, 31):
        items.append(TestingSource.PAUSE(timedelta(milliseconds=50)))
        items.append(_batch("busy", "busy-api", i, T0 + timedelta(seconds=0.05 * i)))
    out: list[Record] = []

    flow = build_flow(TestingSource(items), TestingSink(out), config)
    run_main(flow)  # type: ignore[no-untyped-call]

    windows = [
        s.kpi for s in out if isinstance(s, KpiScore) and s.kpi.kpi == "requests_per_s"
    ]
    quiet = [
        (k.window_start, k.events, k.closed_by)
        for k in windows
        if k.service == "quiet-api"
    ]
    assert quiet[0] == (T0, 1, "idle_timeout")
    assert {closed_by for _, _, closed_by in quiet} == {"idle_timeout"}
    busy = {k.window_start: k.events for k in windows if k.service == "busy-api"}
    assert busy == {T0: 20, T0 + timedelta(seconds=1): 11}
    assert [r for r in out if isinstance(r, LateEvent)] == []


def test_a_backlog_replayed_after_downtime_pages_nobody_c22() -> None:
    # 1,200 requests of 09:00-09:59, 20 a minute, arrive within 30 s; the
    # flow processes them long after (processing time is the system clock),
    # so every window ended more than 15 minutes before it closed.
    config = FlowConfig(
        window=WindowSpec(60, 30, datetime(2025, 3, 4, tzinfo=UTC)),
        window_policy=WindowPolicy(backfill_after_s=900),
    )
    messages = event_messages("C22")
    out: list[Record] = []

    source = IterableSource(lambda: batches(messages, 100))
    run_main(build_flow(source, TestingSink(out), config))  # type: ignore[no-untyped-call]

    scores = [s for s in out if isinstance(s, KpiScore)]
    requests = {
        s.kpi.window_start: round(s.kpi.value * 60, 9)
        for s in scores
        if s.kpi.kpi == "requests_per_s" and s.kpi.value is not None
    }
    assert len(messages) == 1200
    assert requests == {datetime(2025, 3, 4, 9, m, tzinfo=UTC): 20 for m in range(60)}
    assert all(s.kpi.backfill for s in scores)
    assert [r for r in out if isinstance(r, Anomaly)] == []
    pages = (Incident, EarlyWarning, DataGap)
    assert [r for r in out if isinstance(r, pages)] == []
