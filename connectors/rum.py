"""Browser RUM beacons: one beacon becomes one `page_view` event.

A beacon is one JSON object per message, as a collecting endpoint writes it
after receiving what a page's RUM script sent::

    {"type": "rum_beacon", "beacon_id": "b-001",
     "received_at": "2025-03-04T10:00:05.000Z",
     "url": "https://shop.example.com/product/42?ref=home",
     "ua": "Mozilla/5.0 ... Chrome/122.0 Safari/537.36",
     "visibility_at_start": "visible",
     "headers": {"x-synthetic-check": "checkout-journey"},
     "nav": {"navigationStart": 1741082400000, "responseStart": 1741082400228,
             "domContentLoadedEventEnd": 1741082401547,
             "loadEventEnd": 1741082401847},
     "vitals": {"LCP": 2511, "INP": 113, "CLS": 0.016, "TTFB": 228},
     "errors": [{"message": "TypeError: x is undefined"}]}

`nav` holds either the epoch-millisecond marks of W3C Navigation Timing
Level 1 (with `navigationStart`) or the fields of a Level 2
`PerformanceNavigationTiming` entry (milliseconds since the time origin,
`startTime` 0). `vitals` are the Core Web Vitals as the web-vitals library
reports them. `page` may stand instead of `url`; `service` names the site
when the configuration does not map its host.

The event time is `received_at`, the endpoint's clock, when present: a
browser's clock may be hours off. Without it, the navigation start is used.

Each measurement is checked on its own, and an impossible one is left out
of the KPIs with its reason while the rest of the beacon counts: a negative
or non-numeric value, a duration of zero or beyond `max_ms` where zero is
impossible, a mark of 0 (the page was left before reaching it), and a
Largest Contentful Paint from a page that started hidden (a background tab
paints when it is focused, hours later; the web-vitals library does not
report LCP for such pages either). A dropped field is NaN in the event, so
the window counts it as rejected under its name.

Who sent the beacon decides where it counts: a synthetic agent (a
configured header or user-agent token) becomes an event of the `synthetic`
layer, never of real users; a crawler or headless browser (the
`crawlerdetect` patterns plus configured tokens) is excluded from every KPI
and reported as an "excluded" rejection, so the flow counts it apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from crawlerdetect import CrawlerDetect
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from foreshock.decode import Decoded, Rejection
from foreshock.layers import Layer
from foreshock.schema import Attribute, Event, PageView

if TYPE_CHECKING:
    from foreshock.config import Settings

__all__ = ["BeaconDecoder", "RouteRule", "RumSettings", "beacon_decoder"]

BEACON_TYPE = "rum_beacon"
# Epoch values above this are milliseconds, below it seconds (2e10 s is in
# the year 2603), as for native events.
_MS_THRESHOLD = 2e10
_ID_SEGMENT = re.compile(
    r"\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{12}|[0-9a-fA-F]{16,}"
)


class RouteRule(BaseModel):
    """Paths that fully match `pattern` (a regular expression) count as `route`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str
    route: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"route pattern {value!r} is not a regex: {exc}") from exc
        return value


class RumSettings(BaseModel):
    """How beacons map to services and routes, and who counts as a real user."""

    model_config = ConfigDict(extra="forbid")

    default_service: str = Field(default="web", min_length=1, max_length=200)
    # Page host -> service, e.g. {"shop.example.com": "web-shop"}.
    services: dict[str, str] = Field(default_factory=dict)
    # First rule whose pattern fully matches the path names the route.
    routes: list[RouteRule] = Field(default_factory=list)
    # Without a matching rule, numeric, UUID and long hex path segments become
    # ":id", so that one product page is one route, not one per product.
    collapse_ids: bool = True
    # No page takes ten minutes to load; longer values are clock or tab quirks.
    max_ms: float = Field(default=600_000.0, gt=0)
    max_cls: float = Field(default=10.0, gt=0)
    # A beacon carrying one of these headers comes from a synthetic check.
    synthetic_headers: list[str] = Field(default_factory=lambda: ["x-synthetic-check"])
    # User-agent tokens (case-insensitive) of synthetic monitoring agents.
    synthetic_agents: list[str] = Field(
        default_factory=lambda: [
            "SyntheticAgent",
            "DatadogSynthetics",
            "CloudWatchSynthetics",
            "PTST",
        ]
    )
    # User-agent tokens (case-insensitive) of bots beyond crawlerdetect's list.
    bot_agents: list[str] = Field(default_factory=list)
    detect_crawlers: bool = True


