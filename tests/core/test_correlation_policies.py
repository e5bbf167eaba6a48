"""What pages and what does not: warm-up, demand, warning groups, long incidents.

Each test feeds hand-built scored windows, one minute each, and checks the
incidents and early warnings against what the rules stated in
`foreshock.correlation` imply for that input.
"""

import pickle
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from flows.steps import CorrelateLogic
from foreshock.correlation import CorrelationConfig, Correlator, Output
from foreshock.kpis import Dimension
from foreshock.layers import Layer
from foreshock.records import EarlyWarning, Incident, KpiScore
from foreshock.topology import Topology
from tests.core.scores import scored

T0 = datetime(2025, 3, 4, 8, 0, tzinfo=UTC)

# web and app call the api; the api calls orders and catalog; both use the db.
SHOP = Topology.from_edges(
    [
        ("web", "api"),
        ("app", "api"),
        ("api", "orders"),
        ("api", "catalog"),
        ("orders", "db"),
        ("catalog", "db"),
    ],
    {
        "web": Layer.FRONTEND,
        "app": Layer.MOBILE,
        "api": Layer.API,
        "orders": Layer.BACKEND,
        "catalog": Layer.BACKEND,
        "db": Layer.DATABASE,
    },
)

# (layer, service, kpi, dimension)
Series = tuple[Layer, str, str, Dimension]
PAGE_LOAD: Series = (Layer.FRONTEND, "web", "page_load_p75_ms", "speed")
AJAX_PER_PAGE: Series = (Layer.FRONTEND, "web", "ajax_per_page", "throughput")
API_RATE: Series = (Layer.API, "api", "requests_per_s", "throughput")
ORDERS_RATE: Series = (Layer.BACKEND, "orders", "requests_per_s", "throughput")
ORDERS_LATENCY: Series = (Layer.BACKEND, "orders", "latency_p95_ms", "speed")
CATALOG_LATENCY: Series = (Layer.BACKEND, "catalog", "latency_p95_ms", "speed")
CATALOG_RATE: Series = (Layer.BACKEND, "catalog", "requests_per_s", "throughput")
DB_RATE: Series = (Layer.DATABASE, "db", "queries_per_s", "throughput")
DB_TIME: Series = (Layer.DATABASE, "db", "query_time_p95_ms", "speed")
DB_TIME_P99: Series = (Layer.DATABASE, "db", "query_time_p99_ms", "speed")
DB_MEMORY: Series = (Layer.DATABASE, "db", "memory_used_pct", "utilisation")


def _score(
    minute: int,
    series: Series,
    bad: bool,
    detector_state: str = "ready",
    bad_value: float = 3.0,
) -> KpiScore:
    layer, service, kpi, dimension = series
    return scored(
        T0 + timedelta(minutes=minute),
        layer,
        service,
        kpi,
        bad_value if bad else 1.0,
        expected=1.0,
        anomalous=bad,
        unit="1",
        dimension=dimension,
        direction="both" if dimension == "throughput" else "up",
        detector_state=detector_state,
    )


def _feed(
    correlator: Correlator,
    minutes: int,
    bad: dict[Series, tuple[int, int]],
    warming_until: int = 0,
) -> list[Output]:
    """Every series of `bad` each minute; bad within its [from, until) minutes."""
    out: list[Output] = []
    for minute in range(minutes):
        state = "warming_up" if minute < warming_until else "ready"
        for series, (start, until) in bad.items():
            score = _score(minute, series, start <= minute < until, state)
            out += correlator.observe(score)
    return out + correlator.flush()


def _incidents(out: Iterable[Output]) -> list[Incident]:
    return [o for o in out if isinstance(o, Incident)]


def _warnings(out: Iterable[Output]) -> list[EarlyWarning]:
    return [o for o in out if isinstance(o, EarlyWarning)]


def test_warming_up_anomalies_page_unless_configured_not_to() -> None:
    bad = {PAGE_LOAD: (2, 5), DB_TIME: (1, 5)}
    quiet = CorrelationConfig(page_while_warming_up=False)

    paging = _feed(Correlator(SHOP), minutes=8, bad=bad, warming_until=6)
    silent = _feed(Correlator(SHOP, quiet), minutes=8, bad=bad, warming_until=6)

    opened = _incidents(paging)[0]
    assert opened.status == "open"
    assert [c.service for c in opened.root_causes][:1] == ["db"]
    assert silent == []


