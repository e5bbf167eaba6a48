"""RUM beacons: per-field plausibility, bots kept apart, service and route mapping."""

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from connectors.messages import RawBatch, RawMessage
from connectors.rum import BeaconDecoder, RumSettings
from flows.steps import WindowLogic
from foreshock.config import Settings
from foreshock.decode import Rejection, decoder_for
from foreshock.layers import Layer
from foreshock.records import DeadLetter, KpiRecord
from foreshock.schema import Event, PageView
from foreshock.windows import WindowSpec, WindowStore
from tests.cases import CASES

DAY = datetime(2025, 3, 4, tzinfo=UTC)
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/122.0 Safari/537.36"
HEADLESS = "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/122.0.0.0 Safari/537.36"


def _case_lines(case: str) -> list[bytes]:
    [path] = CASES.glob(f"{case}-*.beacons.jsonl")
    return path.read_bytes().splitlines()


def _decode_all(
    lines: list[bytes], decoder: BeaconDecoder | None = None
) -> tuple[list[Event], list[Rejection]]:
    decode = decoder or BeaconDecoder()
    events: list[Event] = []
    rejections: list[Rejection] = []
    for line in lines:
        found, refused = decode(line)
        events.extend(found)
        rejections.extend(refused)
    return events, rejections


def _windows(events: list[Event], length_s: float) -> list[KpiRecord]:
    store = WindowStore(spec=WindowSpec(length_s, 0, DAY))
    for event in sorted(events, key=lambda e: e.time):
        assert store.add(event) is None
    return store.close_all()


def _kpi(records: list[KpiRecord], layer: Layer, kpi: str) -> dict[str, float | None]:
    return {
        f"{r.window_start:%H:%M}": r.value
        for r in records
        if r.layer == layer and r.kpi == kpi and r.state != "no_data"
    }


def _beacon(**fields: object) -> bytes:
    doc: dict[str, object] = {
        "type": "rum_beacon",
        "beacon_id": "t-1",
        "received_at": "2025-03-04T10:00:05Z",
        "page": "/",
        "ua": CHROME,
        "visibility_at_start": "visible",
    }
    doc.update(fields)
    return json.dumps(doc).encode()


def test_c11_drops_each_impossible_field_with_its_reason_and_keeps_the_beacon() -> None:
    events, rejections = _decode_all(_case_lines("C11"))

    assert len(events) == 12
    assert {(r.event_id, r.field, r.reason) for r in rejections} == {
        # loadEventEnd and domContentLoadedEventEnd are 0: the user left first.
        ("b-009", "dom_content_loaded_ms", "missing"),
        ("b-009", "load_ms", "missing"),
        ("b-010", "ttfb_ms", "negative"),
        ("b-011", "lcp_ms", "hidden_at_start"),
        # navigationStart 11.6 days before the load: 1e9 ms.
        ("b-012", "dom_content_loaded_ms", "out_of_range"),
        ("b-012", "load_ms", "out_of_range"),
        ("b-012", "lcp_ms", "out_of_range"),
    }
    assert all(r.scope == "field" for r in rejections)
    b009 = next(e for e in events if e.event_id == "b-009").payload
    assert isinstance(b009, PageView)
    assert (b009.lcp_ms, b009.ttfb_ms) == (2100.0, 310.0)


def test_c11_p75_of_the_valid_values_only() -> None:
    events, _ = _decode_all(_case_lines("C11"))

    records = _windows(events, 86_400)

    # LCP, 10 valid: 1567 1650 1896 1940 1952 2100 2424 2448 2511 2540 -> 8th.
    assert _kpi(records, Layer.FRONTEND, "lcp_p75_ms") == {"00:00": 2448.0}
    # Load, 10 valid: 1575 1700 1800 1847 1974 2142 2223 2364 2489 2759 -> 8th.
    assert _kpi(records, Layer.FRONTEND, "page_load_p75_ms") == {"00:00": 2364.0}
    # TTFB, 11 valid: 200 206 228 237 242 250 262 293 299 310 337 -> 9th.
    assert _kpi(records, Layer.FRONTEND, "ttfb_p75_ms") == {"00:00": 299.0}
    lcp = next(r for r in records if r.kpi == "lcp_p75_ms")
    assert (lcp.events, lcp.rejected_values) == (12, 7)


