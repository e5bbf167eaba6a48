"""Deploys read from a change topic: a rollout's spike waits, a regression pages.

Shared case C18, through the whole flow from a list source. Its deployment
rows become change messages on a topic of their own; the rest is telemetry.
"""

import json
import statistics
from datetime import UTC, datetime, timedelta

import pytest
from bytewax.testing import TestingSink, run_main

from connectors.iterables import IterableSource
from connectors.messages import RawBatch, RawMessage
from flows.pipeline import FlowConfig, Record, build_flow
from foreshock.changes import CHANGE_FORMAT
from foreshock.layers import Layer
from foreshock.records import Anomaly, DeadLetter, EarlyWarning, Incident
from foreshock.topology import Topology
from foreshock.windows import WindowSpec
from tests.cases import events, native

# The case's p95 latency per minute from 10:00 (its expected.json).
P95 = [
    190.5,
    165.9,
    154.8,
    181.0,
    168.4,
    161.1,
    215.1,
    186.6,
    143.4,
    156.1,
    575.6,
    845.5,
    608.7,
    169.2,
    212.5,
    189.3,
    177.8,
    200.5,
    171.6,
    178.3,
    160.0,
    192.4,
    200.8,
    150.2,
    158.9,
    431.0,
    382.7,
    468.7,
    386.8,
    420.4,
]
WINDOW = WindowSpec(60, 30, datetime(2025, 3, 4, tzinfo=UTC))
TOPOLOGY = Topology.from_edges(
    [("web", "checkout-api")], {"web": Layer.FRONTEND, "checkout-api": Layer.API}
)


def _change(case: dict[str, object]) -> dict[str, object]:
    return {
        "time": case["ts"],
        "layer": case["layer"],
        "service": case["service"],
        "change_type": "deployment",
        "version": case["version"],
        "attributes": {"strategy": case["strategy"], "replicas": case["replicas"]},
    }


def _with_history() -> list[dict[str, object]]:
    """The case after an hour like its first ten quiet minutes.

    A service under watch has a history: its detector is ready and knows its
    level before the first deploy. The case's first ten minutes, replayed six
    times over the hour before, stand in for it.
    """
    rows = events("C18")
    quiet = [r for r in rows if str(r["ts"]) < "2025-03-04T10:10"]
    history = [
        {**r, "ts": (_time(r) - timedelta(minutes=10 * k)).isoformat()}
        for k in range(6, 0, -1)
        for r in quiet
    ]
    return history + rows


def _time(row: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(row["ts"]).replace("Z", "+00:00"))


def _batches(extra_change: bytes | None = None) -> list[RawBatch]:
    """Telemetry in batches of 20, each change in a batch of its own, in order."""
    out: list[RawBatch] = []
    pending: list[RawMessage] = []
    for offset, case in enumerate(_with_history()):
        if case["kind"] != "deployment":
            value = json.dumps(native(case)).encode()
            pending.append(RawMessage("telemetry", 0, offset, None, value))
            if len(pending) == 20:
                out.append(RawBatch("telemetry:0", tuple(pending)))
                pending = []
            continue
        out.append(RawBatch("telemetry:0", tuple(pending)))
        pending = []
        value = json.dumps(_change(case)).encode()
        change = RawMessage("changes", 0, offset, None, value)
        out.append(RawBatch("changes:0", (change,), CHANGE_FORMAT))
    out.append(RawBatch("telemetry:0", tuple(pending)))
    if extra_change is not None:
        bad = RawMessage("changes", 0, 9999, b"k", extra_change)
        out.append(RawBatch("changes:0", (bad,), CHANGE_FORMAT))
    return out


def _run(extra_change: bytes | None = None) -> list[Record]:
    out: list[Record] = []
    batches = _batches(extra_change)
    source = IterableSource(lambda: batches)
    config = FlowConfig(window=WINDOW, topology=TOPOLOGY)
    run_main(build_flow(source, TestingSink(out), config))
    return out


def test_a_rollout_spike_waits_and_a_regression_pages_citing_its_deploy() -> None:
    out = _run()

    # The detector sees the rollout's spike: its anomalies are published.
    slow = {
        a.window_start.strftime("%H:%M")
        for a in out
        if isinstance(a, Anomaly) and a.kpi == "latency_p95_ms"
    }
    assert {"10:10", "10:11", "10:12"} <= slow
    warnings = [r for r in out if isinstance(r, EarlyWarning)]
    # Nothing pages for it: three of the six windows in the five minutes'
    # grace of the 10:09:50 deploy were slow, and it was over by 10:13. After
    # the 10:24:50 deploy, five of six grace windows are over 1.5 times the
    # level before it (the grace ends at 10:29:50): the 10:30 window ends the
    # check, judged when it closes at 10:31, and the regression pages then.
    assert [w.published_at for w in warnings] == [
        datetime(2025, 3, 4, 10, 31, tzinfo=UTC)
    ]
    first = warnings[0]
    assert first.service == "checkout-api"
    assert first.onset == datetime(2025, 3, 4, 10, 25, tzinfo=UTC)
    # Both deploys of the last half hour are context; the later one, ten
    # seconds before the trouble, is the one to look at first.
    assert [c.version for c in first.changes] == ["2025.03.04-1", "2025.03.04-2"]
    cited = next(e for e in first.evidence if e.kpi == "latency_p95_ms")
    # The median of the grace windows 10:24-10:29.
    assert cited.value == pytest.approx(statistics.median(P95[24:30]), abs=0.5)
    assert not [r for r in out if isinstance(r, Incident)]


def test_a_change_message_that_is_no_change_is_a_dead_letter() -> None:
    out = _run(extra_change=b'{"service": "checkout-api"}')

    dead = [r for r in out if isinstance(r, DeadLetter)]
    assert [(d.topic, d.offset, d.reason) for d in dead] == [
        ("changes", 9999, "schema")
    ]