def test_more_traffic_at_the_front_end_is_not_a_user_symptom() -> None:
    out = _feed(Correlator(SHOP), minutes=8, bad={AJAX_PER_PAGE: (2, 6)})

    assert _incidents(out) == []
    # Nor is it deep-stack trouble to warn about.
    assert _warnings(out) == []


def test_extra_calls_from_the_front_end_blame_it_not_the_services_they_load() -> None:
    # A release makes web call the api twice per page: the api, orders and the
    # db see more requests from minute 2, orders slows down at once, and the
    # pages load slowly from minute 4.
    bad = {
        AJAX_PER_PAGE: (2, 20),
        API_RATE: (2, 20),
        ORDERS_RATE: (2, 20),
        DB_RATE: (2, 20),
        ORDERS_LATENCY: (2, 20),
        PAGE_LOAD: (4, 20),
    }

    out = _feed(Correlator(SHOP), minutes=10, bad=bad)

    incident = _incidents(out)[-1]
    ranked = [c.service for c in incident.root_causes]
    assert ranked[0] == "web"
    web = incident.root_causes[0]
    assert any("started here: api, db, orders" in r for r in web.reasons)
    orders = next(c for c in incident.root_causes if c.service == "orders")
    assert any("extra requests sent by web" in r for r in orders.reasons)
    # The demand showed at minute 2, users felt it at minute 4.
    assert incident.lead_time_s == 120


def test_a_service_slowed_by_the_extra_calls_is_ranked_below_their_sender() -> None:
    # As above, but orders' own request rate is too noisy to be flagged: its
    # slowdown, starting with the extra calls, is still load from web.
    bad = {
        AJAX_PER_PAGE: (2, 20),
        API_RATE: (2, 20),
        CATALOG_RATE: (2, 20),
        DB_RATE: (2, 20),
        ORDERS_LATENCY: (2, 20),
        PAGE_LOAD: (4, 20),
    }

    out = _feed(Correlator(SHOP), minutes=10, bad=bad)

    incident = _incidents(out)[-1]
    assert [c.service for c in incident.root_causes][:2] == ["web", "orders"]
    web, orders = incident.root_causes[:2]
    assert "no earlier trouble of a dependency explains it" in web.reasons
    assert any("extra requests sent by web" in r for r in orders.reasons)
    # score = strength x graph; how early each started is a reason only.
    # web cites five series at 0.95 (its page load, its calls per page, and
    # the rises at api, catalog and db): 0.95 + 4 x 0.05. orders cites one
    # and is ranked down as loaded (x 0.6).
    assert web.score == pytest.approx(1.15, abs=1e-4)
    assert orders.score == pytest.approx(0.95 * 0.6, abs=1e-4)


def test_more_queries_per_request_blame_the_caller_whose_own_rate_held() -> None:
    # orders starts issuing more queries per request: the db sees more
    # queries, orders' own request rate stays put, so orders is where the
    # demand starts. catalog, the db's other caller, is equally suspect from
    # the call graph alone, but orders is also slower: its own evidence
    # breaks the tie.
    bad = {
        DB_RATE: (2, 20),
        DB_TIME: (3, 20),
        ORDERS_LATENCY: (3, 20),
        ORDERS_RATE: (99, 99),
        PAGE_LOAD: (5, 20),
    }

    out = _feed(Correlator(SHOP), minutes=10, bad=bad)

    ranked = [c.service for c in _incidents(out)[-1].root_causes]
    assert ranked[0] == "orders"
    assert "catalog" in ranked


