import pickle
from datetime import UTC, datetime, timedelta

import pytest

from foreshock.kpis import Aggregate, percentile
from foreshock.layers import Layer
from foreshock.records import KpiRecord
from foreshock.schema import EVENT_ADAPTER, Event
from foreshock.windows import WindowSpec, WindowStore
from tests.cases import events, native

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
SPEC = WindowSpec(60, 30, datetime(2025, 3, 4, tzinfo=UTC))


def _event(seconds: float, service: str = "api-a", **payload: object) -> Event:
    return EVENT_ADAPTER.validate_python(
        {
            "time": T0 + timedelta(seconds=seconds),
            "layer": "api",
            "service": service,
            "payload": {"kind": "http_request", "status": 200, **payload},
        }
    )


def _by(records: list[KpiRecord], kpi: str) -> dict[str, tuple[float | None, str]]:
    return {
        f"{r.service} {r.window_start:%H:%M}": (r.value, r.state)
        for r in records
        if r.kpi == kpi
    }


def test_window_index_is_exact_far_from_the_alignment() -> None:
    spec = WindowSpec(0.7, 0, datetime(2000, 1, 1, tzinfo=UTC))
    t = datetime(2025, 3, 4, 10, 0, 0, 300_000, tzinfo=UTC)

    index = spec.index(t)

    assert spec.start(index) <= t < spec.end(index)
    assert (spec.end(index) - spec.start(index)) == timedelta(milliseconds=700)


def test_late_and_out_of_order_case_c01() -> None:
    store = WindowStore(SPEC)
    closed: list[KpiRecord] = []
    late = []

    for case in events("C01"):
        refused = store.add(EVENT_ADAPTER.validate_python(native(case)))
        if refused is not None:
            late.append(refused.event.event_id)
        closed.extend(store.close_ready())
    closed.extend(store.close_all())

    per_minute = {k: v[0] * 60 for k, v in _by(closed, "requests_per_s").items()}
    assert per_minute == pytest.approx(
        {
            "checkout-api 10:00": 21,
            "checkout-api 10:01": 20,
            "checkout-api 10:02": 12,
            "checkout-api 10:03": 3,
        }
    )
    assert _by(closed, "error_rate")["checkout-api 10:00"] == (1 / 21, "ok")
    assert late == ["c01-0052", "c01-0053", "c01-0054"]


def test_percentiles_are_nearest_rank() -> None:
    store = WindowStore(SPEC)
    for i, ms in enumerate([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]):
        store.add(_event(i, duration_ms=ms))

    records = list(store.close_all())

    # 9 values: p50 is the 5th (ceil 4.5), p95 the 9th, p99 the 9th.
    assert _by(records, "latency_p50_ms")["api-a 10:00"] == (50.0, "ok")
    assert _by(records, "latency_p95_ms")["api-a 10:00"] == (90.0, "ok")
    assert _by(records, "latency_p99_ms")["api-a 10:00"] == (90.0, "ok")


def test_percentiles_of_many_values_are_nearest_rank() -> None:
    store = WindowStore(SPEC)
    # 1..200 ms in a scrambled order (7 and 200 share no factor).
    for i in range(200):
        store.add(_event(i % 50, duration_ms=float((i * 7) % 200 + 1)))

    records = list(store.close_all())

    # 200 values: p50 is the 100th smallest, p95 the 190th, p99 the 198th.
    assert _by(records, "latency_p50_ms")["api-a 10:00"] == (100.0, "ok")
    assert _by(records, "latency_p95_ms")["api-a 10:00"] == (190.0, "ok")
    assert _by(records, "latency_p99_ms")["api-a 10:00"] == (198.0, "ok")


def test_a_percentile_sees_values_added_after_it_was_computed() -> None:
    p50 = percentile("request_ms", 50)
    agg = Aggregate(values={"request_ms": [30.0, 10.0, 20.0]})
    assert p50(agg, 60.0) == 20.0

    agg.values["request_ms"].extend([40.0, 50.0])

    # Five values now: the 3rd smallest.
    assert p50(agg, 60.0) == 30.0


def test_silent_service_gets_no_data_windows_not_zeros() -> None:
    store = WindowStore(SPEC)
    store.add(_event(5, "quiet"))
    for minute in range(4):
        store.add(_event(60 * minute + 10, "busy"))

    records = list(store.close_ready()) + list(store.close_all())

    quiet = _by(records, "requests_per_s")
    assert quiet["quiet 10:00"] == (1 / 60, "ok")
    assert quiet["quiet 10:01"] == (None, "no_data")
    assert quiet["quiet 10:02"] == (None, "no_data")
    assert quiet["quiet 10:03"] == (None, "no_data")


