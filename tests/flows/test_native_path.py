"""The window step gives the same records with the native scanner as without.

The scanner only changes how events reach their windows. Realistic traffic
(late, out-of-order, skewed and broken records, metric counters, late app
crashes) goes through the window step twice, scanner on and off, under
window shapes and policies that each exercise one of its reasons to hand a
message back; every record out must be the same, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

import pytest

from connectors.messages import RawBatch, RawMessage
from flows.steps import WindowItem, WindowLogic
from foreshock.benchmarks.traffic import TrafficSpec, messages
from foreshock.decode import InputLimits
from foreshock.windows import WindowPolicy, WindowSpec, WindowStore

T0_MS = 1741082400000  # 2025-03-04T10:00:00Z, where the traffic starts
NOW_US = (T0_MS + 3_600_000) * 1000
SPAN_S = 600.0


@cache
def _traffic() -> tuple[RawMessage, ...]:
    """About 60,000 events in 12,000 messages, stamped as a broker would."""
    spec = TrafficSpec(events=60_000, span_s=SPAN_S, seed=11)
    found = list(messages(spec))
    step_ms = SPAN_S * 1000 / len(found)
    return tuple(
        RawMessage("telemetry", 0, i, key, value, T0_MS + round(i * step_ms))
        for i, (key, value) in enumerate(found)
    )


@dataclass(frozen=True)
class Setup:
    spec: WindowSpec = field(default_factory=WindowSpec)
    policy: WindowPolicy = field(default_factory=WindowPolicy)
    limits: InputLimits = field(default_factory=lambda: InputLimits(max_ahead_s=30))
    batch: int = 997
    # The share of events the scanner must take for the comparison to test
    # it; at a full service cap it hands most messages back.
    native_share: float = 0.6


SETUPS = {
    "tumbling": Setup(),
    "sliding, far alignment": Setup(
        WindowSpec(60, 30, datetime(2001, 1, 1, 0, 0, 0, 700_000, UTC), slide_s=20)
    ),
    # About half of the traffic's 1,900 services, and fewer series than
    # the metric services send.
    "service and series caps": Setup(
        policy=WindowPolicy(max_services=1000, max_series_per_service=3),
        native_share=0.05,
    ),
    "clock skew both ways": Setup(limits=InputLimits(max_ahead_s=20, max_behind_s=90)),
    "backfill by receive time": Setup(
        policy=WindowPolicy(backfill_after_s=120, backfill_clock="receive")
    ),
    "no restatement, one message a batch": Setup(
        policy=WindowPolicy(restate_within_s=None), batch=1
    ),
}


def _run(setup: Setup, native: bool) -> tuple[list[WindowItem], int]:
    """Every record the step made, and how many events the scanner took."""
    store = WindowStore(spec=setup.spec, policy=setup.policy)
    logic = WindowLogic(store, limits=setup.limits, clock=lambda: NOW_US, native=native)
    traffic = _traffic()
    out: list[WindowItem] = []
    for first in range(0, len(traffic), setup.batch):
        batch = RawBatch("telemetry:0", traffic[first : first + setup.batch])
        items, _ = logic.on_item(batch)
        out.extend(items)
    items, _ = logic.on_eof()
    out.extend(items)
    scanner = logic._scanner
    return out, 0 if scanner is None else scanner.taken


@pytest.mark.parametrize("name", SETUPS)
def test_the_scanner_changes_no_record(name: str) -> None:
    setup = SETUPS[name]

    python, _ = _run(setup, native=False)
    native, taken = _run(setup, native=True)

    assert native == python
    # Not a comparison of two Python runs: the scanner took its share.
    assert taken > setup.native_share * 60_000