def beacon_decoder(settings: Settings) -> BeaconDecoder:
    """The decoder of format "rum", configured from the job's settings."""
    return BeaconDecoder(settings.rum)


class _BadBeacon(ValueError):
    """The beacon as a whole cannot be used; `reason` is its stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class BeaconDecoder:
    """Decodes RUM beacons: `(bytes) -> (events, rejections)`.

    Design decisions:

    - Service, route and agent class depend only on strings that repeat
      across beacons (host, path, user agent), so each is cached.
    - A beacon is refused whole only when nothing in it can be placed: no
      JSON object, no usable time, or a field of the wrong type where the
      service or route comes from. Measurements are never a reason to refuse
      a beacon.
    """

    def __init__(self, settings: RumSettings | None = None) -> None:
        self.settings = settings or RumSettings()
        self._route = lru_cache(maxsize=4096)(self._route_of)
        self._agent = lru_cache(maxsize=4096)(self._agent_of)
        self._crawlers = CrawlerDetect()
        self._synthetic_ua = _token_pattern(self.settings.synthetic_agents)
        self._bot_ua = _token_pattern(self.settings.bot_agents)
        self._synthetic_headers = {h.lower() for h in self.settings.synthetic_headers}

    def __call__(self, data: bytes) -> Decoded:
        try:
            beacon = _load(data)
            return self._decode(beacon)
        except _BadBeacon as bad:
            return [], [Rejection(bad.reason, bad.detail)]

    def _decode(self, beacon: dict[str, Any]) -> Decoded:
        event_id = _optional_str(beacon, "beacon_id")
        ua = _optional_str(beacon, "ua") or ""
        synthetic = self._synthetic_check(beacon, ua)
        if synthetic is None and self._agent(ua) == "bot":
            detail = f"user agent {ua!r:.120} is a crawler or headless browser"
            return [], [Rejection("bot", detail, "excluded", None, event_id)]

        time = _event_time(beacon)
        service, page = self._place(beacon)
        checks = _Checks(self.settings, event_id)
        payload = checks.page_view(beacon, page)
        layer = Layer.FRONTEND if synthetic is None else Layer.SYNTHETIC
        attributes: dict[str, Attribute] = {}
        if synthetic:
            attributes["synthetic_check"] = synthetic
        try:
            event = Event(
                time=time,
                layer=layer,
                service=service,
                event_id=event_id,
                attributes=attributes,
                payload=payload,
            )
        except ValidationError as error:
            return [], [Rejection("schema", _first_error(error), event_id=event_id)]
        return [event], checks.rejections

    def _synthetic_check(self, beacon: Mapping[str, Any], ua: str) -> str | None:
        """The check's name ("" if unnamed) for a synthetic agent, else None."""
        headers = beacon.get("headers")
        if isinstance(headers, dict):
            for name, value in headers.items():
                if str(name).lower() in self._synthetic_headers:
                    return str(value)
        return "" if self._agent(ua) == "synthetic" else None

    def _agent_of(self, ua: str) -> str:
        # Synthetic tokens first: a synthetic agent may run a headless browser,
        # and it is then a check of the site, not a crawler.
        if self._synthetic_ua is not None and self._synthetic_ua.search(ua):
            return "synthetic"
        if self._bot_ua is not None and self._bot_ua.search(ua):
            return "bot"
        if self.settings.detect_crawlers and self._crawlers.is_crawler(ua):
            return "bot"
        return "user"

    def _place(self, beacon: Mapping[str, Any]) -> tuple[str, str]:
        """The beacon's service and route."""
        where = beacon.get("url", beacon.get("page", "/"))
        if not isinstance(where, str):
            raise _BadBeacon("schema", f"url/page must be a string, got {where!r:.60}")
        try:
            parts = urlsplit(where)
            host = parts.hostname or ""
        except ValueError as exc:
            raise _BadBeacon(
                "schema", f"url {where!r:.60} is malformed: {exc}"
            ) from exc
        service = self.settings.services.get(host)
        if service is None:
            service = _optional_str(beacon, "service") or self.settings.default_service
        return service, self._route(parts.path or "/")

    def _route_of(self, path: str) -> str:
        for rule in self.settings.routes:
            if re.fullmatch(rule.pattern, path):
                return rule.route
        if not self.settings.collapse_ids:
            return path
        segments = path.split("/")
        return "/".join(":id" if _ID_SEGMENT.fullmatch(s) else s for s in segments)


