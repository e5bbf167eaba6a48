"""The simulated online shop: its services, its normal traffic, how faults bend it.

`draw_minute` turns a seed, a minute and that minute's `Effects` into events:
Poisson counts scaled by a daily curve, lognormal latencies, statuses and
resource samples, drawn with numpy one service at a time. Events are plain
dicts that match the native schema exactly, because building a pydantic
`Event` costs ten times more than serialising a dict; `simulator` decides
which faults are active and turns the dicts into records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from foreshock.layers import Layer

__all__ = [
    "ACCOUNTS",
    "BACKENDS",
    "CALLS",
    "CATALOG",
    "DATABASE",
    "GATEWAY",
    "LAYERS",
    "MINUTE_MS",
    "MOBILE",
    "ORDERS",
    "PAYMENTS",
    "SYNTHETIC",
    "WEB",
    "Doc",
    "Effects",
    "Minute",
    "draw_minute",
]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Doc = dict[str, object]

WEB = "web"
MOBILE = "mobile-app"
SYNTHETIC = "synthetics"
GATEWAY = "api-gateway"
CATALOG = "catalog"
ORDERS = "orders"
ACCOUNTS = "accounts"
DATABASE = "shop-db"
PAYMENTS = "payment-provider"
BACKENDS = (CATALOG, ORDERS, ACCOUNTS)

LAYERS = {
    WEB: Layer.FRONTEND,
    MOBILE: Layer.MOBILE,
    SYNTHETIC: Layer.SYNTHETIC,
    GATEWAY: Layer.API,
    CATALOG: Layer.BACKEND,
    ORDERS: Layer.BACKEND,
    ACCOUNTS: Layer.BACKEND,
    DATABASE: Layer.DATABASE,
    PAYMENTS: Layer.THIRD_PARTY,
}
CALLS = (
    [(WEB, GATEWAY), (MOBILE, GATEWAY), (SYNTHETIC, GATEWAY)]
    + [(GATEWAY, b) for b in BACKENDS]
    + [(b, DATABASE) for b in BACKENDS]
    + [(ORDERS, PAYMENTS)]
)

MINUTE_MS = 60_000

# Requests per minute at the daily peak.
_PAGE_VIEWS = 140.0
_LAUNCHES = 90.0
_AJAX_PER_PAGE = 2.5
_CALLS_PER_LAUNCH = 1.5

_PAGES = ("/", "/search", "/product", "/cart", "/checkout")
_PAGE_SHARES = (0.3, 0.25, 0.3, 0.1, 0.05)
_RELEASES = ("web-2025.03.03-2", "web-2025.03.04-1")
_RELEASE_ATTRIBUTES: tuple[Doc, ...] = tuple({"release": r} for r in _RELEASES)
_APP_VERSIONS = ("5.12.0", "5.11.2", "5.10.4")
_APP_SHARES = (0.7, 0.25, 0.05)
_CHECKS = (("homepage", 900.0), ("product-search", 350.0))
_LOCATIONS = ("frankfurt", "virginia", "singapore")
_CHECK_TIMEOUT_MS = 15_000.0
_GATEWAY_TIMEOUT_MS = 10_000.0
_STATEMENT_TIMEOUT_MS = 5_000.0


@dataclass(frozen=True)
class _Statement:
    fingerprint: str
    median_ms: float
    rows: float


_STATEMENTS = (
    _Statement("SELECT id, name, price FROM products WHERE id = ?", 1.6, 1),
    _Statement("SELECT id, name FROM products WHERE category_id = ? LIMIT ?", 5.5, 24),
    _Statement("SELECT * FROM orders WHERE customer_id = ? LIMIT ?", 3.8, 10),
    _Statement("SELECT * FROM orders WHERE id = ?", 1.2, 1),
    _Statement("SELECT * FROM order_items WHERE order_id = ?", 2.0, 3),
    _Statement("INSERT INTO orders (customer_id, total) VALUES (?, ?)", 2.8, 1),
    _Statement("INSERT INTO order_items (order_id, sku, qty) VALUES (?, ?, ?)", 2.4, 3),
    _Statement("SELECT id, email FROM customers WHERE session_token = ?", 1.1, 1),
    _Statement("SELECT id, password_hash FROM customers WHERE email = ?", 1.3, 1),
    _Statement("INSERT INTO sessions (customer_id, token) VALUES (?, ?)", 1.9, 1),
    # The query of the second failure: a lookup that no index serves.
    _Statement("SELECT * FROM orders WHERE lower(customer_email) = ?", 2600.0, 2),
)
_FULL_SCAN = len(_STATEMENTS) - 1


@dataclass(frozen=True)
class _Route:
    backend: str
    path: str
    method: str
    share: float  # of all api traffic
    median_ms: float
    statements: tuple[int, ...]


_ROUTES = (
    _Route(CATALOG, "/api/catalog/search", "GET", 0.22, 45.0, (1,)),
    _Route(CATALOG, "/api/catalog/products/{id}", "GET", 0.28, 28.0, (0,)),
    _Route(ORDERS, "/api/orders", "GET", 0.12, 70.0, (2,)),
    _Route(ORDERS, "/api/orders/{id}", "GET", 0.10, 55.0, (3, 4)),
    _Route(ORDERS, "/api/orders", "POST", 0.08, 140.0, (5, 6)),
    _Route(ACCOUNTS, "/api/accounts/me", "GET", 0.14, 20.0, (7,)),
    _Route(ACCOUNTS, "/api/accounts/session", "POST", 0.06, 60.0, (8, 9)),
)
_HISTORY_ROUTE = 2
_CHECKOUT_ROUTE = 4


@dataclass(frozen=True)
class _Host:
    """The containers of one service, and how busy they are at the daily peak."""

    service: str
    containers: tuple[str, ...]
    idle_cpu: float
    peak_cpu: float
    memory: float


_HOSTS = (
    _Host(
        GATEWAY, ("api-gateway-5d8f7-q2x9k", "api-gateway-5d8f7-h7c4m"), 0.08, 0.3, 0.35
    ),
    _Host(
        CATALOG,
        ("catalog-7f9c4-bx2lp", "catalog-7f9c4-n8r5t", "catalog-7f9c4-wd3kz"),
        0.1,
        0.38,
        0.55,
    ),
    _Host(
        ORDERS,
        ("orders-6b2d1-k4m8s", "orders-6b2d1-p9v3c", "orders-6b2d1-z7f2q"),
        0.1,
        0.35,
        0.5,
    ),
    _Host(ACCOUNTS, ("accounts-58c3e-r2j6w", "accounts-58c3e-t5n1x"), 0.08, 0.25, 0.4),
    _Host(DATABASE, ("shop-db-0",), 0.15, 0.3, 0.7),
)


@dataclass
class Effects:
    """How far one minute of traffic departs from normal; neutral by default.

    `*_slow` and `*_factor` fields multiply a latency or a count; `*_errors`,
    `*_failures`, `crashes`, `timeouts` and `*_share` add a probability;
    `cpu_extra` adds utilisation, while `saturation` and `memory_climb` (0 to
    1) pull a host's CPU and memory towards their limit. Per-service fields
    are keyed by service name.
    """

    # Web and mobile clients.
    release_share: float = 0.0
    ajax_factor: float = 1.0
    page_slow: float = 1.0
    js_errors: float = 0.0
    crashes: float = 0.0
    launch_slow: float = 1.0
    check_failures: float = 0.0
    check_slow: float = 1.0

    # Gateway, backends and their hosts.
    balancer_failures: float = 0.0
    timeouts: dict[str, float] = field(default_factory=dict)
    backend_slow: dict[str, float] = field(default_factory=dict)
    backend_errors: dict[str, float] = field(default_factory=dict)
    cpu_extra: dict[str, float] = field(default_factory=dict)
    saturation: dict[str, float] = field(default_factory=dict)
    memory_climb: dict[str, float] = field(default_factory=dict)

    # The database.
    db_slow: float = 1.0
    db_errors: float = 0.0
    full_scan_share: float = 0.0


def _traffic(t: datetime) -> float:
    """The share of the daily peak at `t`: highest at 13:00, lowest at 01:00."""
    hour = t.hour + t.minute / 60.0
    return 0.65 + 0.35 * math.cos(2.0 * math.pi * (hour - 13.0) / 24.0)


def _api_rate(traffic: float, fx: Effects) -> float:
    web = _PAGE_VIEWS * _AJAX_PER_PAGE * fx.ajax_factor
    return traffic * (web + _LAUNCHES * _CALLS_PER_LAUNCH)


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> Floats:
    return rng.lognormal(math.log(median), sigma, n)


def _ms(values: Floats) -> list[float]:
    return cast(list[float], np.round(values, 1).tolist())


def _times(rng: np.random.Generator, n: int) -> Ints:
    return rng.integers(0, MINUTE_MS, n)


@dataclass
class Minute:
    """The events of one minute as they are drawn, before they are time-ordered."""

    offsets: list[Ints] = field(default_factory=list)
    docs: list[Doc] = field(default_factory=list)

    def add(
        self,
        layer: Layer,
        service: str,
        offsets: Ints,
        payloads: list[Doc],
        attributes: list[Doc] | None = None,
    ) -> None:
        self.offsets.append(offsets)
        head: Doc = {"schema_version": 1, "time": "", "layer": layer.value}
        if attributes is None:
            self.docs.extend(
                {**head, "service": service, "payload": p} for p in payloads
            )
            return
        self.docs.extend(
            {**head, "service": service, "attributes": a, "payload": p}
            for a, p in zip(attributes, payloads, strict=True)
        )

    def ordered(self, start_ms: int) -> tuple[list[Doc], list[int]]:
        """The docs in event-time order, stamped, with their epoch milliseconds."""
        offsets = (
            np.concatenate(self.offsets) if self.offsets else np.zeros(0, np.int64)
        )
        order = np.argsort(offsets, kind="stable")
        epoch_ms = offsets[order] + start_ms
        stamps = np.datetime_as_string(
            epoch_ms.astype("datetime64[ms]"), unit="ms", timezone="UTC"
        )
        docs = [self.docs[i] for i in order.tolist()]
        for doc, stamp in zip(docs, stamps.tolist(), strict=True):
            doc["time"] = stamp
        return docs, epoch_ms.tolist()


def _payloads(kind: str, **columns: list[Any]) -> list[Doc]:
    """One payload per row of equally long columns named after schema fields."""
    names = ("kind", *columns)
    count = len(next(iter(columns.values())))
    rows = zip([kind] * count, *columns.values(), strict=True)
    return [dict(zip(names, row, strict=True)) for row in rows]


def _page_views(
    rng: np.random.Generator, traffic: float, fx: Effects, out: Minute
) -> None:
    n = int(rng.poisson(_PAGE_VIEWS * traffic))
    slow = fx.page_slow
    ttfb = _lognormal(rng, 180.0 * slow, 0.35, n)
    dom = ttfb + _lognormal(rng, 650.0, 0.3, n)
    errors = (rng.random(n) < 0.02 + fx.js_errors) * (1 + rng.poisson(0.3, n))
    payloads = _payloads(
        "page_view",
        page=[_PAGES[p] for p in rng.choice(len(_PAGES), n, p=_PAGE_SHARES).tolist()],
        ttfb_ms=_ms(ttfb),
        dom_content_loaded_ms=_ms(dom),
        load_ms=_ms(dom + _lognormal(rng, 600.0 * slow, 0.4, n)),
        lcp_ms=_ms(ttfb + _lognormal(rng, 1700.0 * slow, 0.35, n)),
        inp_ms=_ms(_lognormal(rng, 110.0 * (0.5 + 0.5 * slow), 0.5, n)),
        cls=np.round(np.minimum(_lognormal(rng, 0.04, 0.9, n), 1.5), 3).tolist(),
        js_errors=errors.tolist(),
        js_execution_ms=_ms(_lognormal(rng, 320.0, 0.35, n)),
    )

    # Browsers pick up a new release at their next page load.
    released = (rng.random(n) < fx.release_share).tolist()
    attributes = [_RELEASE_ATTRIBUTES[r] for r in released]
    out.add(Layer.FRONTEND, WEB, _times(rng, n), payloads, attributes)
    _ajax_gauge(rng, fx, out)


def _ajax_gauge(rng: np.random.Generator, fx: Effects, out: Minute) -> None:
    # Real-user monitoring reports the AJAX calls per page once a minute.
    value = _AJAX_PER_PAGE * fx.ajax_factor * float(rng.lognormal(0.0, 0.03))
    release = _RELEASES[int(fx.release_share >= 0.5)]
    payloads = _payloads(
        "metric_sample",
        name=["ajax_requests_per_page"],
        type=["gauge"],
        value=[round(value, 3)],
        labels=[{"release": release}],
    )
    out.add(Layer.FRONTEND, WEB, np.array([MINUTE_MS - 500]), payloads)


def _app(rng: np.random.Generator, traffic: float, fx: Effects, out: Minute) -> None:
    n = int(rng.poisson(_LAUNCHES * traffic))
    cold = rng.random(n) < 0.35
    median = np.where(cold, 1400.0, 450.0) * fx.launch_slow
    payloads = _payloads(
        "app_launch",
        app_version=_versions(rng, n),
        cold=cold.tolist(),
        duration_ms=_ms(median * rng.lognormal(0.0, 0.4, n)),
    )
    out.add(Layer.MOBILE, MOBILE, _times(rng, n), payloads)
    _crashes(rng, n, fx, out)


def _versions(rng: np.random.Generator, n: int) -> list[str]:
    return [
        _APP_VERSIONS[v]
        for v in rng.choice(len(_APP_VERSIONS), n, p=_APP_SHARES).tolist()
    ]


def _crashes(rng: np.random.Generator, launches: int, fx: Effects, out: Minute) -> None:
    base = 0.01
    n = int(rng.binomial(launches, base + fx.crashes))
    timed_out = rng.random(n) < fx.crashes / (base + fx.crashes)
    usual = rng.choice(("NullPointerException", "OutOfMemoryError", "ANR"), n)
    kinds = np.where(timed_out, "SocketTimeoutException", usual)
    payloads = _payloads(
        "app_crash", app_version=_versions(rng, n), crash_type=kinds.tolist()
    )
    out.add(Layer.MOBILE, MOBILE, _times(rng, n), payloads)


def _checks(rng: np.random.Generator, fx: Effects, out: Minute) -> None:
    # Each check runs from each location every 30 seconds, staggered.
    runs = [
        (check, median, location, 30_000 * r + 7_000 * i + 2_000 * j)
        for r in range(2)
        for i, location in enumerate(_LOCATIONS)
        for j, (check, median) in enumerate(_CHECKS)
    ]
    n = len(runs)
    # A scripted check fails only when the shop does: flaky checks are
    # retried by the monitoring vendor before they are reported.
    failed = rng.random(n) < fx.check_failures
    medians = np.array([run[1] for run in runs]) * fx.check_slow
    duration = np.where(failed, _CHECK_TIMEOUT_MS, medians * rng.lognormal(0, 0.25, n))
    payloads = _payloads(
        "synthetic_check",
        check=[run[0] for run in runs],
        location=[run[2] for run in runs],
        success=(~failed).tolist(),
        duration_ms=_ms(duration),
    )
    offsets = np.array([run[3] for run in runs]) + rng.integers(0, 1_000, n)
    out.add(Layer.SYNTHETIC, SYNTHETIC, offsets, payloads)


_ROUTE_SHARES = np.array([r.share for r in _ROUTES])
_ROUTE_BACKEND = np.array([BACKENDS.index(r.backend) for r in _ROUTES])
_ROUTE_MEDIAN = np.array([r.median_ms for r in _ROUTES])
_ROUTE_STATEMENTS = np.array(
    [r.statements + (-1,) * (2 - len(r.statements)) for r in _ROUTES]
)
_STATEMENT_MEDIAN = np.array([s.median_ms for s in _STATEMENTS])
_STATEMENT_ROWS = np.array([s.rows for s in _STATEMENTS])


@dataclass(frozen=True)
class _Requests:
    """One minute of api traffic, one row per request the gateway received."""

    route: Ints
    offsets: Ints
    backend: Ints
    duration: Floats
    status: Ints
    scan_ms: Floats
    reached: npt.NDArray[np.bool_]


def _requests(rng: np.random.Generator, traffic: float, fx: Effects) -> _Requests:
    n = int(rng.poisson(_api_rate(traffic, fx)))
    route = rng.choice(len(_ROUTES), n, p=_ROUTE_SHARES)
    backend = _ROUTE_BACKEND[route]
    slow = np.array([fx.backend_slow.get(b, 1.0) for b in BACKENDS])[backend]
    duration = _ROUTE_MEDIAN[route] * slow * rng.lognormal(0.0, 0.5, n)

    # A request that runs the full scan waits for it, up to the statement timeout.
    scan = (route == _HISTORY_ROUTE) & (rng.random(n) < fx.full_scan_share)
    scan_ms = _lognormal(rng, _STATEMENT_MEDIAN[_FULL_SCAN], 0.3, n)
    scan_ms = np.where(scan, np.minimum(scan_ms, _STATEMENT_TIMEOUT_MS), 0.0)

    errors = np.array([0.001 + fx.backend_errors.get(b, 0.0) for b in BACKENDS])
    return _Requests(
        route=route,
        offsets=_times(rng, n),
        backend=backend,
        duration=duration + scan_ms,
        status=_statuses(rng, errors[backend]),
        scan_ms=scan_ms,
        reached=rng.random(n) >= fx.balancer_failures,
    )


def _statuses(rng: np.random.Generator, server_errors: Floats) -> Ints:
    draw = rng.random(len(server_errors))
    client = rng.choice(np.array([400, 401, 404, 409]), len(server_errors))
    overloaded = np.where(server_errors > 0.01, 503, 500)
    status = np.where(draw < server_errors + 0.015, client, 200)
    return np.where(draw < server_errors, overloaded, status)


def _gateway(
    rng: np.random.Generator, req: _Requests, fx: Effects, out: Minute
) -> None:
    n = len(req.route)
    limits = np.array([fx.timeouts.get(b, 0.0) for b in BACKENDS])[req.backend]
    timeout = req.reached & (rng.random(n) < limits)
    refused = rng.choice(np.array([502, 503]), n)
    status = np.where(req.reached, np.where(timeout, 504, req.status), refused)
    proxied = req.duration + _lognormal(rng, 5.0, 0.3, n)
    duration = np.where(timeout, _GATEWAY_TIMEOUT_MS, proxied)
    duration = np.where(req.reached, duration, _lognormal(rng, 4.0, 0.3, n))
    payloads = _http(req.route, status, duration)
    out.add(Layer.API, GATEWAY, req.offsets, payloads)


def _http(route: Ints, status: Ints, duration: Floats) -> list[Doc]:
    routes = route.tolist()
    return _payloads(
        "http_request",
        route=[_ROUTES[r].path for r in routes],
        method=[_ROUTES[r].method for r in routes],
        status=status.tolist(),
        duration_ms=_ms(duration),
    )


def _backends(req: _Requests, out: Minute) -> None:
    for index, backend in enumerate(BACKENDS):
        mine = req.reached & (req.backend == index)
        payloads = _http(req.route[mine], req.status[mine], req.duration[mine])
        offsets = np.minimum(req.offsets[mine] + 2, MINUTE_MS - 1)
        out.add(Layer.BACKEND, backend, offsets, payloads)


def _queries(
    rng: np.random.Generator, req: _Requests, fx: Effects, out: Minute
) -> None:
    # Each request runs its route's statements, one slot at a time.
    for slot in range(_ROUTE_STATEMENTS.shape[1]):
        statement = _ROUTE_STATEMENTS[req.route, slot]
        runs = req.reached & (statement >= 0)
        scan = (req.scan_ms > 0.0)[runs] & (slot == 0)
        statement = np.where(scan, _FULL_SCAN, statement[runs])
        n = len(statement)
        usual = _STATEMENT_MEDIAN[statement] * fx.db_slow * rng.lognormal(0, 0.6, n)
        duration = np.where(scan, req.scan_ms[runs], usual)
        timed_out = duration >= _STATEMENT_TIMEOUT_MS
        failed = timed_out | (rng.random(n) < 0.0005 + fx.db_errors)
        rows = np.where(failed, 0, rng.poisson(_STATEMENT_ROWS[statement]))
        payloads = _payloads(
            "db_query",
            fingerprint=[_STATEMENTS[s].fingerprint for s in statement.tolist()],
            duration_ms=_ms(duration),
            rows=rows.tolist(),
            error=failed.tolist(),
        )
        offsets = np.minimum(req.offsets[runs] + 3 + slot, MINUTE_MS - 1)
        out.add(Layer.DATABASE, DATABASE, offsets, payloads)


def _payments(rng: np.random.Generator, req: _Requests, out: Minute) -> None:
    checkout = req.reached & (req.route == _CHECKOUT_ROUTE) & (req.status < 400)
    n = int(checkout.sum())
    draw = rng.random(n)
    # 402 is a declined card: the call itself worked.
    status = np.where(draw < 0.003, 502, np.where(draw < 0.033, 402, 200))
    payloads = _payloads(
        "third_party_call",
        provider=["payflow"] * n,
        operation=["authorize"] * n,
        status=status.tolist(),
        success=(status < 500).tolist(),
        duration_ms=_ms(_lognormal(rng, 320.0, 0.4, n)),
    )
    offsets = np.minimum(req.offsets[checkout] + 40, MINUTE_MS - 1)
    out.add(Layer.THIRD_PARTY, PAYMENTS, offsets, payloads)


def _resources(
    rng: np.random.Generator, traffic: float, fx: Effects, out: Minute
) -> None:
    # Backends and their database work in proportion to the api traffic.
    load = _api_rate(traffic, fx) / _api_rate(traffic, Effects())
    for host in _HOSTS:
        _samples(rng, host, traffic * load, fx, out)


def _samples(
    rng: np.random.Generator, host: _Host, load: float, fx: Effects, out: Minute
) -> None:
    k = len(host.containers)
    n = 4 * k
    busy = host.idle_cpu + host.peak_cpu * load + fx.cpu_extra.get(host.service, 0.0)
    busy += (0.99 - busy) * fx.saturation.get(host.service, 0.0)
    cpu = np.clip(busy + rng.normal(0.0, 0.02, n), 0.01, 1.0)
    climb = (0.96 - host.memory) * fx.memory_climb.get(host.service, 0.0)
    memory = np.clip(host.memory + climb + rng.normal(0.0, 0.01, n), 0.01, 1.0)
    rx = np.round(1.5e5 * load * rng.lognormal(0.0, 0.1, n))
    payloads = _payloads(
        "resource_sample",
        resource=[host.containers[i % k] for i in range(n)],
        cpu_utilisation=np.round(cpu, 4).tolist(),
        memory_utilisation=np.round(memory, 4).tolist(),
        network_rx_bytes_per_s=rx.tolist(),
        network_tx_bytes_per_s=np.round(rx * 2.7).tolist(),
    )

    # Each container reports every 15 seconds, a second after the previous one.
    phase = 1_000 * (np.arange(n) % k) + rng.integers(0, 200, n)
    offsets = 15_000 * (np.arange(n) // k) + phase
    out.add(Layer.INFRASTRUCTURE, host.service, offsets, payloads)


def draw_minute(seed: int, index: int, t: datetime, fx: Effects) -> Minute:
    """The events of minute `index` (starting at `t`) of a simulation.

    Each minute has its own generator, seeded with the seed and the index, so
    that a minute comes out the same whether drawn alone or in sequence.
    """
    rng = np.random.default_rng([seed, index])
    traffic = _traffic(t) * float(rng.lognormal(0.0, 0.04))

    out = Minute()
    _page_views(rng, traffic, fx, out)
    _app(rng, traffic, fx, out)
    _checks(rng, fx, out)
    requests = _requests(rng, traffic, fx)
    _gateway(rng, requests, fx, out)
    _backends(requests, out)
    _queries(rng, requests, fx, out)
    _payments(rng, requests, out)
    _resources(rng, traffic, fx, out)
    return out
