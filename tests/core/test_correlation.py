from datetime import UTC, datetime, timedelta

from foreshock.correlation import CorrelationConfig, Correlator, _stronger
from foreshock.layers import Layer
from foreshock.records import EarlyWarning, Evidence, Incident, KpiScore
from foreshock.topology import Topology
from tests.core.scores import scored

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
TOPOLOGY = Topology.from_edges(
    [("web", "api"), ("app", "api"), ("api", "orders"), ("orders", "orders-db")],
    {
        "web": Layer.FRONTEND,
        "app": Layer.MOBILE,
        "api": Layer.API,
        "orders": Layer.BACKEND,
        "orders-db": Layer.DATABASE,
    },
)
SERIES = [
    (Layer.FRONTEND, "web", "page_load_p75_ms", "up"),
    (Layer.API, "api", "latency_p95_ms", "up"),
    (Layer.DATABASE, "orders-db", "query_time_p95_ms", "up"),
    (Layer.BACKEND, "orders", "latency_p95_ms", "up"),
]


def _score(
    minute: int, layer: Layer, service: str, kpi: str, bad: bool, state: str = "ok"
) -> KpiScore:
    start = T0 + timedelta(minutes=minute)
    if state != "ok":
        return scored(
            start, layer, service, kpi, None, expected=None, anomalous=bad, state=state
        )
    value = 900.0 if bad else 100.0
    return scored(
        start,
        layer,
        service,
        kpi,
        value,
        expected=100.0,
        anomalous=bad,
        score=0.99 if bad else 0.1,
    )


def _run(bad_from: dict[str, int], minutes: int, gone: dict[str, int] | None = None):
    """Feed every series each minute; a service is bad from its minute on."""
    gone = gone or {}
    config = CorrelationConfig(resolve_after_windows=3, confirm_windows=1)
    correlator = Correlator(TOPOLOGY, config)
    out = []
    for minute in range(minutes):
        for layer, service, kpi, _ in SERIES:
            bad = (
                bad_from.get(service, 10**6)
                <= minute
                < bad_from.get(service + ":until", 10**6)
            )
            state = "no_data" if gone.get(service, 10**6) <= minute else "ok"
            out += correlator.observe(_score(minute, layer, service, kpi, bad, state))
    return out + correlator.flush()


def test_database_fault_reaching_users_is_one_incident_with_its_lead_time() -> None:
    out = _run({"orders-db": 3, "orders": 4, "api": 5, "web": 7}, minutes=12)

    incidents = [o for o in out if isinstance(o, Incident)]
    warnings = [o for o in out if isinstance(o, EarlyWarning)]

    assert len({i.id for i in incidents}) == 1
    last = incidents[-1]
    assert [c.service for c in last.root_causes][:1] == ["orders-db"]
    assert last.lead_time_s == 4 * 60
    # Users were hit in the 10:07 window, which closes at 10:08.
    assert incidents[0].opened_at == T0 + timedelta(minutes=8)
    # The database warned at 10:03, before users felt anything at 10:07.
    assert warnings[0].service == "orders-db"
    assert warnings[0].onset == T0 + timedelta(minutes=3)
    assert warnings[0].at_risk == ["app", "web"]
    assert warnings[0].id in last.early_warnings


def test_incident_resolves_after_users_are_back_to_normal() -> None:
    out = _run(
        {"orders-db": 3, "orders-db:until": 9, "web": 5, "web:until": 9}, minutes=16
    )

    incidents = [o for o in out if isinstance(o, Incident)]

    assert incidents[-1].status == "resolved"
    # Normal again from 10:09; the third normal window closes at 10:12.
    assert incidents[-1].resolved_at == T0 + timedelta(minutes=12)


def test_missing_data_never_resolves_an_incident() -> None:
    out = _run({"orders-db": 3, "web": 5, "web:until": 8}, minutes=20, gone={"web": 8})

    incidents = [o for o in out if isinstance(o, Incident)]

    assert incidents
    assert all(i.status != "resolved" for i in incidents)


