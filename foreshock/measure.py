"""From events to the counters and measurements of their window aggregate.

What each payload kind adds to its window is written once, as data
(`RULES`): a counter of every payload, counters of the payloads that meet a
test (an error status, a failed check), measurements read from payload
fields, and for app events a count per app version. Two readers follow the
same rules: `tally` here, over payload objects, and the native scanner
(`foreshock.native`), over raw JSON; both produce a `Tally`, and one
function, `add_tally`, adds a tally to an aggregate. A new measurement is a
line in `RULES`, and both ways in take it.

This is the per-event work of every flow, so it is done for many events at
once: a tally covers a run of payloads of one kind, service and window, and
each measurement is collected with one pass over the run rather than a
chain of calls per event. A payload is anything with the payload model's
attributes: a validated pydantic payload, or the struct the fast native
decoder makes from the same model (`foreshock.native_scan`).

Each measurement is checked on its own: an impossible value (not finite, or
negative) is left out of the KPIs and counted in `Aggregate.rejected` under
its field name, and the rest of the event counts.

Metric samples follow no rules of this kind: a gauge's values are kept
whatever their sign, and a counter's increase depends on the sample before
it, which the window store keeps.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Literal

from foreshock.kpis import Aggregate
from foreshock.schema import _Payload

__all__ = [
    "MAX_APP_VERSIONS",
    "OTHER_VERSION",
    "RULES",
    "Fields",
    "Flag",
    "KindRules",
    "Tally",
    "add_tally",
    "observe",
    "observe_many",
    "tally",
]

# A payload of one kind, read by attribute (see the module docstring).
Fields = Any
_INF = math.inf
# App versions one window of one service counts apart; launches and crashes
# of any further version are counted under `OTHER_VERSION`, so that a stream
# of made-up version strings cannot grow a window without bound.
MAX_APP_VERSIONS = 20
OTHER_VERSION = "other"

# How a flag tests a field: at least, more than, or is this very value (for
# booleans). A field that is missing (None) meets no test.
Op = Literal[">=", ">", "is"]
Test = tuple[str, Op, float | bool]


@dataclass(frozen=True, slots=True)
class Flag:
    """A counter of the payloads that meet any of `tests`."""

    counter: str
    tests: tuple[Test, ...]

    def __post_init__(self) -> None:
        for name, op, _ in self.tests:
            if op not in (">=", ">", "is"):
                raise ValueError(
                    f"unknown test {op!r} on {name!r}; use '>=', '>' or 'is'"
                )

    def count(self, payloads: Sequence[Fields]) -> int:
        if len(self.tests) == 1:
            name, op, value = self.tests[0]
            return _meeting(list(map(attrgetter(name), payloads)), op, value)
        # Any of several tests: once per payload, however many it meets.
        columns = [
            (list(map(attrgetter(name), payloads)), op, value)
            for name, op, value in self.tests
        ]
        return sum(
            any(_meets(column[i], op, value) for column, op, value in columns)
            for i in range(len(payloads))
        )


def _meeting(column: list[Any], op: Op, value: float | bool) -> int:
    """How many values of one field meet one test."""
    if op == "is":
        return len([v for v in column if v is value])
    if op == ">=":
        return len([v for v in column if v is not None and v >= value])
    return len([v for v in column if v is not None and v > value])


def _meets(v: Any, op: Op, value: float | bool) -> bool:
    if op == "is":
        return v is value
    if v is None:
        return False
    return bool(v >= value) if op == ">=" else bool(v > value)


@dataclass(frozen=True, slots=True)
class KindRules:
    """What the payloads of one kind add to their window's aggregate.

    `total` counts every payload; each flag counts those that meet its
    test; each measurement is (name in the aggregate, payload field); with
    `by_version`, the field naming the app version, `total` is also counted
    per version (`launches@5.2.0`).
    """

    total: str
    flags: tuple[Flag, ...] = ()
    measures: tuple[tuple[str, str], ...] = ()
    by_version: str | None = None


def _same(*names: str) -> tuple[tuple[str, str], ...]:
    """Measurements named after the payload fields they read."""
    return tuple((name, name) for name in names)


RULES: dict[str, KindRules] = {
    "page_view": KindRules(
        "page_views",
        (Flag("pages_with_js_errors", (("js_errors", ">", 0),)),),
        _same(
            "ttfb_ms",
            "dom_content_loaded_ms",
            "load_ms",
            "lcp_ms",
            "inp_ms",
            "cls",
            "js_execution_ms",
        ),
    ),
    "app_launch": KindRules(
        "launches", measures=(("launch_ms", "duration_ms"),), by_version="app_version"
    ),
    "app_crash": KindRules("crashes", by_version="app_version"),
    "synthetic_check": KindRules(
        "checks",
        (Flag("failed_checks", (("success", "is", False),)),),
        (("check_ms", "duration_ms"),),
    ),
    "http_request": KindRules(
        "requests",
        (
            Flag("errors", (("status", ">=", 400),)),
            Flag("server_errors", (("status", ">=", 500),)),
        ),
        (("request_ms", "duration_ms"),),
    ),
    "db_query": KindRules(
        "queries",
        (Flag("query_errors", (("error", "is", True),)),),
        (("query_ms", "duration_ms"),),
    ),
    "resource_sample": KindRules(
        "resource_samples",
        measures=_same(
            "cpu_utilisation",
            "memory_utilisation",
            "network_rx_bytes_per_s",
            "network_tx_bytes_per_s",
        ),
    ),
    "third_party_call": KindRules(
        "calls",
        (Flag("call_errors", (("success", "is", False), ("status", ">=", 500))),),
        (("call_ms", "duration_ms"),),
    ),
    "heartbeat": KindRules("heartbeats"),
}


@dataclass(slots=True)
class Tally:
    """What a run of payloads of one kind adds to an aggregate.

    Only what is there is listed: counters above zero, measurements with a
    value kept, fields with a value rejected. `versions` counts the payloads
    per app version, in the order the versions first came.
    """

    kind: str
    events: int
    counts: dict[str, int] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)


def tally(kind: str, payloads: Sequence[Fields]) -> Tally:
    """The tally of payloads of one `kind` that follows `RULES`."""
    rules = RULES[kind]
    counts = {rules.total: len(payloads)} if payloads else {}
    for flag in rules.flags:
        flagged = flag.count(payloads)
        if flagged:
            counts[flag.counter] = flagged
    result = Tally(kind, len(payloads), counts)
    for name, source in rules.measures:
        _measure(result, name, list(map(attrgetter(source), payloads)))
    if rules.by_version is not None:
        result.versions = dict(Counter(map(attrgetter(rules.by_version), payloads)))
    return result


def _measure(result: Tally, name: str, raw: list[Any]) -> None:
    # NaN fails both comparisons, so it is rejected with the infinities. The
    # values are floats already: both decoders convert by the schema.
    good = [v for v in raw if v is not None and 0.0 <= v < _INF]
    if len(good) < len(raw):
        bad = len(raw) - len(good) - raw.count(None)
        if bad:
            result.rejected[name] = bad
    if good:
        result.values[name] = good


def add_tally(agg: Aggregate, result: Tally) -> None:
    """Add a tally to the aggregate of its service and window."""
    agg.events += result.events
    agg.kinds.add(result.kind)
    counts = agg.counts
    for name, n in result.counts.items():
        counts[name] = counts.get(name, 0) + n
    for name, good in result.values.items():
        values = agg.values.get(name)
        if values is None:
            # A copy: one tally may go to several windows (sliding ones).
            agg.values[name] = good.copy()
        else:
            values.extend(good)
    for name, n in result.rejected.items():
        agg.rejected[name] = agg.rejected.get(name, 0) + n
    if result.versions:
        # Counted again per app version, so that a crash is charged to the
        # release it happened in, whichever release uploaded it.
        counter = RULES[result.kind].total
        for version, n in result.versions.items():
            slot = f"{counter}@{_version_slot(agg, version)}"
            counts[slot] = counts.get(slot, 0) + n


def _version_slot(agg: Aggregate, version: str) -> str:
    """The version itself, or `OTHER_VERSION` once the window holds enough."""
    if f"launches@{version}" in agg.counts or f"crashes@{version}" in agg.counts:
        return version
    seen = {name.partition("@")[2] for name in agg.counts if "@" in name}
    return version if len(seen) < MAX_APP_VERSIONS else OTHER_VERSION


def _metric_gauges(agg: Aggregate, ps: Sequence[Fields]) -> None:
    # Gauges may be negative (temperatures, balances): only non-finite values
    # are impossible here.
    agg.events += len(ps)
    agg.kinds.add("metric_sample")
    for p in ps:
        name = "metric:" + p.name
        value = p.value
        if not math.isfinite(value):
            agg.rejected[name] = agg.rejected.get(name, 0) + 1
            continue
        agg.values.setdefault(name, []).append(value)


def observe_many(agg: Aggregate, kind: str, payloads: Sequence[Fields]) -> None:
    """Add payloads of one `kind`, all of one service and window, to `agg`.

    Each payload has the fields of a valid payload of that kind. Counter
    samples are not handled here: their increase depends on the previous
    sample of the same series, which the window store keeps.
    """
    if kind == "metric_sample":
        _metric_gauges(agg, payloads)
    else:
        add_tally(agg, tally(kind, payloads))


def observe(agg: Aggregate, payload: _Payload) -> None:
    """Add one event's validated payload to its window aggregate."""
    observe_many(agg, payload.kind, [payload])  # type: ignore[attr-defined]
