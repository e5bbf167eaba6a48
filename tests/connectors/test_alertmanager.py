"""Incidents and early warnings against a real Prometheus Alertmanager.

Alertmanager runs the example configuration of deploy/alertmanager.yml
(grouping by alertname and service, incidents inhibiting the early warnings
about the same service); a local webhook stands in for the on-call tool.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from connectors.alertmanager import (
    AlertmanagerConfig,
    AlertmanagerSink,
    AlertPublisher,
)
from foreshock.config import Settings
from foreshock.layers import Layer
from foreshock.records import Candidate, DataGap, EarlyWarning, Evidence, Incident
from tests.alertmanager_helpers import (
    RunningAlertmanager,
    Webhook,
    free_port,
    start_alertmanager,
    wait_for,
)

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)

WEB_SLOW = Evidence(
    layer=Layer.FRONTEND,
    service="web",
    kpi="page_load_p75_ms",
    dimension="speed",
    direction="up",
    value=6000.0,
    expected=1500.0,
    score=0.93,
    onset=T0 + timedelta(minutes=5),
    window_start=T0 + timedelta(minutes=6),
)
DB_SLOW = Evidence(
    layer=Layer.DATABASE,
    service="orders-db",
    kpi="query_time_p95_ms",
    dimension="speed",
    direction="up",
    value=900.0,
    expected=100.0,
    score=0.97,
    onset=T0 + timedelta(minutes=2),
    window_start=T0 + timedelta(minutes=6),
)
WARNING = EarlyWarning(
    id="ew-1",
    service="orders-db",
    layer=Layer.DATABASE,
    onset=T0 + timedelta(minutes=2),
    published_at=T0 + timedelta(minutes=3),
    at_risk=["app", "web"],
    evidence=[DB_SLOW],
)
INCIDENT = Incident(
    id="inc-1",
    status="open",
    title="web page_load_p75_ms degraded; probable root cause orders-db",
    opened_at=T0 + timedelta(minutes=6),
    updated_at=T0 + timedelta(minutes=6),
    resolved_at=None,
    user_facing=[WEB_SLOW],
    root_causes=[
        Candidate(
            service="orders-db",
            layer=Layer.DATABASE,
            rank=1,
            score=1.2,
            onset=T0 + timedelta(minutes=2),
            distance=1,
            reasons=["anomalous 3 min before users were affected"],
            evidence=[DB_SLOW],
        )
    ],
    chain=[DB_SLOW, WEB_SLOW],
    lead_time_s=180.0,
    early_warnings=["ew-1"],
)
INCIDENT_LABELS = {
    "alertname": "ForeshockIncident",
    "service": "web",
    "layer": "frontend",
    "severity": "page",
    "root_cause": "orders-db",
    "incident_id": "inc-1",
}
INCIDENT_DESCRIPTION = (
    "Impact: frontend/web page_load_p75_ms 6000 (baseline 1500), up since 09:05\n"
    "Lead time: 3 min from the first anomaly of the probable cause to users' "
    "first symptom\n"
    "Chain: database/orders-db query_time_p95_ms since 09:02"
    " -> frontend/web page_load_p75_ms since 09:05\n"
    "Probable root causes:\n"
    "1. orders-db (score 1.20): anomalous 3 min before users were affected\n"
    "   - database/orders-db query_time_p95_ms 900 (baseline 100), up since 09:02\n"
    "Early warnings: ew-1"
)


def _config(url: str, **overrides: object) -> AlertmanagerConfig:
    settings: dict[str, object] = {
        "url": url,
        "runbook_url": "https://runbooks.example/foreshock/{alertname}",
        "report_url": "https://foreshock.example/{kind}s/{id}",
        "retry_wait_s": 0.01,
        **overrides,
    }
    return AlertmanagerConfig(**settings)  # type: ignore[arg-type]


def _now() -> datetime:
    # Alertmanager keeps milliseconds; whole seconds compare exactly.
    return datetime.now(UTC).replace(microsecond=0)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _posts(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "foreshock_alertmanager_posts_total", {"outcome": outcome}
    )
    return value or 0.0


def test_an_incident_arrives_with_its_labels_and_annotations(
    alertmanager: RunningAlertmanager, webhook: Webhook
) -> None:
    publisher = AlertPublisher(_config(alertmanager.url))
    now = _now()

    publisher.publish(INCIDENT, now)

    [alert] = alertmanager.alerts(incident_id="inc-1")
    assert alert["labels"] == INCIDENT_LABELS
    assert alert["annotations"] == {
        "summary": "web page_load_p75_ms degraded; probable root cause orders-db",
        "description": INCIDENT_DESCRIPTION,
        "runbook_url": "https://runbooks.example/foreshock/ForeshockIncident",
        "report_url": "https://foreshock.example/incidents/inc-1",
    }
    assert alert["generatorURL"] == "https://foreshock.example/incidents/inc-1"
    assert _time(alert["startsAt"]) == T0 + timedelta(minutes=5)
    assert _time(alert["endsAt"]) == now + timedelta(seconds=300)
    assert alert["status"] == {"state": "active", "inhibitedBy": [], "silencedBy": []}
    assert publisher.sent == 1 and publisher.failed == 0

    [notice] = wait_for("the page", lambda: webhook.notifications("firing"))
    assert notice["receiver"] == "on-call"
    assert notice["groupLabels"] == {"alertname": "ForeshockIncident", "service": "web"}
    assert [a["labels"] for a in notice["alerts"]] == [INCIDENT_LABELS]
    assert [path for path, _ in webhook.received] == ["/alerts/page"]


def test_an_early_warning_carries_no_report_link(
    alertmanager: RunningAlertmanager,
) -> None:
    # Reports are written for incidents only: a warning's link would be dead.
    publisher = AlertPublisher(_config(alertmanager.url))

    publisher.publish(WARNING, _now())

    alerts = alertmanager.alerts(alertname="ForeshockEarlyWarning")
    assert sorted(a["labels"]["service"] for a in alerts) == ["app", "web"]
    for alert in alerts:
        assert sorted(alert["annotations"]) == [
            "description",
            "runbook_url",
            "summary",
        ]
        assert alert["annotations"]["runbook_url"] == (
            "https://runbooks.example/foreshock/ForeshockEarlyWarning"
        )
        assert "generatorURL" not in alert


def test_an_incident_inhibits_the_early_warning_for_its_service(
    alertmanager: RunningAlertmanager,
) -> None:
    publisher = AlertPublisher(_config(alertmanager.url))
    now = _now()

    publisher.publish(WARNING, now)
    before = {
        a["labels"]["service"]: a
        for a in alertmanager.alerts(alertname="ForeshockEarlyWarning")
    }
    publisher.publish(INCIDENT, now)

    [incident] = alertmanager.alerts(incident_id="inc-1")

    def inhibited_web_warnings() -> list[dict[str, object]]:
        found = alertmanager.alerts(alertname="ForeshockEarlyWarning", service="web")
        return [a for a in found if a["status"]["inhibitedBy"]]

    [web] = wait_for("the warning about web to be inhibited", inhibited_web_warnings)
    [app] = alertmanager.alerts(alertname="ForeshockEarlyWarning", service="app")
    assert sorted(before) == ["app", "web"]
    assert before["web"]["labels"] == {
        "alertname": "ForeshockEarlyWarning",
        "service": "web",
        "layer": "database",
        "severity": "warning",
        "root_cause": "orders-db",
        "warning_id": "ew-1",
    }
    assert before["web"]["annotations"]["summary"] == (
        "web at risk: database/orders-db is anomalous, users are not affected yet"
    )
    assert before["web"]["status"]["state"] == "active"
    assert web["status"]["state"] == "suppressed"
    assert web["status"]["inhibitedBy"] == [incident["fingerprint"]]
    assert app["status"] == {"state": "active", "inhibitedBy": [], "silencedBy": []}

    groups = {
        (g["labels"]["alertname"], g["labels"]["service"]): g
        for g in alertmanager.groups()
    }
    assert sorted(groups) == [
        ("ForeshockEarlyWarning", "app"),
        ("ForeshockEarlyWarning", "web"),
        ("ForeshockIncident", "web"),
    ]
    assert groups["ForeshockIncident", "web"]["receiver"]["name"] == "on-call"
    assert groups["ForeshockEarlyWarning", "web"]["receiver"]["name"] == "on-call-low"
    [suppressed] = groups["ForeshockEarlyWarning", "web"]["alerts"]
    assert suppressed["status"]["inhibitedBy"] == [incident["fingerprint"]]


def test_a_resolve_ends_the_alert_at_the_incident_resolve_time(
    alertmanager: RunningAlertmanager, webhook: Webhook
) -> None:
    publisher = AlertPublisher(_config(alertmanager.url))
    resolved_at = T0 + timedelta(minutes=20)
    resolved = INCIDENT.model_copy(
        update={"status": "resolved", "resolved_at": resolved_at}
    )
    publisher.publish(INCIDENT, _now())
    wait_for("the page", lambda: webhook.notifications("firing"))

    publisher.publish(resolved, _now())

    assert alertmanager.alerts(incident_id="inc-1") == []
    assert publisher.open_alerts() == []
    [notice] = wait_for("the resolve", lambda: webhook.notifications("resolved"))
    [alert] = notice["alerts"]
    assert alert["status"] == "resolved"
    assert alert["labels"] == INCIDENT_LABELS
    assert _time(alert["startsAt"]) == T0 + timedelta(minutes=5)
    assert _time(alert["endsAt"]) == resolved_at


def test_a_new_top_root_cause_replaces_the_alert_under_the_old_labels(
    alertmanager: RunningAlertmanager,
) -> None:
    publisher = AlertPublisher(_config(alertmanager.url))
    cache = INCIDENT.root_causes[0].model_copy(update={"service": "cache"})
    updated = INCIDENT.model_copy(
        update={"status": "updated", "root_causes": [cache, *INCIDENT.root_causes]}
    )
    publisher.publish(INCIDENT, _now())

    publisher.publish(updated, _now())

    [alert] = alertmanager.alerts(incident_id="inc-1")
    assert alert["labels"] == {**INCIDENT_LABELS, "root_cause": "cache"}
    assert [a.labels["root_cause"] for a in publisher.open_alerts()] == ["cache"]


def test_open_alerts_are_re_sent_before_they_would_expire(
    alertmanager: RunningAlertmanager,
) -> None:
    publisher = AlertPublisher(_config(alertmanager.url))
    now = _now()
    publisher.publish(INCIDENT, now)

    publisher.tick(now + timedelta(seconds=30))
    after_half = alertmanager.alerts(incident_id="inc-1")[0]["endsAt"]
    publisher.tick(now + timedelta(seconds=60))
    after_one = alertmanager.alerts(incident_id="inc-1")[0]["endsAt"]

    assert _time(after_half) == now + timedelta(seconds=300)
    assert _time(after_one) == now + timedelta(seconds=360)
    assert publisher.sent == 2


def test_an_early_warning_ends_after_its_hold(
    alertmanager: RunningAlertmanager,
) -> None:
    # Long enough to outlast `_now`'s truncation (up to a second) and a slow
    # machine before the alerts are read; short enough to end within the wait.
    publisher = AlertPublisher(_config(alertmanager.url, warning_hold_s=5.0))
    now = _now()

    publisher.publish(WARNING, now)

    alerts = alertmanager.alerts(warning_id="ew-1")
    assert [_time(a["endsAt"]) for a in alerts] == [now + timedelta(seconds=5)] * 2
    publisher.tick(now + timedelta(seconds=5))
    assert publisher.open_alerts() == []
    wait_for(
        "the warnings to end",
        lambda: alertmanager.alerts(warning_id="ew-1") == [],
    )


def test_an_ended_early_warning_ends_its_alerts_at_once(
    alertmanager: RunningAlertmanager,
) -> None:
    publisher = AlertPublisher(_config(alertmanager.url, warning_hold_s=1800.0))
    now = _now()
    publisher.publish(WARNING, now)
    ended = WARNING.model_copy(
        update={"status": "ended", "published_at": now + timedelta(minutes=30)}
    )

    publisher.publish(ended, now)

    assert publisher.open_alerts() == []
    wait_for(
        "the warnings to end",
        lambda: alertmanager.alerts(warning_id="ew-1") == [],
    )


def test_an_unreachable_alertmanager_is_counted_then_caught_up(
    tmp_path: Path, webhook: Webhook
) -> None:
    port = free_port()
    publisher = AlertPublisher(_config(f"http://127.0.0.1:{port}", attempts=2))
    failed_before = _posts("failed")
    now = _now()

    publisher.publish(INCIDENT, now)

    assert (publisher.sent, publisher.failed) == (0, 1)
    assert _posts("failed") - failed_before == 1
    am = start_alertmanager(tmp_path / "late", webhook.url, port)
    try:
        publisher.tick(now + timedelta(seconds=1))
        [alert] = am.alerts(incident_id="inc-1")
    finally:
        am.stop()
    assert (publisher.sent, publisher.failed) == (1, 1)
    assert alert["labels"] == INCIDENT_LABELS


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": "localhost:9093"}, "must start with http"),
        ({"hold_s": 60.0}, "must exceed resend_interval_s"),
        ({"report_url": "https://x/{incident}"}, "is not valid"),
    ],
)
def test_a_bad_configuration_is_refused_with_its_reason(
    overrides: dict[str, object], message: str
) -> None:
    settings = {"url": "http://127.0.0.1:9093", **overrides}

    with pytest.raises(ValueError, match=message):
        AlertmanagerConfig(**settings)  # type: ignore[arg-type]


def test_the_sink_keeps_open_alerts_alive_from_its_own_thread(
    alertmanager: RunningAlertmanager,
) -> None:
    config = _config(alertmanager.url, resend_interval_s=0.4, hold_s=1.0)
    partition = AlertmanagerSink(config).build("alert", 0, 1)

    partition.write_batch([INCIDENT])
    try:
        [first] = wait_for(
            "the alert", lambda: alertmanager.alerts(incident_id="inc-1")
        )
        later = wait_for(
            "a re-send to move endsAt on",
            lambda: [
                a
                for a in alertmanager.alerts(incident_id="inc-1")
                if _time(a["endsAt"]) >= _time(first["endsAt"]) + timedelta(seconds=0.4)
            ],
        )
    finally:
        partition.close()

    assert later[0]["labels"] == INCIDENT_LABELS
    assert later[0]["status"]["state"] == "active"


def test_a_bad_alertmanager_setting_is_refused_when_settings_load() -> None:
    with pytest.raises(ValidationError, match="must exceed resend_interval_s"):
        Settings(alertmanager={"url": "http://127.0.0.1:9093", "hold_s": 30})


def test_a_data_gap_goes_to_the_pipeline_owners_and_ends_when_data_returns(
    alertmanager: RunningAlertmanager, webhook: Webhook
) -> None:
    publisher = AlertPublisher(_config(alertmanager.url))
    gap = DataGap(
        id="gap-1",
        status="open",
        service="catalog-api",
        layer=Layer.API,
        since=T0 + timedelta(minutes=8),
        until=None,
        published_at=T0 + timedelta(minutes=10),
        users=["catalog-journey", "web-storefront"],
    )
    publisher.publish(gap, _now())

    [alert] = alertmanager.alerts(gap_id="gap-1")
    assert alert["labels"] == {
        "alertname": "ForeshockDataGap",
        "service": "catalog-api",
        "layer": "api",
        "severity": "info",
        "gap_id": "gap-1",
    }
    assert alert["receivers"] == [{"name": "telemetry-pipeline"}]
    assert alert["annotations"]["summary"] == (
        "no telemetry from api/catalog-api since 09:08Z while its users "
        "(catalog-journey, web-storefront) are fine"
    )
    assert "report_url" not in alert["annotations"]

    closed = gap.model_copy(
        update={"status": "closed", "until": T0 + timedelta(minutes=19)}
    )
    publisher.publish(closed, _now())

    assert alertmanager.alerts(gap_id="gap-1") == []
    [notice] = wait_for("the close", lambda: webhook.notifications("resolved"))
    assert notice["receiver"] == "telemetry-pipeline"
    assert _time(notice["alerts"][0]["endsAt"]) == T0 + timedelta(minutes=19)