def test_c12_bots_are_excluded_and_synthetic_agents_get_their_own_layer() -> None:
    events, rejections = _decode_all(_case_lines("C12"))

    records = _windows(events, 3600)

    # Night, real users only: 2292 2393 2434 2482 -> 3rd of 4.
    assert _kpi(records, Layer.FRONTEND, "lcp_p75_ms") == {
        "02:00": 2434.0,
        # Day: 1971 1999 2032 2069 2159 2266 2279 2417 2489 2504 2551 2564 -> 9th.
        "14:00": 2489.0,
    }
    # The synthetic agent's three page views: 2560 2652 2686 -> 3rd of 3.
    assert _kpi(records, Layer.SYNTHETIC, "lcp_p75_ms") == {"02:00": 2686.0}
    # 10 HeadlessChrome and 2 ExampleCrawler beacons.
    assert [(r.reason, r.scope) for r in rejections] == [("bot", "excluded")] * 12
    synthetic = [e for e in events if e.layer == Layer.SYNTHETIC]
    assert {e.attributes["synthetic_check"] for e in synthetic} == {"checkout-journey"}


def test_c12_without_crawler_detection_headless_browsers_inflate_night_lcp() -> None:
    settings = RumSettings(detect_crawlers=False)
    events, _ = _decode_all(_case_lines("C12"), BeaconDecoder(settings))

    records = _windows(events, 3600)

    # 4 humans and 12 bots at night: the 12th of 16 is the 8th bot, 8931 ms.
    assert _kpi(records, Layer.FRONTEND, "lcp_p75_ms")["02:00"] == 8931.0


def test_navigation_timing_level_2_fields_are_relative_to_the_time_origin() -> None:
    nav = {
        "startTime": 0,
        "fetchStart": 3.5,
        "responseStart": 180.5,
        "domContentLoadedEventEnd": 900.25,
        "loadEventEnd": 1200.75,
    }

    [event], rejections = BeaconDecoder()(_beacon(nav=nav))

    assert event.payload == PageView(
        page="/", ttfb_ms=180.5, dom_content_loaded_ms=900.25, load_ms=1200.75
    )
    assert rejections == []


def test_vitals_errors_and_event_time_from_received_at() -> None:
    beacon = _beacon(
        vitals={"LCP": 2511, "INP": 113, "CLS": 0.016, "TTFB": 228},
        errors=[{"message": "TypeError"}, {"message": "ReferenceError"}],
        nav={"navigationStart": 1741082400000, "loadEventEnd": 1741082401847},
    )

    [event], rejections = BeaconDecoder()(beacon)

    assert event.time == datetime(2025, 3, 4, 10, 0, 5, tzinfo=UTC)
    assert (event.layer, event.service, event.event_id) == (
        Layer.FRONTEND,
        "web",
        "t-1",
    )
    assert event.payload == PageView(
        page="/",
        ttfb_ms=228.0,
        load_ms=1847.0,
        lcp_ms=2511.0,
        inp_ms=113.0,
        cls=0.016,
        js_errors=2,
    )
    assert rejections == []


def test_without_received_at_the_navigation_start_is_the_event_time() -> None:
    beacon = json.dumps(
        {"nav": {"navigationStart": 1741082400000, "loadEventEnd": 1741082401000}}
    ).encode()

    [event], _ = BeaconDecoder()(beacon)

    assert event.time == datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


def test_service_by_host_then_beacon_then_default_and_routes_by_rule() -> None:
    settings = RumSettings(
        default_service="site",
        services={"shop.example.com": "web-shop"},
        routes=[{"pattern": r"/checkout/.*", "route": "/checkout"}],
    )
    decode = BeaconDecoder(settings)
    cases = [
        (_beacon(url="https://shop.example.com/product/12345?ref=1"), "web-shop"),
        (_beacon(url="https://shop.example.com/checkout/step-2#pay"), "web-shop"),
        (
            _beacon(url="https://blog.example.com/p/4f9c2a1b8e7d6c5b", service="blog"),
            "blog",
        ),
        (_beacon(page="/"), "site"),
    ]

    placed = [
        (events[0].service, events[0].payload.page)  # type: ignore[union-attr]
        for events, _ in (decode(beacon) for beacon, _ in cases)
    ]

    assert placed == [
        ("web-shop", "/product/:id"),
        ("web-shop", "/checkout"),
        ("blog", "/p/:id"),
        ("site", "/"),
    ]