def test_deep_stack_anomaly_off_any_user_path_is_no_warning() -> None:
    lone = Topology.from_edges([], {"batch-db": Layer.DATABASE})
    correlator = Correlator(lone)

    out = []
    for minute in range(3):
        score = _score(minute, Layer.DATABASE, "batch-db", "query_time_p95_ms", True)
        out += correlator.observe(score)
    out += correlator.flush()

    assert out == []


def test_a_lone_anomalous_window_needs_confirmation_when_asked() -> None:
    correlator = Correlator(TOPOLOGY, CorrelationConfig(confirm_windows=2))

    out = []
    for minute, bad in enumerate([False, True, False, True, True, False]):
        score = _score(minute, Layer.FRONTEND, "web", "page_load_p75_ms", bad)
        out += correlator.observe(score)
    out += correlator.flush()

    opened = [o for o in out if isinstance(o, Incident) and o.status == "open"]
    assert [o.opened_at for o in opened] == [T0 + timedelta(minutes=5)]
    assert opened[0].user_facing[0].onset == T0 + timedelta(minutes=3)


def _adapting(web_after: float) -> list[Incident]:
    """The database and the web are slow (900 ms against 100) from 10:03 and
    10:05 to 10:14; from 10:14 the web is at `web_after`. The web's detector
    flags it only until 10:08: from 10:09 it has learned 900 ms as normal."""
    config = CorrelationConfig(resolve_after_windows=3, confirm_windows=1)
    correlator = Correlator(TOPOLOGY, config)
    out = []
    for minute in range(24):
        for layer, service, kpi, _ in SERIES:
            slow = minute < 14 and minute >= {"orders-db": 3, "web": 5}.get(service, 99)
            after = web_after if service == "web" and minute >= 14 else 100.0
            value = 900.0 if slow else after
            adapted = service == "web" and minute >= 9
            start = T0 + timedelta(minutes=minute)
            score = scored(
                start,
                layer,
                service,
                kpi,
                value,
                expected=900.0 if adapted else 100.0,
                anomalous=slow and not adapted,
            )
            out += correlator.observe(score)
    return [o for o in out + correlator.flush() if isinstance(o, Incident)]


def test_an_incident_stays_open_while_users_suffer_though_the_detector_adapted() -> (
    None
):
    incidents = _adapting(web_after=100.0)

    # Back to 100 ms from 10:14; the third window back closes at 10:17, not
    # at 10:12 as the adapted detector alone would have it.
    assert incidents[-1].status == "resolved"
    assert incidents[-1].resolved_at == T0 + timedelta(minutes=17)


def test_a_partial_recovery_is_not_back_to_baseline() -> None:
    # 400 ms still lacks 300 of the 800 the web lacked when it joined, more
    # than the quarter `resolve_excess_share` allows.
    incidents = _adapting(web_after=400.0)

    assert incidents
    assert all(i.status != "resolved" for i in incidents)


def _evidence(score: float, minute: int) -> Evidence:
    at = T0 + timedelta(minutes=minute)
    return Evidence(
        layer=Layer.API,
        service="api",
        kpi="latency_p95_ms",
        dimension="speed",
        direction="up",
        value=100.0 * score,
        expected=10.0,
        score=score,
        onset=at,
        window_start=at,
    )


def test_an_incidents_evidence_keeps_its_strongest_window_from_its_first_onset() -> (
    None
):
    first, weaker, stronger = _evidence(0.9, 1), _evidence(0.6, 5), _evidence(0.95, 7)

    kept = _stronger(_stronger(first, weaker), stronger)

    assert _stronger(first, weaker) == first
    assert (kept.score, kept.value, kept.onset) == (
        0.95,
        95.0,
        T0 + timedelta(minutes=1),
    )
    assert kept.window_start == T0 + timedelta(minutes=7)


def test_an_incidents_evidence_keeps_the_baseline_it_was_first_judged_against() -> None:
    # By minute 7 the detector has learned part of the failure: it expects
    # 60 where it expected 10 when the trouble began.
    first = _evidence(0.9, 1)
    later = _evidence(0.95, 7).model_copy(update={"expected": 60.0})

    kept = _stronger(first, later)

    assert (kept.value, kept.expected, kept.onset) == (95.0, 10.0, first.onset)