class _Checks:
    """Checks the measurements of one beacon, collecting what it drops."""

    def __init__(self, settings: RumSettings, event_id: str | None) -> None:
        self.max_ms = settings.max_ms
        self.max_cls = settings.max_cls
        self.event_id = event_id
        self.rejections: list[Rejection] = []

    def page_view(self, beacon: Mapping[str, Any], page: str) -> PageView:
        nav = self._section(beacon, "nav")
        vitals = self._section(beacon, "vitals")
        hidden = beacon.get("visibility_at_start") == "hidden"
        # The web-vitals TTFB accounts for prerendering and back/forward cache
        # restores, so it wins over the one derived from the marks.
        ttfb = (
            vitals["TTFB"]
            if "TTFB" in vitals
            else self._since_start("ttfb_ms", nav, "responseStart")
        )
        dcl = self._since_start(
            "dom_content_loaded_ms", nav, "domContentLoadedEventEnd"
        )
        load = self._since_start("load_ms", nav, "loadEventEnd")
        ms = self.max_ms
        return PageView(
            page=page,
            ttfb_ms=self._range("ttfb_ms", ttfb, ms, allow_zero=True),
            dom_content_loaded_ms=self._range("dom_content_loaded_ms", dcl, ms),
            load_ms=self._range("load_ms", load, ms),
            lcp_ms=self._lcp(vitals.get("LCP"), hidden),
            inp_ms=self._range("inp_ms", vitals.get("INP"), ms, allow_zero=True),
            cls=self._range("cls", vitals.get("CLS"), self.max_cls, allow_zero=True),
            js_errors=self._js_errors(beacon),
        )

    def _section(self, beacon: Mapping[str, Any], name: str) -> Mapping[str, Any]:
        section = beacon.get(name)
        if section is None:
            return {}
        if not isinstance(section, dict):
            self._drop(name, "not_an_object", f"{name} must be an object")
            return {}
        return section

    def _since_start(
        self, field: str, nav: Mapping[str, Any], mark: str
    ) -> float | None:
        """A Navigation Timing mark as milliseconds since the navigation began.

        A mark the page never reached reads 0 in both Level 1 and Level 2:
        its field is dropped as missing, never computed as minus the epoch.
        """
        value = nav.get(mark)
        if value is None:
            return None
        start = nav.get("navigationStart", nav.get("startTime", 0))
        if not _is_number(value) or not _is_number(start):
            detail = f"{mark}={value!r:.40}, start={start!r:.40}"
            return self._drop(field, "not_a_number", detail)
        if value == 0:
            detail = f"{mark} is 0: the page was left before reaching it"
            return self._drop(field, "missing", detail)
        return float(value) - float(start)

    def _lcp(self, value: object, hidden: bool) -> float | None:
        if value is not None and hidden:
            return self._drop(
                "lcp_ms",
                "hidden_at_start",
                f"LCP {value!r:.40} ms measured in a tab that started hidden",
            )
        return self._range("lcp_ms", value, self.max_ms)

    def _range(
        self, field: str, value: object, upper: float, *, allow_zero: bool = False
    ) -> float | None:
        if value is None:
            return None
        if not _is_number(value):
            if _is_nan(value):
                # A field dropped already: strict JSON cannot carry NaN.
                return value  # type: ignore[return-value]
            return self._drop(field, "not_a_number", f"got {value!r:.60}")
        number = float(value)  # type: ignore[arg-type]
        if number < 0:
            return self._drop(field, "negative", f"got {number:.10g}")
        if number > upper or (number == 0 and not allow_zero):
            bound = f"0 <= x <= {upper:g}" if allow_zero else f"0 < x <= {upper:g}"
            return self._drop(field, "out_of_range", f"got {number:.10g}, want {bound}")
        return number

    def _js_errors(self, beacon: Mapping[str, Any]) -> int:
        errors = beacon.get("errors", [])
        if isinstance(errors, list):
            return len(errors)
        self._drop(
            "js_errors", "not_a_list", f"errors must be a list, got {errors!r:.40}"
        )
        return 0

    def _drop(self, field: str, reason: str, detail: str) -> float:
        self.rejections.append(
            Rejection(reason, f"{field}: {detail}", "field", field, self.event_id)
        )
        return math.nan


