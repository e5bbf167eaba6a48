"""Ranking root-cause candidates: which evidence makes a cause, which a symptom."""

from datetime import UTC, datetime, timedelta

from foreshock.kpis import Dimension
from foreshock.layers import Layer
from foreshock.ranking import rank_candidates
from foreshock.records import Candidate, Evidence
from foreshock.topology import Topology

T0 = datetime(2025, 3, 4, 8, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)

# web calls the api and a payment provider; the api calls a queue, a
# database and a search service; the queue calls a worker.
LAYERS = {
    "web": Layer.FRONTEND,
    "api": Layer.API,
    "db": Layer.DATABASE,
    "search": Layer.BACKEND,
    "queue": Layer.INFRASTRUCTURE,
    "worker": Layer.BACKEND,
    "payments": Layer.THIRD_PARTY,
}
GRAPH = Topology.from_edges(
    [
        ("web", "api"),
        ("web", "payments"),
        ("api", "queue"),
        ("api", "db"),
        ("api", "search"),
        ("queue", "worker"),
    ],
    LAYERS,
)
USERS_HIT = T0 + timedelta(minutes=10)


def _evidence(
    service: str,
    minutes: int,
    *,
    kpi: str = "latency_p50",
    dimension: Dimension = "speed",
    value: float = 0.65,
    expected: float = 0.2,
    score: float = 1.0,
) -> Evidence:
    onset = T0 + timedelta(minutes=minutes)
    return Evidence(
        layer=LAYERS[service],
        service=service,
        kpi=kpi,
        dimension=dimension,
        direction="down" if dimension in ("availability", "throughput") else "up",
        value=value,
        expected=expected,
        score=score,
        onset=onset,
        window_start=onset,
    )


def _rank(*evidence: Evidence) -> list[Candidate]:
    found: dict[str, list[Evidence]] = {}
    for e in evidence:
        found.setdefault(e.service, []).append(e)
    return rank_candidates(GRAPH, {"web"}, USERS_HIT, found, [], WINDOW)


def _scores(ranked: list[Candidate]) -> list[tuple[str, float]]:
    return [(c.service, c.score) for c in ranked]


def test_a_standing_anomaly_is_not_ranked_up_for_being_early() -> None:
    # search has been slow since 10 minutes before users were hit; db turned
    # slow when they were. Neither explains the other (siblings).
    old = _evidence("search", 0, score=0.8)
    new = _evidence("db", 10, score=1.0)

    ranked = _rank(old, new)

    assert _scores(ranked) == [("db", 1.0), ("search", 0.8)]
    assert ranked[1].reasons == [
        "anomalous 10 min before users were affected",
        "no earlier trouble of a dependency explains it",
    ]


def test_a_warning_says_how_long_not_how_early_since_users_are_fine() -> None:
    # For a warning, users_hit is the present: search has been slow 10 min.
    slow = {"search": [_evidence("search", 0)]}

    [search] = rank_candidates(
        GRAPH, {"web"}, USERS_HIT, slow, [], WINDOW, users_affected=False
    )

    assert search.reasons == [
        "anomalous for 10 min",
        "no earlier trouble of a dependency explains it",
    ]


def test_a_fall_in_request_rate_alone_is_no_cause() -> None:
    fewer = _evidence(
        "search", 0, kpi="requests_sum", dimension="throughput", value=50.0
    )
    slow = _evidence("db", 10, score=0.9)

    ranked = _rank(fewer, slow)

    assert _scores(ranked) == [("db", 0.9)]


def test_a_small_delay_below_explains_no_large_delay_above() -> None:
    # The api adds 0.45 s; the db below it, slow first, adds 0.038 s: far
    # less than half of the api's, so the api is not its symptom.
    db = _evidence("db", 5, value=0.05, expected=0.012, score=0.9)
    api = _evidence("api", 10, value=0.65, expected=0.2)

    ranked = _rank(db, api)

    assert _scores(ranked) == [("api", 1.0), ("db", 0.9)]


def test_a_large_delay_below_explains_the_one_above() -> None:
    # The db adds 0.3 s, two thirds of the api's 0.45 s: 1.0 x 0.6 for the api.
    db = _evidence("db", 5, value=0.31, expected=0.01, score=0.9)
    api = _evidence("api", 10, value=0.65, expected=0.2)

    ranked = _rank(db, api)

    assert _scores(ranked) == [("db", 0.9), ("api", 0.6)]
    assert ranked[1].reasons == ["may be explained by its dependencies: db"]


def test_a_slow_dependency_explains_no_failures_of_a_caller_no_slower() -> None:
    # The db is slow from minute 5; the api fails from minute 10 but is no
    # slower: no timeout of its calls to the db, so its failures are its own.
    db = _evidence("db", 5, value=0.31, expected=0.01, score=0.9)
    api = _evidence("api", 10, kpi="availability", dimension="availability", value=0.93)

    ranked = _rank(db, api)

    assert _scores(ranked) == [("api", 1.0), ("db", 0.9)]


def test_a_slow_dependency_explains_failures_of_a_caller_slowed_too() -> None:
    # The api waits on the db (0.45 s more, the db adds 0.3 s) and fails:
    # both are the db's; 1.0 + 0.05 for two series, x 0.6.
    db = _evidence("db", 5, value=0.31, expected=0.01, score=0.9)
    slow = _evidence("api", 10, value=0.65, expected=0.2)
    fails = _evidence(
        "api", 10, kpi="availability", dimension="availability", value=0.93
    )

    ranked = _rank(db, slow, fails)

    assert _scores(ranked) == [("db", 0.9), ("api", 0.63)]