def test_deep_trouble_starting_together_is_one_warning_that_grows() -> None:
    # orders slows at minute 2, the db at minute 3: one warning, updated once.
    # catalog slows at minute 12, past the 5-minute episode gap: a new one.
    bad = {ORDERS_LATENCY: (2, 20), DB_TIME: (3, 20), CATALOG_LATENCY: (12, 20)}

    out = _warnings(_feed(Correlator(SHOP), minutes=15, bad=bad))

    assert [(w.status, w.services) for w in out] == [
        ("open", ["orders"]),
        ("updated", ["orders", "db"]),
        ("open", ["catalog"]),
    ]
    assert out[0].id == out[1].id != out[2].id
    assert out[1].at_risk == ["app", "web"]


def test_unadjacent_trouble_starting_in_the_same_window_is_one_warning() -> None:
    # orders and catalog call no one of each other. Slow from the same
    # minute, they are one failure seen twice; a minute apart, two.
    together = {CATALOG_LATENCY: (2, 20), ORDERS_LATENCY: (2, 20)}
    apart = {CATALOG_LATENCY: (2, 20), ORDERS_LATENCY: (3, 20)}

    one = _warnings(_feed(Correlator(SHOP), minutes=8, bad=together))
    two = _warnings(_feed(Correlator(SHOP), minutes=8, bad=apart))

    assert [(w.status, w.services) for w in one] == [
        ("open", ["catalog"]),
        ("updated", ["catalog", "orders"]),
    ]
    assert [(w.status, w.services) for w in two] == [
        ("open", ["catalog"]),
        ("open", ["orders"]),
    ]


def test_one_window_of_two_kinds_of_trouble_warns_at_once() -> None:
    # From minute 2 the db is slower and busier: two kinds of trouble in one
    # window, so it warns when that window closes (08:03). Two percentiles
    # of its query time are one kind: that waits for a second window (08:04).
    two_kinds = {DB_TIME: (2, 8), DB_MEMORY: (2, 8)}
    one_kind = {DB_TIME: (2, 8), DB_TIME_P99: (2, 8)}

    at_once = _warnings(_feed(Correlator(SHOP), minutes=6, bad=two_kinds))
    confirmed = _warnings(_feed(Correlator(SHOP), minutes=6, bad=one_kind))

    assert [(w.status, f"{w.published_at:%H:%M}") for w in at_once] == [
        ("open", "08:03")
    ]
    assert [(w.status, f"{w.published_at:%H:%M}") for w in confirmed] == [
        ("open", "08:04")
    ]
    assert at_once[0].onset == confirmed[0].onset == T0 + timedelta(minutes=2)


def test_new_trouble_of_a_service_already_in_trouble_confirms_as_usual() -> None:
    # The db's memory is up from minute 1 and warns when minute 2 closes. It
    # slows down from minute 6, past the episode gap: new trouble, but of a
    # service busy since minute 1, so it waits for its second window (08:08)
    # although memory and query time make two kinds at minute 6.
    bad = {DB_MEMORY: (1, 12), DB_TIME: (6, 12)}

    out = _warnings(_feed(Correlator(SHOP), minutes=10, bad=bad))

    assert [(w.status, f"{w.published_at:%H:%M}") for w in out] == [
        ("open", "08:03"),
        ("open", "08:08"),
    ]


def test_warning_at_once_can_be_turned_off() -> None:
    two_kinds = {DB_TIME: (2, 8), DB_MEMORY: (2, 8)}
    patient = CorrelationConfig(warn_witnesses=0)

    out = _warnings(_feed(Correlator(SHOP, patient), minutes=6, bad=two_kinds))

    assert [f"{w.published_at:%H:%M}" for w in out] == ["08:04"]


@pytest.mark.parametrize(
    ("memory", "warned"),
    [
        # 2 % over its expected value of 1.0, under the 5 % floor: no trouble.
        (1.02, []),
        # 50 % over: trouble, confirmed by its second window, 08:03 to 08:04.
        (1.5, ["08:04"]),
    ],
)
def test_a_resource_barely_busier_than_expected_is_no_trouble(
    memory: float, warned: list[str]
) -> None:
    correlator = Correlator(SHOP)

    out: list[Output] = []
    for minute in range(8):
        score = _score(minute, DB_MEMORY, minute >= 2, bad_value=memory)
        out += correlator.observe(score)
    out += correlator.flush()

    assert [f"{w.published_at:%H:%M}" for w in _warnings(out)] == warned


