"""The webhook notifier against a real local HTTP server that fails on purpose."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow, Stream
from bytewax.outputs import DynamicSink
from bytewax.testing import TestingSource, run_main
from prometheus_client import REGISTRY

from connectors.fanout import FanOutSink
from connectors.webhook import (
    Notice,
    WebhookConfig,
    WebhookNotifier,
    WebhookSink,
    incident_payload,
)
from foreshock.config import Settings
from foreshock.jobs import notice_sink
from tests.connectors.samples import OPENED, RESOLVED, WARNING, at

LINK = "https://foreshock.example/incidents/{id}"
SECRET_PATH = "/services/T000/B000/not-a-real-secret"


@dataclass
class _Behaviour:
    """What the server does: fail the first `fail_first` requests."""

    fail_first: int = 0
    status: int = 503
    delay_s: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(behaviour: _Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = json.loads(self.rfile.read(length))
            with behaviour.lock:
                behaviour.bodies.append(body)
                failing = len(behaviour.bodies) <= behaviour.fail_first
            if failing and behaviour.delay_s:
                time.sleep(behaviour.delay_s)
            try:
                self.send_response(behaviour.status if failing else 200)
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):
                # The client stopped waiting: the timeout case.
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, _Behaviour]]:
    behaviour = _Behaviour()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(behaviour))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}{SECRET_PATH}", behaviour
    httpd.shutdown()
    httpd.server_close()


def _notifier(url: str, waits: list[float], **overrides: Any) -> WebhookNotifier:
    config = WebhookConfig(url, link=LINK, backoff_s=0.5, **overrides)
    return WebhookNotifier(config, sleep=waits.append)


def _failed_posts() -> float:
    value = REGISTRY.get_sample_value(
        "foreshock_webhook_posts_total", {"outcome": "failed"}
    )
    return value or 0.0


def test_an_incident_is_retried_through_server_errors(
    server: tuple[str, _Behaviour],
) -> None:
    url, behaviour = server
    behaviour.fail_first = 2
    waits: list[float] = []
    notifier = _notifier(url, waits)

    sent = notifier.notify(OPENED)

    assert sent is True
    assert len(behaviour.bodies) == 3
    # Doubling from 0.5 s: after the first failure, then after the second.
    assert waits == [0.5, 1.0]
    assert (notifier.sent, notifier.retries, notifier.failed) == (1, 2, 0)
    assert behaviour.bodies[-1] == _expected_open_incident()


def _expected_open_incident() -> dict[str, Any]:
    link = "https://foreshock.example/incidents/incident-1"
    headline = "Incident open: web ttfb_p75_ms degraded; probable root cause orders-db"
    return {
        "text": f"{headline} <{link}|open>",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": headline}},
            _section(
                "*User impact*\n"
                "• frontend/web ttfb_p75_ms 2400 (baseline 600), up since 10:05"
            ),
            _section(
                "*Probable root causes*\n"
                "1. *orders-db* (database), score 0.81: first to degrade, "
                "5 min before users\n"
                "      ◦ database/orders-db latency_p95_ms 840 (baseline 120), "
                "up since 10:00\n"
                "2. *orders* (backend), score 0.42: on the path from web to orders-db"
            ),
            _section(
                "*Lead time*\n"
                "5 min: the deep stack showed it before users were affected"
            ),
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": "incident `incident-1` · opened 2025-03-04 10:07Z"
                        " · updated 10:07Z",
                    }
                ],
            },
            _section(f"<{link}|Open in Foreshock>"),
        ],
    }


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def test_an_early_warning_gets_no_link_and_an_incident_keeps_its_own(
    server: tuple[str, _Behaviour],
) -> None:
    # The link template names incidents; a warning's id would make a dead link.
    url, behaviour = server
    notifier = _notifier(url, [])

    assert notifier.notify(WARNING) is True
    assert notifier.notify(OPENED) is True

    headline = "Early warning: orders-db (database) degrading; at risk: web"
    warning, incident = behaviour.bodies
    assert warning == {
        "text": headline,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": headline}},
            _section(
                "*Evidence*\n"
                "• database/orders-db latency_p95_ms 840 (baseline 120), "
                "up since 10:00"
            ),
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": "early warning `warning-1` · onset 2025-03-04 10:00Z"
                        " · published 10:03Z",
                    }
                ],
            },
        ],
    }
    assert incident == _expected_open_incident()


def test_a_webhook_that_keeps_failing_is_given_up_logged_and_counted(
    server: tuple[str, _Behaviour], caplog: pytest.LogCaptureFixture
) -> None:
    url, behaviour = server
    behaviour.fail_first = 10
    waits: list[float] = []
    notifier = _notifier(url, waits, attempts=4)
    before = _failed_posts()

    with caplog.at_level(logging.WARNING, logger="connectors.webhook"):
        sent = notifier.notify(OPENED)

    assert sent is False
    assert len(behaviour.bodies) == 4
    assert waits == [0.5, 1.0, 2.0]
    assert (notifier.sent, notifier.retries, notifier.failed) == (0, 3, 1)
    assert _failed_posts() == before + 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "webhook post failed, giving up webhook=http://127.0.0.1 attempts=4 "
        "error=HTTP 503"
    ]
    assert SECRET_PATH not in caplog.text


def test_a_refused_payload_is_not_retried(server: tuple[str, _Behaviour]) -> None:
    url, behaviour = server
    behaviour.fail_first = 10
    behaviour.status = 400
    waits: list[float] = []
    notifier = _notifier(url, waits)

    sent = notifier.notify(OPENED)

    assert sent is False
    assert len(behaviour.bodies) == 1
    assert waits == []
    assert notifier.failed == 1


def test_a_timeout_is_retried(server: tuple[str, _Behaviour]) -> None:
    url, behaviour = server
    behaviour.fail_first = 1
    behaviour.delay_s = 1.0
    waits: list[float] = []
    notifier = _notifier(url, waits, timeout_s=0.2)

    sent = notifier.notify(OPENED)

    assert sent is True
    assert len(behaviour.bodies) == 2
    assert waits == [0.5]


def test_a_webhook_nobody_listens_on_fails_without_raising() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []
    notifier = _notifier(f"http://127.0.0.1:{port}/hook", waits, attempts=3)

    sent = notifier.notify(OPENED)

    assert sent is False
    assert waits == [0.5, 1.0]
    assert notifier.failed == 1


def test_the_sink_posts_warnings_and_opened_and_resolved_incidents_not_ends(
    server: tuple[str, _Behaviour],
) -> None:
    url, behaviour = server
    updated = OPENED.model_copy(update={"status": "updated", "updated_at": at(12)})
    ended = WARNING.model_copy(update={"status": "ended", "published_at": at(40)})
    notices: list[Notice] = [WARNING, OPENED, updated, RESOLVED, ended]
    _run_notices(notices, _sink(url))

    assert [body["text"] for body in behaviour.bodies] == [
        "Early warning: orders-db (database) degrading; at risk: web",
        "Incident open: web ttfb_p75_ms degraded; probable root cause orders-db",
        "Incident resolved: web ttfb_p75_ms degraded; probable root cause orders-db",
    ]


def _sink(url: str) -> WebhookSink:
    return WebhookSink(WebhookConfig(url))


def test_text_from_records_is_escaped_for_slack() -> None:
    odd = OPENED.model_copy(update={"title": "a <b> & c", "user_facing": []})

    payload = incident_payload(odd)

    assert payload["text"] == "Incident open: a &lt;b&gt; &amp; c"
    assert payload["blocks"][1]["text"]["text"] == ("*User impact*\nnone measured yet")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": "ftp://x/hook"}, "must start with http:// or https://"),
        ({"attempts": 0}, "attempts must be at least 1"),
        ({"link": "https://x/{incident}"}, "may use only {id}"),
    ],
)
def test_bad_configuration_is_refused(overrides: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"url": "https://hooks.example/x", **overrides}

    with pytest.raises(ValueError, match=message):
        WebhookConfig(**settings)


def _run_notices(notices: list[Notice], sink: DynamicSink[Notice]) -> None:
    flow = Dataflow("notices_out")
    stream: Stream[Notice] = op.input("notices", flow, TestingSource(notices))
    op.output("notify", stream, sink)
    run_main(flow)  # type: ignore[no-untyped-call]


def test_the_job_posts_to_the_configured_webhook(
    server: tuple[str, _Behaviour],
) -> None:
    url, behaviour = server
    settings = Settings(webhook={"url": url, "early_warnings": False})  # type: ignore[arg-type]
    sink = notice_sink(settings)
    assert sink is not None

    _run_notices([WARNING, OPENED], sink)

    assert [body["text"] for body in behaviour.bodies] == [
        "Incident open: web ttfb_p75_ms degraded; probable root cause orders-db",
    ]


def test_a_fan_out_sink_gives_every_notice_to_each_sink(
    server: tuple[str, _Behaviour],
) -> None:
    url, behaviour = server
    sink = FanOutSink([_sink(url), _sink(url)])

    _run_notices([OPENED], sink)

    assert len(behaviour.bodies) == 2
    assert behaviour.bodies[0] == behaviour.bodies[1]
