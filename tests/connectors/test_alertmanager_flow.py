"""The main dataflow paging through a real Alertmanager.

A database slows down at 10:10; users of the web front end feel it from
10:12. The flow warns about the database first, then opens an incident
for web, and Alertmanager holds the incident and inhibits the warning: once
in a flow built in the test, once through `foreshock run` between Kafka
topics with the settings of a TOML file.
"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bytewax.testing import TestingSink, run_main
from prometheus_client import REGISTRY

from connectors.alertmanager import AlertmanagerConfig, AlertmanagerSink
from connectors.iterables import IterableSource
from connectors.kafka import consume_all, produce_all
from connectors.messages import OutMessage, RawBatch, RawMessage
from flows.pipeline import FlowConfig, Record, build_flow
from foreshock.jobs import run_kafka_job
from foreshock.layers import Layer
from foreshock.records import Anomaly, EarlyWarning, Incident
from foreshock.topology import Topology
from tests.alertmanager_helpers import RunningAlertmanager, wait_for
from tests.kafka_helpers import TopicFactory

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
TOPOLOGY = Topology.from_edges(
    [("web", "orders-db")], {"web": Layer.FRONTEND, "orders-db": Layer.DATABASE}
)
COUNTERS = (
    "foreshock_anomalies_total",
    "foreshock_incidents_opened_total",
    "foreshock_early_warnings_total",
)


def _messages(minutes: int = 80, slow_from: int = 70) -> list[RawMessage]:
    out = []
    for minute in range(minutes):
        for i in range(20):
            at = T0 + timedelta(minutes=minute, seconds=3 * i)
            db_ms = (900.0 if minute >= slow_from else 100.0) + (i % 5) * 3
            web_ms = (6000.0 if minute >= slow_from + 2 else 1500.0) + (i % 5) * 10
            for service, layer, payload in (
                ("orders-db", "database", {"kind": "db_query", "duration_ms": db_ms}),
                ("web", "frontend", {"kind": "page_view", "load_ms": web_ms}),
            ):
                doc = {
                    "time": at.isoformat(),
                    "layer": layer,
                    "service": service,
                    "payload": payload,
                }
                out.append(
                    RawMessage(
                        "in", 0, len(out), service.encode(), json.dumps(doc).encode()
                    )
                )
    return out


def _batches() -> list[RawBatch]:
    messages = _messages()
    return [
        RawBatch("in:0", tuple(messages[i : i + 500]))
        for i in range(0, len(messages), 500)
    ]


def _counts() -> dict[str, float]:
    return {name: REGISTRY.get_sample_value(name) or 0.0 for name in COUNTERS}


def test_the_flow_pages_for_the_incident_and_inhibits_its_warning(
    alertmanager: RunningAlertmanager,
) -> None:
    out: list[Record] = []
    sink = AlertmanagerSink(AlertmanagerConfig(url=alertmanager.url))
    before = _counts()

    run_main(
        build_flow(
            IterableSource(_batches),
            TestingSink(out),
            FlowConfig(topology=TOPOLOGY),
            alerts=sink,
        )
    )

    incidents = [r for r in out if isinstance(r, Incident)]
    warnings = [r for r in out if isinstance(r, EarlyWarning)]
    assert incidents and warnings, "the scenario warns, then opens an incident"
    [alert] = alertmanager.alerts(alertname="ForeshockIncident")
    assert alert["labels"] == {
        "alertname": "ForeshockIncident",
        "service": "web",
        "layer": "frontend",
        "severity": "page",
        "root_cause": "orders-db",
        "incident_id": incidents[0].id,
    }

    def inhibited() -> list[dict[str, object]]:
        found = alertmanager.alerts(alertname="ForeshockEarlyWarning", service="web")
        return [a for a in found if a["status"]["inhibitedBy"]]  # type: ignore[index]

    assert len(wait_for("the warning to be inhibited", inhibited)) == len(warnings)

    after = _counts()
    assert {name: after[name] - before[name] for name in COUNTERS} == {
        "foreshock_anomalies_total": sum(isinstance(r, Anomaly) for r in out),
        "foreshock_incidents_opened_total": 1,
        "foreshock_early_warnings_total": len(warnings),
    }


@pytest.mark.kafka
def test_foreshock_run_pages_from_kafka(
    alertmanager: RunningAlertmanager,
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    tmp_path: Path,
) -> None:
    names = kafka_topics(
        "in", "kpis", "anomalies", "incidents", "warnings", "dead", "late"
    )
    topology = tmp_path / "topology.json"
    topology.write_text(
        json.dumps(
            {
                "services": {"web": "frontend", "orders-db": "database"},
                "calls": [["web", "orders-db"]],
            }
        )
    )
    config = tmp_path / "foreshock.toml"
    config.write_text(
        f"""
[kafka]
bootstrap_servers = "{kafka_bootstrap}"
input_topics = ["{names[0]}"]
group_id = "{names[0]}"

[topics]
kpis = "{names[1]}"
anomalies = "{names[2]}"
incidents = "{names[3]}"
early_warnings = "{names[4]}"
dead_letters = "{names[5]}"
late_events = "{names[6]}"

[correlation]
topology = "{topology}"

[alertmanager]
url = "{alertmanager.url}"
report_url = "https://foreshock.example/incidents/{{id}}"

[metrics]
address = "127.0.0.1"
port = 0
"""
    )
    produce_all(
        kafka_bootstrap,
        [OutMessage(names[0], m.key, m.value or b"") for m in _messages()],
    )

    assert run_kafka_job(config, until_end=True) == 0

    [incident] = {
        json.loads(m.value)["id"] for m in consume_all(kafka_bootstrap, names[3])
    }
    [alert] = alertmanager.alerts(alertname="ForeshockIncident")
    assert alert["labels"]["incident_id"] == incident
    assert alert["labels"]["root_cause"] == "orders-db"
    assert alert["annotations"]["report_url"] == (
        f"https://foreshock.example/incidents/{incident}"
    )
