"""A service that stops sending telemetry: an outage when users fail, else a gap.

Shared cases C04 and C05, run through the whole flow from a list source.
"""

from datetime import UTC, datetime

from bytewax.testing import TestingSink, run_main

from connectors.iterables import IterableSource
from flows.pipeline import FlowConfig, Record, build_flow
from foreshock.layers import Layer
from foreshock.records import Anomaly, DataGap, Incident, KpiScore
from foreshock.topology import Topology
from foreshock.windows import WindowSpec
from tests.cases import batches, event_messages

WINDOW = WindowSpec(60, 30, datetime(2025, 3, 4, tzinfo=UTC))


def _run(case: str, topology: Topology) -> list[Record]:
    out: list[Record] = []
    messages = event_messages(case)
    source = IterableSource(lambda: batches(messages, 50))
    config = FlowConfig(window=WINDOW, topology=topology)
    run_main(build_flow(source, TestingSink(out), config))
    return out


def _states(out: list[Record], service: str, kpi: str) -> dict[str, str]:
    return {
        r.kpi.window_start.strftime("%H:%M"): r.kpi.state
        for r in out
        if isinstance(r, KpiScore) and r.kpi.service == service and r.kpi.kpi == kpi
    }


def test_a_silent_service_while_checks_fail_is_an_outage_case_c04() -> None:
    topology = Topology.from_edges(
        [("checkout-journey", "checkout-api")],
        {
            "checkout-journey": Layer.SYNTHETIC,
            "checkout-api": Layer.API,
            "catalog-api": Layer.API,
        },
    )

    out = _run("C04", topology)

    # checkout-api sent nothing from 10:10: no_data windows, not zeros.
    states = _states(out, "checkout-api", "requests_per_s")
    assert [states[f"10:{m:02d}"] for m in range(10)] == ["ok"] * 10
    assert [states[f"10:{m:02d}"] for m in range(10, 19)] == ["no_data"] * 9
    incidents = [r for r in out if isinstance(r, Incident)]
    # The checks fail from 10:10, breaching their objective (half of the
    # locations passing) when the 10:10 window closes at 10:11. Two windows
    # of silence are evidence once the 10:11 window closes, at 10:12.
    assert incidents[0].status == "open"
    assert incidents[0].opened_at == datetime(2025, 3, 4, 10, 11, tzinfo=UTC)
    by_1012 = [
        i
        for i in incidents
        if i.updated_at <= incidents[0].opened_at.replace(minute=12)
    ]
    settled = by_1012[-1]
    assert settled.id == incidents[0].id
    assert settled.root_causes[0].service == "checkout-api"
    cited = [e.describe() for e in settled.root_causes[0].evidence]
    assert cited == ["no telemetry from checkout-api since 10:10"]
    assert [(e.service, e.kpi, e.value) for e in settled.user_facing] == [
        ("checkout-journey", "check_success_ratio", 0.0)
    ]
    # The data never came back: the incident must not resolve.
    assert all(i.status != "resolved" for i in incidents)
    assert not [r for r in out if isinstance(r, DataGap)]


def test_a_silent_service_while_users_are_fine_is_a_data_gap_case_c05() -> None:
    topology = Topology.from_edges(
        [("web-storefront", "catalog-api"), ("catalog-journey", "catalog-api")],
        {
            "web-storefront": Layer.FRONTEND,
            "catalog-journey": Layer.SYNTHETIC,
            "catalog-api": Layer.API,
        },
    )

    out = _run("C05", topology)

    states = _states(out, "catalog-api", "requests_per_s")
    assert {m for m, s in states.items() if s == "no_data"} == {
        f"10:{m:02d}" for m in range(8, 18)
    }
    assert [r for r in out if isinstance(r, Incident)] == []
    gaps = [r for r in out if isinstance(r, DataGap)]
    assert [(g.status, g.service) for g in gaps] == [
        ("open", "catalog-api"),
        ("closed", "catalog-api"),
    ]
    opened, closed = gaps
    assert opened.id == closed.id
    assert opened.since == datetime(2025, 3, 4, 10, 8, tzinfo=UTC)
    # Two silent windows (10:08, 10:09) are known once the 10:09 one closes.
    assert opened.published_at == datetime(2025, 3, 4, 10, 10, tzinfo=UTC)
    assert opened.users == ["catalog-journey", "web-storefront"]
    # Data flows again in the 10:18 window, judged when it closes.
    assert closed.until == datetime(2025, 3, 4, 10, 19, tzinfo=UTC)
    # Nothing of the gap was learned, so its end is no "recovery" anomaly.
    assert not [r for r in out if isinstance(r, Anomaly) and r.service == "catalog-api"]
