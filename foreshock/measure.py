"""From events to the counters and measurements of their window aggregate.

This is the per-event work of every flow, so it is done for many events at
once: the events of one kind, service and window are handed over together
and each measurement is collected with one list comprehension rather than a
chain of calls per event. A payload is anything with the payload model's
attributes: a validated pydantic payload, or the struct the fast native
decoder makes from the same model (`foreshock.native_scan`), so that both
ways in share one set of rules.

Each measurement is checked on its own: an impossible value (not finite, or
negative) is left out of the KPIs and counted in `Aggregate.rejected` under
its field name, and the rest of the event counts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from foreshock.kpis import Aggregate
from foreshock.schema import _Payload

__all__ = ["MAX_APP_VERSIONS", "OTHER_VERSION", "Fields", "observe", "observe_many"]

# A payload of one kind, read by attribute (see the module docstring).
Fields = Any
_INF = math.inf
# App versions one window of one service counts apart; launches and crashes
# of any further version are counted under `OTHER_VERSION`, so that a stream
# of made-up version strings cannot grow a window without bound.
MAX_APP_VERSIONS = 20
OTHER_VERSION = "other"


def _count(agg: Aggregate, name: str, n: int) -> None:
    if n:
        agg.counts[name] = agg.counts.get(name, 0) + n


def _measure(agg: Aggregate, name: str, raw: list[Any]) -> None:
    # NaN fails both comparisons, so it is rejected with the infinities. The
    # values are floats already: both decoders convert by the schema.
    good = [v for v in raw if v is not None and 0.0 <= v < _INF]
    if len(good) < len(raw):
        bad = len(raw) - len(good) - raw.count(None)
        if bad:
            agg.rejected[name] = agg.rejected.get(name, 0) + bad
    if not good:
        return
    values = agg.values.get(name)
    if values is None:
        agg.values[name] = good
    else:
        values.extend(good)


_PAGE_MEASUREMENTS = (
    "ttfb_ms",
    "dom_content_loaded_ms",
    "load_ms",
    "lcp_ms",
    "inp_ms",
    "cls",
    "js_execution_ms",
)


def _page_views(agg: Aggregate, ps: Sequence[Fields]) -> None:
    _count(agg, "page_views", len(ps))
    _count(agg, "pages_with_js_errors", sum(1 for p in ps if p.js_errors))
    for name in _PAGE_MEASUREMENTS:
        _measure(agg, name, [getattr(p, name) for p in ps])


def _app_launches(agg: Aggregate, ps: Sequence[Fields]) -> None:
    _count(agg, "launches", len(ps))
    _count_by_version(agg, "launches", ps)
    _measure(agg, "launch_ms", [p.duration_ms for p in ps])


def _app_crashes(agg: Aggregate, ps: Sequence[Fields]) -> None:
    _count(agg, "crashes", len(ps))
    _count_by_version(agg, "crashes", ps)


def _count_by_version(agg: Aggregate, counter: str, ps: Sequence[Fields]) -> None:
    # Counted again per app version (`launches@5.2.0`), so that a crash is
    # charged to the release it happened in, whichever release uploaded it.
    for version, n in Counter(p.app_version for p in ps).items():
        _count(agg, f"{counter}@{_version_slot(agg, version)}", n)


def _version_slot(agg: Aggregate, version: str) -> str:
    """The version itself, or `OTHER_VERSION` once the window holds enough."""
    if f"launches@{version}" in agg.counts or f"crashes@{version}" in agg.counts:
        return version
    seen = {name.partition("@")[2] for name in agg.counts if "@" in name}
    return version if len(seen) < MAX_APP_VERSIONS else OTHER_VERSION


def _synthetic_checks(agg: Aggregate, ps: Sequence[Fields]) -> None:
    _count(agg, "checks", len(ps))
    _count(agg, "failed_checks", sum(1 for p in ps if not p.success))
    _measure(agg, "check_ms", [p.duration_ms for p in ps])


def _http_requests(agg: Aggregate, ps: Sequence[Fields]) -> None:
    _count(agg, "requests", len(ps))
    errors = [s for s in [p.status for p in ps] if s >= 400]
    if errors:
        _count(agg, "errors", len(errors))
        _count(agg, "server_errors", sum(1 for s in errors if s >= 500))
    _measure(agg, "request_ms", [p.duration_ms for p in ps])


def _db_queries(agg: Aggregate, ps: Sequence[Fields]) -> None:
    _count(agg, "queries", len(ps))
    _count(agg, "query_errors", sum(1 for p in ps if p.error))
    _measure(agg, "query_ms", [p.duration_ms for p in ps])


_RESOURCE_MEASUREMENTS = (
    "cpu_utilisation",
    "memory_utilisation",
    "network_rx_bytes_per_s",
    "network_tx_bytes_per_s",
)


def _resource_samples(agg: Aggregate, ps: Sequence[Fields]) -> None:
    _count(agg, "resource_samples", len(ps))
    for name in _RESOURCE_MEASUREMENTS:
        _measure(agg, name, [getattr(p, name) for p in ps])


def _failed_call(p: Fields) -> bool:
    status = p.status
    return p.success is False or (status is not None and status >= 500)


def _third_party_calls(agg: Aggregate, ps: Sequence[Fields]) -> None:
    _count(agg, "calls", len(ps))
    _count(agg, "call_errors", sum(1 for p in ps if _failed_call(p)))
    _measure(agg, "call_ms", [p.duration_ms for p in ps])


def _heartbeats(agg: Aggregate, ps: Sequence[Fields]) -> None:
    _count(agg, "heartbeats", len(ps))


def _metric_gauges(agg: Aggregate, ps: Sequence[Fields]) -> None:
    # Gauges may be negative (temperatures, balances): only non-finite values
    # are impossible here.
    for p in ps:
        name = "metric:" + p.name
        value = p.value
        if not math.isfinite(value):
            agg.rejected[name] = agg.rejected.get(name, 0) + 1
            continue
        agg.values.setdefault(name, []).append(value)


_OBSERVERS: dict[str, Callable[[Aggregate, Sequence[Fields]], None]] = {
    "page_view": _page_views,
    "app_launch": _app_launches,
    "app_crash": _app_crashes,
    "synthetic_check": _synthetic_checks,
    "http_request": _http_requests,
    "db_query": _db_queries,
    "resource_sample": _resource_samples,
    "third_party_call": _third_party_calls,
    "heartbeat": _heartbeats,
    "metric_sample": _metric_gauges,
}


def observe_many(agg: Aggregate, kind: str, payloads: Sequence[Fields]) -> None:
    """Add payloads of one `kind`, all of one service and window, to `agg`.

    Each payload has the fields of a valid payload of that kind. Counter
    samples are not handled here: their increase depends on the previous
    sample of the same series, which the window store keeps.
    """
    agg.events += len(payloads)
    agg.kinds.add(kind)
    _OBSERVERS[kind](agg, payloads)


def observe(agg: Aggregate, payload: _Payload) -> None:
    """Add one event's validated payload to its window aggregate."""
    observe_many(agg, payload.kind, [payload])  # type: ignore[attr-defined]
