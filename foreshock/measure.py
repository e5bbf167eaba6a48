"""From one event to the counters and measurements of its window aggregate.

This is the per-event work of every flow, so it stays a handful of dictionary
updates. Each measurement is checked on its own: an impossible value (not
finite, or negative) is left out of the KPIs and counted in
`Aggregate.rejected` under its field name, and the rest of the event counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from foreshock.kpis import Aggregate
from foreshock.schema import (
    AppCrash,
    AppLaunch,
    DbQuery,
    Heartbeat,
    HttpRequest,
    MetricSample,
    PageView,
    ResourceSample,
    SyntheticCheck,
    ThirdPartyCall,
    _Payload,
)

__all__ = ["observe"]


def _count(agg: Aggregate, name: str, n: int = 1) -> None:
    agg.counts[name] = agg.counts.get(name, 0) + n


def _measure(agg: Aggregate, name: str, value: float | None) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0.0:
        agg.rejected[name] = agg.rejected.get(name, 0) + 1
        return
    values = agg.values.get(name)
    if values is None:
        agg.values[name] = [value]
    else:
        values.append(value)


def _page_view(agg: Aggregate, p: PageView) -> None:
    _count(agg, "page_views")
    if p.js_errors:
        _count(agg, "pages_with_js_errors")
    _measure(agg, "ttfb_ms", p.ttfb_ms)
    _measure(agg, "dom_content_loaded_ms", p.dom_content_loaded_ms)
    _measure(agg, "load_ms", p.load_ms)
    _measure(agg, "lcp_ms", p.lcp_ms)
    _measure(agg, "inp_ms", p.inp_ms)
    _measure(agg, "cls", p.cls)
    _measure(agg, "js_execution_ms", p.js_execution_ms)


def _app_launch(agg: Aggregate, p: AppLaunch) -> None:
    _count(agg, "launches")
    _measure(agg, "launch_ms", p.duration_ms)


def _app_crash(agg: Aggregate, p: AppCrash) -> None:
    _count(agg, "crashes")


def _synthetic_check(agg: Aggregate, p: SyntheticCheck) -> None:
    _count(agg, "checks")
    if not p.success:
        _count(agg, "failed_checks")
    _measure(agg, "check_ms", p.duration_ms)


def _http_request(agg: Aggregate, p: HttpRequest) -> None:
    _count(agg, "requests")
    if p.status >= 400:
        _count(agg, "errors")
        if p.status >= 500:
            _count(agg, "server_errors")
    _measure(agg, "request_ms", p.duration_ms)


def _db_query(agg: Aggregate, p: DbQuery) -> None:
    _count(agg, "queries")
    if p.error:
        _count(agg, "query_errors")
    _measure(agg, "query_ms", p.duration_ms)


def _resource_sample(agg: Aggregate, p: ResourceSample) -> None:
    _count(agg, "resource_samples")
    _measure(agg, "cpu_utilisation", p.cpu_utilisation)
    _measure(agg, "memory_utilisation", p.memory_utilisation)
    _measure(agg, "network_rx_bytes_per_s", p.network_rx_bytes_per_s)
    _measure(agg, "network_tx_bytes_per_s", p.network_tx_bytes_per_s)


def _third_party_call(agg: Aggregate, p: ThirdPartyCall) -> None:
    _count(agg, "calls")
    failed = p.success is False or (p.status is not None and p.status >= 500)
    if failed:
        _count(agg, "call_errors")
    _measure(agg, "call_ms", p.duration_ms)


def _heartbeat(agg: Aggregate, p: Heartbeat) -> None:
    _count(agg, "heartbeats")


def _metric_gauge(agg: Aggregate, p: MetricSample) -> None:
    # Gauges may be negative (temperatures, balances): only non-finite values
    # are impossible here.
    name = "metric:" + p.name
    if not math.isfinite(p.value):
        agg.rejected[name] = agg.rejected.get(name, 0) + 1
        return
    agg.values.setdefault(name, []).append(p.value)


_OBSERVERS: dict[type[_Payload], Callable[[Aggregate, _Payload], None]] = {
    PageView: _page_view,  # type: ignore[dict-item]
    AppLaunch: _app_launch,  # type: ignore[dict-item]
    AppCrash: _app_crash,  # type: ignore[dict-item]
    SyntheticCheck: _synthetic_check,  # type: ignore[dict-item]
    HttpRequest: _http_request,  # type: ignore[dict-item]
    DbQuery: _db_query,  # type: ignore[dict-item]
    ResourceSample: _resource_sample,  # type: ignore[dict-item]
    ThirdPartyCall: _third_party_call,  # type: ignore[dict-item]
    Heartbeat: _heartbeat,  # type: ignore[dict-item]
    MetricSample: _metric_gauge,  # type: ignore[dict-item]
}


def observe(agg: Aggregate, payload: _Payload) -> None:
    """Add one event's payload to its window aggregate.

    Counter samples are not handled here: their increase depends on the
    previous sample of the same series, which the window store keeps.
    """
    agg.events += 1
    agg.kinds.add(payload.kind)  # type: ignore[attr-defined]
    _OBSERVERS[type(payload)](agg, payload)