def test_the_lead_time_counts_from_the_cause_not_from_unrelated_earlier_trouble() -> (
    None
):
    # The web also calls a payment provider, slow from 10:00 on; the
    # database fault starts at 10:03 and reaches users at 10:07.
    topology = TOPOLOGY.with_calls(
        [("web", "payments")], {"payments": Layer.THIRD_PARTY}
    )
    correlator = Correlator(
        topology, CorrelationConfig(resolve_after_windows=3, confirm_windows=1)
    )
    bad_from = {"payments": 0, "orders-db": 3, "orders": 4, "api": 5, "web": 7}
    series = [*SERIES, (Layer.THIRD_PARTY, "payments", "latency_p95_ms", "up")]
    out = []
    for minute in range(12):
        for layer, service, kpi, _ in series:
            bad = bad_from[service] <= minute
            out += correlator.observe(_score(minute, layer, service, kpi, bad))

    last = [o for o in out if isinstance(o, Incident)][-1]

    assert last.root_causes[0].service == "orders-db"
    assert "payments" in {e.service for e in last.chain}
    # From the database's 10:03 to the users' 10:07, not from 10:00.
    assert last.lead_time_s == 4 * 60


def test_a_warning_whose_trouble_stopped_ends_after_the_cool_down() -> None:
    # orders-db is slow from 10:03 to 10:08, users never feel it.
    config = CorrelationConfig(
        resolve_after_windows=3, confirm_windows=1, cooldown_s=600
    )
    correlator = Correlator(TOPOLOGY, config)
    out = []
    for minute in range(40):
        for layer, service, kpi, _ in SERIES:
            bad = service == "orders-db" and 3 <= minute < 8
            out += correlator.observe(_score(minute, layer, service, kpi, bad))

    warnings = [o for o in out if isinstance(o, EarlyWarning)]
    last_trouble = T0 + timedelta(minutes=8)  # the end of the last bad window

    assert {w.id for w in warnings} == {warnings[0].id}
    assert warnings[-1].status == "ended"
    assert [w.status for w in warnings[:-1]] == ["open"] * (len(warnings) - 1)
    # Said in the first window closing ten minutes after the trouble's last.
    ended_at = warnings[-1].published_at
    assert last_trouble + timedelta(minutes=10) <= ended_at
    assert ended_at < last_trouble + timedelta(minutes=11)
    assert warnings[-1].evidence == warnings[-2].evidence


def test_an_earlier_trouble_of_the_cause_that_had_stopped_gives_no_lead_time() -> None:
    # orders-db is slow 10:03-10:08 and users never feel it; from 10:20 it
    # is slow again, the api from 10:22 and the web from 10:24.
    def bad(service: str, minute: int) -> bool:
        if service == "orders-db":
            return 3 <= minute < 8 or minute >= 20
        return minute >= {"api": 22, "web": 24}.get(service, 10**6)

    correlator = Correlator(
        TOPOLOGY, CorrelationConfig(resolve_after_windows=3, confirm_windows=1)
    )
    out = []
    for minute in range(30):
        for layer, service, kpi, _ in SERIES:
            out += correlator.observe(
                _score(minute, layer, service, kpi, bad(service, minute))
            )

    last = [o for o in out if isinstance(o, Incident)][-1]

    assert last.root_causes[0].service == "orders-db"
    assert last.lead_time_s == 4 * 60


def test_a_warning_that_ends_while_its_incident_is_open_stays_listed() -> None:
    # The database warns from 10:03, users are hit at 10:07 and stay hit
    # past the warning's ten-minute cool-down.
    config = CorrelationConfig(
        resolve_after_windows=3, confirm_windows=1, cooldown_s=600
    )
    correlator = Correlator(TOPOLOGY, config)
    bad_from = {"orders-db": 3, "orders": 4, "api": 5, "web": 7}
    out = []
    for minute in range(40):
        for layer, service, kpi, _ in SERIES:
            bad = bad_from[service] <= minute < 30
            out += correlator.observe(_score(minute, layer, service, kpi, bad))

    warnings = [o for o in out if isinstance(o, EarlyWarning)]
    incidents = [o for o in out if isinstance(o, Incident)]
    ended = [w for w in warnings if w.status == "ended"]

    assert ended and ended[0].published_at < incidents[-1].updated_at
    assert all(ended[0].id in i.early_warnings for i in incidents)
