"""`foreshock decode`: exactly what Foreshock takes from each message."""

import base64
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from foreshock.cli import main
from foreshock.config import Settings
from foreshock.decode import decoder_for
from foreshock.schema import PageView

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/122.0 Safari/537.36"
HEADLESS = "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/122.0.0.0 Safari/537.36"

NATIVE = [
    '{"time": "2025-03-04T10:00:01Z", "layer": "api", "service": "checkout-api", '
    '"event_id": "e-1", "payload": {"kind": "http_request", "status": 503, '
    '"duration_ms": 120.5}}',
    # A poison message: cut off mid-object.
    '{"time": "2025-03-04T10:00:02Z", "layer":',
    '{"time": 1741082403000, "layer": "api", "service": "checkout-api", '
    '"payload": {"kind": "http_request", "status": 200, "duration_ms": -4}}',
    '{"time": "2025-03-04T10:00:04Z", "layer": "moon", "service": "x", '
    '"payload": {"kind": "heartbeat"}}',
]

RUM = [
    json.dumps(
        {
            "beacon_id": "b-1",
            "received_at": "2025-03-04T10:01:30Z",
            "url": "https://shop.example.com/product/42?ref=home",
            "ua": CHROME,
            "nav": {
                "navigationStart": 1741082400000,
                "responseStart": 1741082399965,
                "loadEventEnd": 1741082401800,
            },
            "vitals": {"LCP": 1650, "CLS": 0.02},
        }
    ),
    json.dumps(
        {"beacon_id": "b-2", "received_at": "2025-03-04T10:01:40Z", "ua": HEADLESS}
    ),
    "not a beacon",
]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    assert main(["decode", *argv]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_native_events_window_drops_and_dead_letters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "native.jsonl"
    path.write_text("\n".join(NATIVE) + "\n")

    lines = _run(capsys, str(path))

    assert lines == [
        {
            "line": 1,
            "outcome": "event",
            "time": "2025-03-04T10:00:01Z",
            "window_start": "2025-03-04T10:00:00Z",
            "layer": "api",
            "service": "checkout-api",
            "event_id": "e-1",
            "attributes": {},
            "payload": {"kind": "http_request", "status": 503, "duration_ms": 120.5},
            "kpi_inputs": {
                "counts": {"requests": 1, "errors": 1, "server_errors": 1},
                "values": {"request_ms": [120.5]},
                "rejected": {},
            },
        },
        {
            "line": 2,
            "outcome": "dead_letter",
            "reason": "json_decode_error",
            "field": None,
            "event_id": None,
            "detail": "Expecting value: line 1 column 42 (char 41)",
        },
        {
            "line": 3,
            "outcome": "event",
            # 1741082403000 ms since the epoch.
            "time": "2025-03-04T10:00:03Z",
            "window_start": "2025-03-04T10:00:00Z",
            "layer": "api",
            "service": "checkout-api",
            "event_id": None,
            "attributes": {},
            "payload": {"kind": "http_request", "status": 200, "duration_ms": -4.0},
            "kpi_inputs": {
                "counts": {"requests": 1},
                "values": {},
                "rejected": {"request_ms": 1},
            },
        },
        {
            "line": 3,
            "outcome": "field_dropped",
            "reason": "impossible_value",
            "field": "request_ms",
            "event_id": None,
            "detail": "request_ms: negative or not finite, left out of the "
            "window's KPIs",
        },
        {
            "line": 4,
            "outcome": "dead_letter",
            "reason": "schema",
            "field": None,
            "event_id": None,
            "detail": "layer: Input should be 'frontend', 'mobile', 'synthetic', "
            "'api', 'backend', 'database', 'infrastructure' or 'third_party' "
            "(got 'moon')",
        },
        {
            "outcome": "summary",
            "messages": 4,
            "events": 2,
            "dead_letters": 2,
            "fields_dropped": 1,
            "excluded": 0,
        },
    ]


def test_rum_beacons_from_standard_input_with_the_job_configuration(
    tmp_path: Path,
) -> None:
    config = tmp_path / "foreshock.toml"
    config.write_text('[rum.services]\n"shop.example.com" = "web-shop"\n')

    command = ["decode", "--format", "rum", "--config", str(config), "-"]

    done = subprocess.run(
        [sys.executable, "-m", "foreshock.cli", *command],
        input="\n".join(RUM) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {
            "line": 1,
            "outcome": "event",
            "time": "2025-03-04T10:01:30Z",
            "window_start": "2025-03-04T10:01:00Z",
            "layer": "frontend",
            "service": "web-shop",
            "event_id": "b-1",
            "attributes": {},
            "payload": {
                "kind": "page_view",
                "page": "/product/:id",
                "ttfb_ms": None,
                "load_ms": 1800.0,
                "lcp_ms": 1650.0,
                "cls": 0.02,
                "js_errors": 0,
            },
            "kpi_inputs": {
                "counts": {"page_views": 1},
                "values": {"load_ms": [1800.0], "lcp_ms": [1650.0], "cls": [0.02]},
                "rejected": {"ttfb_ms": 1},
            },
        },
        {
            "line": 1,
            "outcome": "field_dropped",
            "reason": "negative",
            "field": "ttfb_ms",
            "event_id": "b-1",
            "detail": "ttfb_ms: got -35",
        },
        {
            "line": 2,
            "outcome": "excluded",
            "reason": "bot",
            "field": None,
            "event_id": "b-2",
            "detail": f"user agent {HEADLESS!r} is a crawler or headless browser",
        },
        {
            "line": 3,
            "outcome": "dead_letter",
            "reason": "json_decode_error",
            "field": None,
            "event_id": None,
            # orjson's own words: "n" could only have started "null".
            "detail": "invalid literal, expected 'null': line 1 column 1 (char 0)",
        },
        {
            "outcome": "summary",
            "messages": 3,
            "events": 1,
            "dead_letters": 1,
            "fields_dropped": 1,
            "excluded": 1,
        },
    ]


def test_base64_lines_that_are_not_base64_are_dead_letters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "b64.txt"
    path.write_text("not base64!\n")

    lines = _run(capsys, "--base64", str(path))

    assert [(x["outcome"], x.get("reason")) for x in lines] == [
        ("dead_letter", "base64"),
        ("summary", None),
    ]


def test_unknown_format_and_missing_file_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = main(["decode", "--format", "xml", "-"])
    missing = main(["decode", str(tmp_path / "absent.jsonl")])

    err = capsys.readouterr().err
    assert (unknown, missing) == (2, 2)
    assert "unknown message format 'xml'; known formats: native" in err
    assert "cannot read" in err and "absent.jsonl" in err


def test_the_readme_rum_example_configures_and_decodes() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Sending browser beacons (RUM)")[1]
    toml_text = section.split("```toml\n")[1].split("```")[0]
    beacon = section.split("```json\n")[1].split("```")[0]
    settings = Settings(**tomllib.loads(toml_text))

    [event], rejections = decoder_for("rum", settings)(beacon.encode())

    assert settings.kafka.formats == {"rum-beacons": "rum"}
    assert (event.service, event.payload.page, rejections) == (
        "web-shop",
        "/product/:id",
        [],
    )
    assert event.payload == PageView(
        page="/product/:id",
        ttfb_ms=228.0,
        dom_content_loaded_ms=1547.0,
        load_ms=1847.0,
        lcp_ms=2511.0,
        inp_ms=113.0,
        cls=0.016,
    )


def test_otlp_proto_lines_are_base64_and_need_their_signal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = ExportMetricsServiceRequest()
    resource = request.resource_metrics.add()
    name = resource.resource.attributes.add()
    name.key, name.value.string_value = "service.name", "orders-db"
    metric = resource.scope_metrics.add().metrics.add()
    metric.name = "db.client.connection.count"
    point = metric.gauge.data_points.add()
    point.time_unix_nano, point.as_double = 1_741_082_400_000_000_000, 17.0
    path = tmp_path / "metrics.b64"
    path.write_bytes(base64.b64encode(request.SerializeToString()) + b"\n")

    unqualified = main(["decode", "--format", "otlp_proto", str(path)])
    err = capsys.readouterr().err
    lines = _run(capsys, "--format", "otlp_proto", "--signal", "metrics", str(path))

    assert unqualified == 2 and "needs --signal metrics or traces" in err
    [event, summary] = lines
    assert (event["outcome"], event["service"], event["time"]) == (
        "event",
        "orders-db",
        "2025-03-04T10:00:00Z",
    )
    assert event["payload"]["name"] == "db.client.connection.count"
    assert event["kpi_inputs"]["values"] == {
        "metric:db.client.connection.count": [17.0]
    }
    assert (summary["messages"], summary["events"]) == (1, 1)