@pytest.mark.parametrize(
    ("lone", "warned"),
    [
        # Two lone anomalous windows in the last three hours: two in a row
        # from minute 40 confirm as usual, when minute 41 closes.
        ({10, 20}, ["08:42"]),
        # Three: the series is noisy for now and needs a third window.
        ({10, 20, 30}, ["08:43"]),
    ],
)
def test_a_series_that_keeps_blipping_needs_one_window_more(
    lone: set[int], warned: list[str]
) -> None:
    bad_minutes = lone | {40, 41, 42, 43}
    correlator = Correlator(SHOP)

    out: list[Output] = []
    for minute in range(46):
        out += correlator.observe(_score(minute, DB_TIME, minute in bad_minutes))
    out += correlator.flush()

    assert [f"{w.published_at:%H:%M}" for w in _warnings(out)] == warned
    assert all(w.onset == T0 + timedelta(minutes=40) for w in _warnings(out))


def test_an_incident_longer_than_the_lookback_keeps_its_lead_time() -> None:
    # The db slows at minute 1, users at minute 4; both stay bad for an hour,
    # four times the 15-minute lookback, and the db recovers first.
    bad = {DB_TIME: (1, 50), PAGE_LOAD: (4, 60)}

    out = _feed(Correlator(SHOP), minutes=70, bad=bad)

    resolved = [i for i in _incidents(out) if i.status == "resolved"]
    assert len(resolved) == 1
    assert resolved[0].lead_time_s == 180
    assert resolved[0].root_causes[0].service == "db"


def test_a_batch_closing_several_windows_is_judged_in_window_order() -> None:
    # The detector step hands on a batch grouped by series: all minutes of
    # the db first, then all minutes of the page load.
    bad = {DB_TIME: (1, 20), PAGE_LOAD: (3, 20)}
    scores = [
        _score(minute, series, start <= minute < until)
        for series, (start, until) in bad.items()
        for minute in range(8)
    ]

    in_order = Correlator(SHOP)
    expected = [
        o
        for s in sorted(scores, key=lambda s: s.kpi.window_end)
        for o in in_order.observe(s)
    ]
    logic = CorrelateLogic(Correlator(SHOP))
    got, _ = logic.on_batch(scores)

    assert list(got) == expected
    assert _incidents(expected)[0].lead_time_s == 120


def test_trouble_within_the_cool_down_of_an_incident_is_its_tail() -> None:
    # Users are hit at minutes 2-4 by a slow db (from minute 1); the incident
    # resolves after five normal windows (its last, minute 9, closes at 10).
    # The db slows again at 14-17 (no new warning: the incident's tail) and
    # users are hit again at 20-22: the same incident reopens.
    bad_minutes = {
        DB_TIME: {1, 2, 3, 4, 14, 15, 16, 17},
        PAGE_LOAD: {2, 3, 4, 20, 21, 22},
    }
    correlator = Correlator(SHOP)
    out: list[Output] = []
    for minute in range(30):
        for series, minutes in bad_minutes.items():
            out += correlator.observe(_score(minute, series, minute in minutes))
    out += correlator.flush()

    incidents = _incidents(out)
    assert len({i.id for i in incidents}) == 1
    pages = [(i.status, f"{i.updated_at:%H:%M}") for i in incidents]
    assert pages[0] == ("open", "08:03")
    assert ("resolved", "08:10") in pages
    assert ("open", "08:21") in pages
    assert _warnings(out) == []


def _after_an_incident(bad_minutes: dict[Series, set[int]]) -> list[Output]:
    """Users hit at minutes 2-4 by a slow db (from minute 1), then `bad_minutes`.

    The incident blames the db and resolves at 08:10 (see above).
    """
    bad = {DB_TIME: {1, 2, 3, 4}, PAGE_LOAD: {2, 3, 4}}
    for series, minutes in bad_minutes.items():
        bad[series] = bad.get(series, set()) | minutes
    correlator = Correlator(SHOP)
    out: list[Output] = []
    for minute in range(25):
        for series, minutes in bad.items():
            out += correlator.observe(_score(minute, series, minute in minutes))
    return out + correlator.flush()


