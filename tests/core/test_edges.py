"""Blaming the right end of troubled call edges, and what the correlator does
with it."""

from datetime import UTC, datetime, timedelta

from foreshock.correlation import Correlator
from foreshock.edges import suspect_of, suspects
from foreshock.layers import Layer
from foreshock.ranking import rank_candidates
from foreshock.records import EarlyWarning, Evidence, KpiScore
from foreshock.topology import Topology
from tests.core.scores import scored

T0 = datetime(2025, 3, 4, 8, 0, tzinfo=UTC)

# web calls the api; the api calls orders, catalog and search; a batch job
# calls all three too.
GRAPH = Topology.from_edges(
    [
        ("web", "api"),
        ("api", "orders"),
        ("api", "catalog"),
        ("api", "search"),
        ("jobs", "orders"),
        ("jobs", "catalog"),
        ("jobs", "search"),
    ],
    {
        "web": Layer.FRONTEND,
        "api": Layer.API,
        "orders": Layer.BACKEND,
        "catalog": Layer.BACKEND,
        "search": Layer.BACKEND,
        "jobs": Layer.BACKEND,
    },
)


def test_calls_slow_from_every_caller_blame_the_callee() -> None:
    troubled = ["api->orders", "jobs->orders", "orders"]

    assert suspects(troubled, GRAPH) == {
        "api->orders": "orders",
        "jobs->orders": "orders",
    }


def test_every_call_of_one_caller_slow_blames_the_caller() -> None:
    # The api's three calls are slow (3 of 3); each callee is slow from one
    # of its two callers only (1 of 2): the api is the common end.
    troubled = ["api->orders", "api->catalog", "api->search"]

    assert suspects(troubled, GRAPH) == dict.fromkeys(troubled, "api")


def test_a_larger_share_of_a_callers_calls_blames_it() -> None:
    # Two of the api's three calls are slow (2/3), against one of two callers
    # of orders and of search (1/2); jobs has one slow call only.
    troubled = ["api->orders", "api->search", "jobs->catalog"]

    assert suspects(troubled, GRAPH) == {
        "api->orders": "api",
        "api->search": "api",
        "jobs->catalog": "catalog",
    }


def test_a_tie_between_both_ends_goes_to_the_callee() -> None:
    # Both calls of the api slow (2/2), each callee's only caller (1/1).
    graph = Topology.from_edges([("api", "orders"), ("api", "search")])
    troubled = ["api->orders", "api->search"]

    assert suspects(troubled, graph) == {
        "api->orders": "orders",
        "api->search": "search",
    }


def test_a_series_of_a_service_is_its_own_trouble() -> None:
    assert suspect_of("api", ["api->orders"], GRAPH) == "api"
    assert suspect_of("web->api", [], GRAPH) == "api"


def _score(minute: int, service: str, kpi: str, bad: bool) -> KpiScore:
    start = T0 + timedelta(minutes=minute)
    value = 0.3 if bad else 0.005
    return scored(
        start, Layer.API, service, kpi, value, expected=0.005, anomalous=bad, unit="s"
    )


def _warn(bad_minutes: dict[str, set[int]], minutes: int) -> list[EarlyWarning]:
    correlator = Correlator(GRAPH)
    out = []
    for minute in range(minutes):
        for edge, bad in bad_minutes.items():
            out += correlator.observe(
                _score(minute, edge, "latency_p50_s", minute in bad)
            )
    out += correlator.flush()
    return [o for o in out if isinstance(o, EarlyWarning)]


def test_slow_calls_into_a_service_warn_of_it_before_its_own_series_move() -> None:
    # Both callers of orders see its calls slow from minute 2; orders' own
    # series show nothing (a delay on its network).
    slow = {2, 3, 4, 5}

    warnings = _warn({"api->orders": slow, "jobs->orders": slow}, minutes=8)

    first = warnings[0]
    assert (first.service, f"{first.onset:%H:%M}") == ("orders", "08:02")
    # Two callers timing its calls slow are two witnesses: it warns when its
    # first troubled window closes, not after a second one.
    assert f"{first.published_at:%H:%M}" == "08:03"
    assert first.at_risk == ["web"]
    assert [c.service for c in first.root_causes] == ["orders"]
    assert [e.kpi for e in first.root_causes[0].evidence] == [
        "latency_p50_s of calls from api",
        "latency_p50_s of calls from jobs",
    ]


def test_trouble_again_after_three_quiet_minutes_warns_anew() -> None:
    # Slow from minute 2 to 4, quiet from 5 to 8 (four windows), slow again
    # from minute 9: a new episode (more than 180 s apart), a new warning.
    slow = {2, 3, 4, 9, 10, 11}

    warnings = _warn({"api->search": slow}, minutes=14)

    opened = [(w.status, f"{w.onset:%H:%M}") for w in warnings]
    assert opened == [("open", "08:02"), ("open", "08:09")]


def test_a_dependency_only_busy_explains_no_caller_trouble() -> None:
    # The db's memory rose a minute before the api slowed down: it reaches
    # no caller by itself, so the api's trouble stays its own.
    graph = Topology.from_edges([("web", "api"), ("api", "db")])
    memory = _evidence("db", "memory_usage_pct", "utilisation", minute=1)
    slow_db = _evidence("db", "query_time_p95_ms", "speed", minute=1)
    latency = _evidence("api", "latency_p95_ms", "speed", minute=2)

    hit, window = T0 + timedelta(minutes=2), timedelta(minutes=1)

    busy = rank_candidates(
        graph, {"web"}, hit, {"api": [latency], "db": [memory]}, [], window
    )
    slow = rank_candidates(
        graph, {"web"}, hit, {"api": [latency], "db": [slow_db]}, [], window
    )

    api_busy = next(c for c in busy if c.service == "api")
    api_slow = next(c for c in slow if c.service == "api")
    assert api_busy.reasons == ["no earlier trouble of a dependency explains it"]
    assert api_slow.reasons == ["may be explained by its dependencies: db"]
    # Strength 0.95, times 0.6 if explained.
    assert (api_busy.score, api_slow.score) == (0.95, 0.57)


def _evidence(service: str, kpi: str, dimension: str, minute: int) -> Evidence:
    start = T0 + timedelta(minutes=minute)
    return Evidence(
        layer=Layer.API,
        service=service,
        kpi=kpi,
        dimension=dimension,  # type: ignore[arg-type]
        direction="up",
        value=3.0,
        expected=1.0,
        score=0.95,
        onset=start,
        window_start=start,
    )


def test_more_of_the_same_trouble_of_a_service_joins_its_warning() -> None:
    # The api's median latency is anomalous from minute 2 to 9; its p95
    # joins at minute 6, four minutes after the warning's onset (beyond the
    # 180 s episode gap), while the median's episode goes on: one warning.
    correlator = Correlator(GRAPH)
    out = []
    for minute in range(12):
        out += correlator.observe(
            _score(minute, "api", "latency_p50_s", 2 <= minute <= 9)
        )
        out += correlator.observe(
            _score(minute, "api", "latency_p95_s", 6 <= minute <= 9)
        )
    out += correlator.flush()

    opened = [
        (w.status, f"{w.onset:%H:%M}") for w in out if isinstance(w, EarlyWarning)
    ]
    assert opened == [("open", "08:02")]
