"""RUM beacons on a `rum` topic give the same page-view KPIs as native events."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from bytewax.testing import run_main

from connectors.kafka import consume_all, produce_all
from connectors.messages import OutMessage
from foreshock.config import Settings
from foreshock.jobs import kafka_flow

pytestmark = pytest.mark.kafka

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/122.0 Safari/537.36"
HEADLESS = "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/122.0.0.0 Safari/537.36"


def _page(minute: int, i: int) -> dict[str, float]:
    ttfb = -35.0 if (minute, i) == (1, 0) else 200.0 + 10 * i + minute
    return {
        "ttfb": ttfb,
        "load": 1500.0 + 100 * i + minute,
        "lcp": 2000.0 + 100 * i + minute,
        "inp": 100.0 + i,
        "cls": 0.01 * (i + 1),
    }


def _times() -> list[tuple[int, int, datetime]]:
    return [
        (m, i, T0 + timedelta(minutes=m, seconds=5 * i))
        for m in range(3)
        for i in range(4)
    ]


def _beacons(topic: str) -> list[OutMessage]:
    out = []
    for minute, i, t in _times():
        p = _page(minute, i)
        start = int(t.timestamp() * 1000) - 3000
        beacon = {
            "type": "rum_beacon",
            "beacon_id": f"b-{minute}-{i}",
            "received_at": t.isoformat(),
            "service": "shop-rum",
            "page": "/product",
            "ua": CHROME,
            "visibility_at_start": "visible",
            "nav": {
                "navigationStart": start,
                "responseStart": start + p["ttfb"],
                "loadEventEnd": start + p["load"],
            },
            "vitals": {"LCP": p["lcp"], "INP": p["inp"], "CLS": p["cls"]},
        }
        out.append(OutMessage(topic, b"shop", json.dumps(beacon).encode()))
    bot = {"received_at": (T0 + timedelta(minutes=2)).isoformat(), "ua": HEADLESS}
    bot["vitals"] = {"LCP": 9000}
    out.insert(9, OutMessage(topic, b"shop", json.dumps(bot).encode()))
    out.insert(3, OutMessage(topic, b"shop", b"{not json"))
    return out


def _native(topic: str) -> list[OutMessage]:
    out = []
    for minute, i, t in _times():
        p = _page(minute, i)
        event = {
            "time": t.isoformat(),
            "layer": "frontend",
            "service": "shop-native",
            "payload": {
                "kind": "page_view",
                "page": "/product",
                "ttfb_ms": p["ttfb"],
                "load_ms": p["load"],
                "lcp_ms": p["lcp"],
                "inp_ms": p["inp"],
                "cls": p["cls"],
            },
        }
        out.append(OutMessage(topic, b"shop", json.dumps(event).encode()))
    return out


def test_beacons_and_native_events_give_the_same_page_view_kpis(
    kafka_bootstrap: str, kafka_topics
) -> None:
    rum, native, kpis, anomalies, incidents, warnings, dead, late = kafka_topics(
        "rum", "native", "kpis", "anomalies", "incidents", "warnings", "dead", "late"
    )
    settings = Settings(
        kafka={
            "bootstrap_servers": kafka_bootstrap,
            "input_topics": [rum, native],
            "group_id": rum,
            "formats": {rum: "rum"},
        },
        topics={
            "kpis": kpis,
            "anomalies": anomalies,
            "incidents": incidents,
            "early_warnings": warnings,
            "dead_letters": dead,
            "late_events": late,
        },
    )
    produce_all(kafka_bootstrap, _beacons(rum) + _native(native))

    run_main(kafka_flow(settings, until_end=True))  # type: ignore[arg-type]

    records = [json.loads(m.value)["kpi"] for m in consume_all(kafka_bootstrap, kpis)]
    by_service: dict[str, dict[tuple[str, str], tuple[object, ...]]] = {}
    for r in records:
        key = (r["kpi"], r["window_start"])
        value = (r["value"], r["events"], r["rejected_values"])
        by_service.setdefault(r["service"], {})[key] = value
    rum_kpis, native_kpis = by_service["shop-rum"], by_service["shop-native"]
    assert rum_kpis == native_kpis
    # Minute 0, LCP 2000 2100 2200 2300 -> 3rd of 4.
    assert rum_kpis[("lcp_p75_ms", "2025-03-04T09:00:00Z")] == (2200.0, 4, 0)
    # Minute 1 drops one negative TTFB: 211 221 231 -> 3rd of 3.
    assert rum_kpis[("ttfb_p75_ms", "2025-03-04T09:01:00Z")] == (231.0, 4, 1)
    # Minute 2 without the bot's 9000 ms: 2002 2102 2202 2302 -> 3rd of 4.
    assert rum_kpis[("lcp_p75_ms", "2025-03-04T09:02:00Z")] == (2202.0, 4, 0)
    assert rum_kpis[("page_load_p75_ms", "2025-03-04T09:02:00Z")] == (1702.0, 4, 0)
    letters = [json.loads(m.value) for m in consume_all(kafka_bootstrap, dead)]
    assert [(d["reason"], d["topic"], d["offset"]) for d in letters] == [
        ("json_decode_error", rum, 3)
    ]