def test_new_trouble_elsewhere_after_an_incident_resolved_warns() -> None:
    # catalog turns slow at 14, after the incident resolved: not what it
    # left behind, nor the service it blamed. It warns once confirmed.
    out = _after_an_incident({CATALOG_LATENCY: {14, 15, 16, 17}})

    pages = [(w.service, w.status, f"{w.published_at:%H:%M}") for w in _warnings(out)]
    assert pages == [("catalog", "open", "08:16")]


def test_the_blamed_service_acting_up_again_joins_a_new_warning() -> None:
    # The db slows again at 14 (the incident's tail: no warning of its
    # own); orders, which calls it, slows from 15 and warns at 08:17. The
    # db joins that warning a window later and, slow first, explains it.
    out = _after_an_incident({DB_TIME: {14, 15, 16, 17}, ORDERS_LATENCY: {15, 16, 17}})

    pages = [
        (w.status, f"{w.published_at:%H:%M}", [c.service for c in w.root_causes])
        for w in _warnings(out)
    ]
    assert pages == [
        ("open", "08:17", ["orders"]),
        ("updated", "08:18", ["db", "orders"]),
    ]


def test_calls_seen_in_traces_extend_the_call_graph() -> None:
    # Nothing configured says web calls payments; the edge series of its
    # spans ("web->payments", timed at the caller) do. Calls to payments
    # slow down from minute 2, and users at minute 4.
    edge: Series = (Layer.FRONTEND, "web->payments", "latency_p95_ms", "speed")
    alone = Topology.from_edges([], {"web": Layer.FRONTEND})
    bad = {edge: (2, 20), PAGE_LOAD: (4, 20)}

    correlator = Correlator(alone)
    out = _feed(correlator, minutes=8, bad=bad)

    assert ("web", "payments") in correlator.topology.calls
    incident = _incidents(out)[-1]
    top = incident.root_causes[0]
    assert top.service == "payments"
    assert [e.kpi for e in top.evidence] == ["latency_p95_ms of calls from web"]
    assert incident.lead_time_s == 120


def test_the_correlator_resumes_from_a_snapshot_mid_incident() -> None:
    # Snapshot while an incident is open and a warning group is live; the
    # restored correlator publishes exactly what the uninterrupted one does.
    bad = {DB_TIME: (1, 12), ORDERS_LATENCY: (2, 12), PAGE_LOAD: (4, 9)}
    whole = Correlator(SHOP)
    first = Correlator(SHOP)
    expected = _feed(whole, minutes=20, bad=bad)

    out: list[Output] = []
    for minute in range(20):
        if minute == 6:
            first = pickle.loads(pickle.dumps(first))
        for series, (start, until) in bad.items():
            out += first.observe(_score(minute, series, start <= minute < until))
    out += first.flush()

    assert out == expected
    assert [i.status for i in _incidents(out)][-1] == "resolved"


def test_settling_keeps_windows_whole_when_processes_interleave() -> None:
    # Two processes: the one with the db and orders is a window ahead, so
    # the page load of minute m arrives after their minute m + 1. Waiting one
    # window more judges every window whole, exactly as in order; without it
    # the page load's windows are judged apart from theirs.
    bad = {DB_TIME: (1, 12), ORDERS_LATENCY: (2, 12), PAGE_LOAD: (3, 12)}
    in_order = _feed(Correlator(SHOP), minutes=18, bad=bad)

    def interleaved(settle: int) -> list[Output]:
        correlator = Correlator(SHOP, CorrelationConfig(settle_windows=settle))
        out: list[Output] = []
        for minute in range(19):
            for series in (DB_TIME, ORDERS_LATENCY):
                if minute < 18:
                    start, until = bad[series]
                    bad_now = start <= minute < until
                    out += correlator.observe(_score(minute, series, bad_now))
            if minute >= 1:
                m = minute - 1
                out += correlator.observe(_score(m, PAGE_LOAD, 3 <= m < 12))
        return out + correlator.flush()

    assert interleaved(settle=1) == in_order
    assert interleaved(settle=0) != in_order