def test_synthetic_agent_by_user_agent_and_extra_bot_tokens_from_config() -> None:
    decode = BeaconDecoder(RumSettings(bot_agents=["UptimeProbe"]))

    [synthetic], _ = decode(_beacon(ua=CHROME + " SyntheticAgent/1.4"))
    probe = decode(_beacon(ua="UptimeProbe/3.0"))
    headless = decode(_beacon(ua=HEADLESS))

    assert synthetic.layer == Layer.SYNTHETIC
    assert [r.reason for r in probe[1]] == ["bot"] and probe[0] == []
    assert [r.reason for r in headless[1]] == ["bot"] and headless[0] == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "json_decode_error"),
        (b"[1, 2]", "schema"),
        (_beacon(type="rum_error"), "schema"),
        (_beacon(page=42), "schema"),
        (_beacon(ua=7), "schema"),
        (_beacon(received_at="yesterday"), "bad_time"),
        (_beacon(received_at=1e20), "bad_time"),
        (_beacon(url="https://[::1/product"), "schema"),
        (_beacon(received_at="2025-03-04T10:00:05"), "bad_time"),
        (json.dumps({"page": "/"}).encode(), "no_time"),
        (_beacon(service="x" * 201), "schema"),
    ],
)
def test_a_beacon_that_cannot_be_placed_is_refused_whole(
    data: bytes, reason: str
) -> None:
    events, [rejection] = BeaconDecoder()(data)

    assert events == []
    assert (rejection.reason, rejection.scope) == (reason, "message")


def test_wrongly_typed_measurements_are_dropped_one_by_one() -> None:
    beacon = _beacon(
        vitals={"LCP": "fast", "INP": True, "CLS": 0.5, "TTFB": 0},
        nav={"navigationStart": 1741082400000, "loadEventEnd": "later"},
        errors="many",
    )

    [event], rejections = BeaconDecoder()(beacon)

    assert [(r.field, r.reason) for r in rejections] == [
        ("load_ms", "not_a_number"),
        ("lcp_ms", "not_a_number"),
        ("inp_ms", "not_a_number"),
        ("js_errors", "not_a_list"),
    ]
    assert isinstance(event.payload, PageView)
    assert (event.payload.ttfb_ms, event.payload.cls) == (0.0, 0.5)


def test_the_rum_format_is_registered_and_configured_from_settings() -> None:
    settings = Settings(rum={"default_service": "storefront"})

    [event], _ = decoder_for("rum", settings)(_beacon())

    assert event.service == "storefront"


def test_a_format_for_a_topic_must_be_known_and_the_topic_an_input() -> None:
    with pytest.raises(ValidationError, match="'xml', not a known format"):
        Settings(kafka={"input_topics": ["rum"], "formats": {"rum": "xml"}})
    with pytest.raises(ValidationError, match=r"not in kafka\.input_topics"):
        Settings(kafka={"input_topics": ["a"], "formats": {"rum": "rum"}})


def test_window_step_decodes_a_batch_by_its_format() -> None:
    logic = WindowLogic(
        WindowStore(spec=WindowSpec(60, 0, DAY)),
        {"rum": BeaconDecoder()},
    )
    batch = RawBatch(
        "rum:0",
        (
            RawMessage("rum", 0, 0, None, _beacon(vitals={"LCP": 1200})),
            RawMessage("rum", 0, 1, None, b"{not json"),
            RawMessage("rum", 0, 2, None, _beacon(ua=HEADLESS)),
        ),
        "rum",
    )
    native = RawBatch("t:0", (RawMessage("t", 0, 0, None, b"{}"),))

    out, _ = logic.on_item(batch)
    unknown, _ = logic.on_item(native)
    closed, _ = logic.on_eof()

    assert [(d.reason, d.offset) for d in out if isinstance(d, DeadLetter)] == [
        ("json_decode_error", 1)
    ]
    assert [(d.reason, d.topic) for d in unknown if isinstance(d, DeadLetter)] == [
        ("unknown_format", "t")
    ]
    assert logic.excluded == {"bot": 1}
    records = [r for r in closed if isinstance(r, KpiRecord)]
    assert _kpi(records, Layer.FRONTEND, "lcp_p75_ms") == {"10:00": 1200.0}