def test_trouble_behind_a_healthy_service_explains_nothing_above_it() -> None:
    # The worker is slow, but the queue between it and the api is not.
    worker = _evidence("worker", 5, value=2.0, expected=0.1, score=0.9)
    api = _evidence("api", 10, value=0.65, expected=0.2)

    ranked = _rank(worker, api)

    assert _scores(ranked) == [("api", 1.0), ("worker", 0.9)]


def test_trouble_passed_on_by_a_troubled_service_explains_the_one_above() -> None:
    worker = _evidence("worker", 5, value=2.0, expected=0.1, score=0.9)
    queue = _evidence("queue", 5, value=1.9, expected=0.1, score=0.9)
    api = _evidence("api", 10, value=0.65, expected=0.2)

    ranked = _rank(worker, queue, api)

    # The queue is explained by the worker, the api by both: 0.9 x 0.6, 0.6.
    assert _scores(ranked) == [("worker", 0.9), ("api", 0.6), ("queue", 0.54)]


def test_a_third_party_endpoint_yields_to_our_own_service_at_equal_evidence() -> None:
    payments = _evidence("payments", 10)
    api = _evidence("api", 10)

    ranked = _rank(payments, api)

    assert _scores(ranked) == [("api", 1.0), ("payments", 0.9)]


def test_extra_requests_load_only_the_services_they_reach() -> None:
    # web sends the api more requests from minute 2. The db, called by the
    # api, slows at minute 5: load. The worker slows too, but the queue in
    # front of it saw no more requests: its trouble is its own.
    more = _evidence(
        "api", 2, kpi="requests_sum", dimension="throughput", score=0.95
    ).model_copy(update={"direction": "up"})
    db = _evidence("db", 5)
    worker = _evidence("worker", 5)

    ranked = _rank(more, db, worker)

    assert _scores(ranked) == [("worker", 1.0), ("web", 0.95), ("db", 0.6)]
    assert ranked[2].reasons == [
        "anomalous 5 min before users were affected",
        "may be load from the extra requests sent by web",
    ]


def test_a_dependency_the_extra_requests_missed_still_explains_the_sender() -> None:
    # From minute 5 the api calls search more per request (search's rate
    # rises, the api's own holds), and the db, which saw no more requests,
    # adds 0.3 s in the same window as the api's 0.45 s.
    more = _evidence(
        "search", 5, kpi="requests_sum", dimension="throughput", score=0.95
    ).model_copy(update={"direction": "up"})
    db = _evidence("db", 5, value=0.31, expected=0.01, score=0.9)
    api = _evidence("api", 5)

    ranked = _rank(more, db, api)

    # The api: (1.0 + 0.05 for the rise it sent) x 0.6, explained by the db.
    assert _scores(ranked) == [("db", 0.9), ("api", 0.63)]


def test_evidence_that_held_steady_while_users_were_fine_counts_less() -> None:
    # search has been slow since users were fine, and no slower since; db
    # turned slow when they were hit. Siblings: neither explains the other.
    steady = _evidence("search", 0, score=1.0)
    new = _evidence("db", 10, score=0.9)

    ranked = rank_candidates(
        GRAPH,
        {"web"},
        USERS_HIT,
        {"search": [steady], "db": [new]},
        [],
        WINDOW,
        standing={("search", "latency_p50")},
    )

    # search: 1.0 x 0.6 for evidence that all held steady.
    assert _scores(ranked) == [("db", 0.9), ("search", 0.6)]


def test_a_candidate_with_new_evidence_too_is_judged_by_the_new() -> None:
    steady = _evidence("search", 0, score=1.0)
    failing = _evidence(
        "search", 10, kpi="error_rate", dimension="functionality", score=0.8
    )
    new = _evidence("db", 10, score=0.9)

    ranked = rank_candidates(
        GRAPH,
        {"web"},
        USERS_HIT,
        {"search": [steady, failing], "db": [new]},
        [],
        WINDOW,
        standing={("search", "latency_p50")},
    )

    # search: the strength of its errors alone, 0.8, with no penalty.
    assert _scores(ranked) == [("db", 0.9), ("search", 0.8)]


def test_more_bytes_before_the_trouble_do_not_put_it_before_its_cause() -> None:
    # The api receives more bytes from minute 0 and turns slow at 10 (0.45 s
    # more); the db below it is slow from minute 5 (0.3 s more). The api's
    # trouble starts at 10, after the db's: 1.0 + 0.05 for two series,
    # x 0.6 as the db's symptom.
    more_bytes = _evidence(
        "api", 0, kpi="network_receive_bytes", dimension="throughput", value=9e3
    ).model_copy(
        update={"layer": Layer.INFRASTRUCTURE, "direction": "up", "expected": 5e3}
    )
    slow = _evidence("api", 10, value=0.65, expected=0.2)
    db = _evidence("db", 5, value=0.31, expected=0.01, score=0.9)

    ranked = _rank(more_bytes, slow, db)

    assert _scores(ranked) == [("db", 0.9), ("api", 0.63)]
    assert "may be explained by its dependencies: db" in ranked[1].reasons