def test_zero_traffic_nan_and_infinity_case_c15() -> None:
    store = WindowStore(SPEC)

    for case in events("C15"):
        store.add(EVENT_ADAPTER.validate_python(native(case)))
    records = list(store.close_all())

    qps = {k: v[0] * 60 for k, v in _by(records, "queries_per_s").items()}
    assert qps == {
        "orders-db 10:00": 30,
        "orders-db 10:01": 0,
        "orders-db 10:02": 30,
        "orders-db 10:03": 30,
    }
    errors = _by(records, "query_error_rate")
    assert errors["orders-db 10:00"] == (0.0, "ok")
    assert errors["orders-db 10:01"] == (None, "no_traffic")
    assert errors["orders-db 10:02"] == (pytest.approx(1 / 30), "ok")
    rejected = {
        r.window_start.strftime("%H:%M"): r.rejected_values
        for r in records
        if r.kpi == "query_time_p95_ms"
    }
    assert rejected == {"10:00": 0, "10:01": 0, "10:02": 2, "10:03": 0}


def test_counter_increase_ignores_first_point_and_survives_restart() -> None:
    store = WindowStore(SPEC)
    for seconds, value in [
        (0, 5_000_000),
        (60, 5_000_060),
        (120, 5_000_130),
        (180, 25),
    ]:
        store.add(
            EVENT_ADAPTER.validate_python(
                {
                    "time": T0 + timedelta(seconds=seconds),
                    "layer": Layer.BACKEND,
                    "service": "cart",
                    "payload": {
                        "kind": "metric_sample",
                        "name": "requests_total",
                        "type": "counter",
                        "value": value,
                    },
                }
            )
        )

    records = list(store.close_all())

    per_min = {
        r.window_start.strftime("%H:%M"): r.value * 60
        for r in records
        if r.kpi == "requests_total" and r.value is not None
    }
    # The first sample is a baseline: 10:00 has no increase to report.
    assert per_min == {"10:01": 60, "10:02": 70, "10:03": 25}


def test_state_round_trip_keeps_open_windows() -> None:
    first = WindowStore(SPEC)
    first.add(_event(1, duration_ms=100.0))
    second = WindowStore(SPEC)

    second.restore(first.state())
    second.add(_event(2, duration_ms=300.0))
    records = list(second.close_all())

    assert _by(records, "requests_per_s")["api-a 10:00"] == (2 / 60, "ok")


def test_out_of_order_before_the_first_close_is_not_late() -> None:
    store = WindowStore(SPEC)

    refused = [store.add(_event(s)) for s in (70, 5, 80)]
    records = store.close_all()

    assert refused == [None, None, None]
    assert _by(records, "requests_per_s") == {
        "api-a 10:00": (1 / 60, "ok"),
        "api-a 10:01": (2 / 60, "ok"),
    }


def test_a_new_metric_gets_one_kpi_record_per_window() -> None:
    store = WindowStore(spec=WindowSpec(60, 0, T0))
    for second in (0, 30, 61):
        store.add(
            EVENT_ADAPTER.validate_python(
                {
                    "time": T0 + timedelta(seconds=second),
                    "layer": "backend",
                    "service": "orders",
                    "payload": {
                        "kind": "metric_sample",
                        "name": "queue_depth",
                        "value": 4.0,
                    },
                }
            )
        )

    closed = [r for r in store.close_ready() if r.kpi == "queue_depth"]

    assert [(r.window_start, r.value) for r in closed] == [(T0, 4.0)]


def _metric(seconds: float, name: str, value: float, kind: str = "gauge") -> Event:
    return EVENT_ADAPTER.validate_python(
        {
            "time": T0 + timedelta(seconds=seconds),
            "layer": "backend",
            "service": "orders",
            "payload": {
                "kind": "metric_sample",
                "name": name,
                "type": kind,
                "value": value,
            },
        }
    )


@pytest.mark.parametrize("listed", [True, False], ids=["snapshot", "older snapshot"])
def test_a_restored_store_reports_a_silent_metric_as_no_data(listed: bool) -> None:
    first = WindowStore(spec=WindowSpec(60, 0, T0))
    first.add(_metric(0, "queue_depth", 4.0))
    first.add(_metric(10, "jobs_total", 100.0, kind="counter"))
    first.add(_metric(70, "jobs_total", 160.0, kind="counter"))
    first.add(_event(125, "other"))
    state = pickle.loads(pickle.dumps(first.state()))
    if not listed:
        # As snapshots were before they listed the metric KPIs made.
        del state["metric_kpis"]
    second = WindowStore(spec=WindowSpec(60, 0, T0))

    second.restore(state)
    second.add(_event(250, "other"))
    records = [r for r in second.close_ready() if r.service == "orders"]

    # orders sent nothing after 10:01: its metrics are silent from 10:02 on,
    # each with the unit of its kind (a counter's increase per second).
    silent = {
        (r.kpi, r.unit, r.state)
        for r in records
        if r.window_start >= T0 + timedelta(minutes=2)
    }
    assert silent == {("queue_depth", "", "no_data"), ("jobs_total", "1/s", "no_data")}