def _is_number(value: object) -> bool:
    # Exact types: JSON numbers decode to int or float, and True is no number.
    kind = type(value)
    if kind is int:
        return True
    return kind is float and math.isfinite(value)  # type: ignore[arg-type]


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _load(data: bytes) -> dict[str, Any]:
    try:
        beacon = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _BadBeacon("json_decode_error", str(exc)) from exc
    if not isinstance(beacon, dict):
        raise _BadBeacon("schema", f"a beacon is a JSON object, got {beacon!r:.60}")
    kind = beacon.get("type", BEACON_TYPE)
    if kind != BEACON_TYPE:
        raise _BadBeacon("schema", f"type must be {BEACON_TYPE!r}, got {kind!r:.60}")
    return beacon


def _event_time(beacon: Mapping[str, Any]) -> datetime:
    received = beacon.get("received_at")
    if received is not None:
        return _timestamp(received, "received_at")
    nav = beacon.get("nav")
    start = nav.get("navigationStart") if isinstance(nav, dict) else None
    if start is None:
        raise _BadBeacon(
            "no_time", "the beacon has neither received_at nor nav.navigationStart"
        )
    return _timestamp(start, "nav.navigationStart")


def _timestamp(value: object, name: str) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise _BadBeacon("bad_time", f"{name}={value!r:.60}: {exc}") from exc
        if parsed.tzinfo is None:
            raise _BadBeacon(
                "bad_time", f"{name}={value!r:.60} has no UTC offset; add 'Z'"
            )
        return parsed.astimezone(UTC)
    if _is_number(value) and float(value) > 0:  # type: ignore[arg-type]
        seconds = float(value)  # type: ignore[arg-type]
        if seconds > _MS_THRESHOLD:
            seconds /= 1000.0
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise _BadBeacon("bad_time", f"{name}={value!r:.60}: {exc}") from exc
    raise _BadBeacon("bad_time", f"{name} must be ISO-8601 or epoch, got {value!r:.60}")


def _optional_str(beacon: Mapping[str, Any], name: str) -> str | None:
    value = beacon.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _BadBeacon("schema", f"{name} must be a string, got {value!r:.60}")


def _token_pattern(tokens: list[str]) -> re.Pattern[str] | None:
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in tokens), re.IGNORECASE)


def _first_error(error: ValidationError) -> str:
    item = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in item["loc"])
    return f"{where}: {item['msg']} (got {item.get('input')!r:.60})"
