"""Call edges inferred from the order in which services turn anomalous."""

from datetime import UTC, datetime, timedelta

from foreshock.correlation import CorrelationConfig, Correlator
from foreshock.inference import LeadLag
from foreshock.layers import Layer
from foreshock.records import Incident, KpiScore
from foreshock.topology import Topology
from tests.core.scores import scored

T0 = datetime(2025, 3, 4, 8, 0, tzinfo=UTC)


def _at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def test_a_leader_that_reliably_comes_first_becomes_a_callee() -> None:
    lag = LeadLag(window_s=300, min_support=3, min_share=0.5)
    # db trouble, then api two minutes later, three times; cache once alone.
    for start in (0, 60, 120):
        lag.observe("db", _at(start))
        lag.observe("api", _at(start + 2))
    lag.observe("cache", _at(200))

    assert lag.led == {("db", "api"): 3}
    assert lag.calls() == {("api", "db")}


def test_too_little_or_two_way_evidence_infers_nothing() -> None:
    lag = LeadLag(window_s=300, min_support=3, min_share=0.5)
    # Twice db first, twice api first: no direction, and too few anyway.
    for start, first, second in (
        (0, "db", "api"),
        (60, "db", "api"),
        (120, "api", "db"),
        (180, "api", "db"),
    ):
        lag.observe(first, _at(start))
        lag.observe(second, _at(start + 1))
    # Far apart: outside the five-minute window.
    lag.observe("db", _at(300))
    lag.observe("api", _at(310))

    assert lag.led == {("db", "api"): 2, ("api", "db"): 2}
    assert lag.calls() == set()


def _score(minute: int, layer: Layer, service: str, bad: bool) -> KpiScore:
    value = 900.0 if bad else 100.0
    return scored(
        _at(minute),
        layer,
        service,
        "latency_p95_ms",
        value,
        expected=100.0,
        anomalous=bad,
    )


def test_the_correlator_learns_a_call_it_was_never_told_about() -> None:
    # No edges configured. Four times, db slows two minutes before web does;
    # each time both recover after three minutes, and the next comes an hour
    # later (past the cool-down).
    topology = Topology.from_edges([], {"web": Layer.FRONTEND, "db": Layer.DATABASE})
    correlator = Correlator(topology, CorrelationConfig(infer_calls=True))
    bad_db = {m for k in range(4) for m in range(60 * k, 60 * k + 5)}
    bad_web = {m + 2 for m in bad_db}
    out = []
    for minute in range(240):
        out += correlator.observe(
            _score(minute, Layer.DATABASE, "db", minute in bad_db)
        )
        out += correlator.observe(
            _score(minute, Layer.FRONTEND, "web", minute in bad_web)
        )
    out += correlator.flush()

    # The third time db came first, web's own slowdown counted it before the
    # incident opened: from then on, web calls db.
    assert correlator.inferred == {("web", "db")}
    opened = [o for o in out if isinstance(o, Incident) and o.status == "open"]
    assert len(opened) == 4
    # Before the edge, web's incidents cite no dependency; after it, db.
    assert [o.root_causes[0].service for o in opened] == ["web", "web", "db", "db"]
    assert opened[-1].lead_time_s == 120
