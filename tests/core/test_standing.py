"""Trouble that held steady while users were fine is not why they are hit now.

Each test feeds hand-built scored windows, one minute each: web calls the
api, which calls orders and catalog (siblings). Users are hit at minute 5,
when the api and orders turn slow; catalog is slow from earlier. Every
anomalous window scores 0.95 against an expected value of 1.0, so with the
rules of `foreshock.ranking` a candidate nothing explains scores 0.95, one
its dependencies may explain 0.95 x 0.6 = 0.57.
"""

from datetime import UTC, datetime, timedelta

from foreshock.correlation import CorrelationConfig, Correlator, Output
from foreshock.layers import Layer
from foreshock.records import Incident, KpiScore
from foreshock.topology import Topology
from tests.core.scores import scored

T0 = datetime(2025, 3, 4, 8, 0, tzinfo=UTC)
SHOP = Topology.from_edges(
    [("web", "api"), ("api", "orders"), ("api", "catalog")],
    {
        "web": Layer.FRONTEND,
        "api": Layer.API,
        "orders": Layer.BACKEND,
        "catalog": Layer.BACKEND,
    },
)
LAYERS = {"web": Layer.FRONTEND, "api": Layer.API}


def _score(minute: int, service: str, value: float) -> KpiScore:
    start = T0 + timedelta(minutes=minute)
    layer = LAYERS.get(service, Layer.BACKEND)
    return scored(
        start,
        layer,
        service,
        "latency_p95_ms",
        value,
        expected=1.0,
        anomalous=value > 1.0,
    )


def _run(catalog: list[float], orders_slow: bool = True) -> list[Output]:
    """Ten minutes; catalog's latency minute by minute as given."""
    correlator = Correlator(SHOP, CorrelationConfig())
    out: list[Output] = []
    for minute in range(10):
        hit = 3.0 if minute >= 5 else 1.0
        out += correlator.observe(_score(minute, "web", hit))
        out += correlator.observe(_score(minute, "api", hit))
        out += correlator.observe(_score(minute, "orders", hit if orders_slow else 1))
        out += correlator.observe(_score(minute, "catalog", catalog[minute]))
    return out + correlator.flush()


def _first_ranking(out: list[Output]) -> list[tuple[str, float]]:
    opened = next(o for o in out if isinstance(o, Incident))
    return [(c.service, c.score) for c in opened.root_causes]


def test_a_dependency_as_slow_as_while_users_were_fine_is_ranked_down() -> None:
    # catalog adds 2.0 from minute 0 on, and no more once users are hit.
    out = _run([3.0] * 10)

    # orders turned slow with the users: 0.95. catalog's only evidence held
    # steady for five windows: 0.95 x 0.6. The api and web are explained by
    # their dependencies; ties go to the earlier onset, then by name.
    assert _first_ranking(out) == [
        ("orders", 0.95),
        ("catalog", 0.57),
        ("api", 0.57),
        ("web", 0.57),
    ]


def test_a_dependency_that_got_worse_when_users_were_hit_stays_a_cause() -> None:
    # catalog adds 2.0 from minute 0, then 4.0 from minute 5: twice as much,
    # more than the 50 % growth that makes it new trouble.
    out = _run([3.0] * 5 + [5.0] * 5)

    # catalog and orders both score 0.95; catalog's onset is earlier.
    assert _first_ranking(out)[:2] == [("catalog", 0.95), ("orders", 0.95)]


def test_a_dependency_slow_one_window_before_users_is_not_judged_steady() -> None:
    # catalog is slow from minute 4 only: users' KPIs may lag a window
    # behind what they feel, so one window before is not "while users were
    # fine" (`standing_windows` is 2).
    out = _run([1.0] * 4 + [3.0] * 6)

    assert _first_ranking(out)[:2] == [("catalog", 0.95), ("orders", 0.95)]


def test_a_steady_dependency_nothing_new_competes_with_stays_the_cause() -> None:
    # catalog is slow from minute 0 and no slower later; orders stays fine.
    # The api turns slow with the users, but catalog may explain that: no
    # trouble of its own came with the users', so catalog keeps its score.
    out = _run([3.0] * 10, orders_slow=False)

    assert _first_ranking(out) == [("catalog", 0.95), ("api", 0.57), ("web", 0.57)]
