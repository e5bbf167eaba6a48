"""The main job between real Kafka topics: events in, results out."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bytewax.testing import run_main

from connectors.kafka import consume_all, produce_all
from connectors.messages import OutMessage
from foreshock.config import Settings
from foreshock.jobs import kafka_flow
from tests.kafka_helpers import OUTPUTS, TopicFactory

pytestmark = pytest.mark.kafka

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)


def _events(minutes: int, slow_from: int) -> list[OutMessage]:
    out = []
    for minute in range(minutes):
        for i in range(20):
            ms = (900.0 if minute >= slow_from else 100.0) + (i % 5) * 3 + minute % 3
            for service, layer in (("orders-db", "database"), ("web", "frontend")):
                if layer == "frontend" and minute < slow_from + 2:
                    ms_here = 1500.0 + (i % 5) * 10 + minute % 3
                elif layer == "frontend":
                    ms_here = 6000.0 + (i % 5) * 10
                else:
                    ms_here = ms
                payload = (
                    {"kind": "db_query", "duration_ms": ms_here}
                    if layer == "database"
                    else {"kind": "page_view", "load_ms": ms_here}
                )
                doc = {
                    "time": (T0 + timedelta(minutes=minute, seconds=3 * i)).isoformat(),
                    "layer": layer,
                    "service": service,
                    "payload": payload,
                }
                out.append(OutMessage("", service.encode(), json.dumps(doc).encode()))
    return out


def _batched(messages: list[OutMessage]) -> list[OutMessage]:
    """Each service's events of a minute in one message, as a JSON array."""
    batches: dict[tuple[bytes | None, str], list[bytes]] = {}
    for m in messages:
        minute = json.loads(m.value)["time"][:16]
        batches.setdefault((m.key, minute), []).append(m.value)
    return [
        OutMessage("", key, b"[" + b",".join(values) + b"]")
        for (key, _), values in batches.items()
    ]


def _read(bootstrap: str, topic: str) -> list[dict]:
    return [json.loads(m.value) for m in consume_all(bootstrap, topic)]


@dataclass(frozen=True)
class _Job:
    settings: Settings
    source: str
    changes: str
    out: dict[str, str]


def _job(bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path) -> _Job:
    """The job's settings between new topics: events and changes in, every
    output out; the web page calls the database."""
    source, changes, *outputs = kafka_topics("in", "changes", *OUTPUTS, partitions=1)
    topology = tmp_path / "topology.json"
    topology.write_text(
        json.dumps(
            {
                "services": {"web": "frontend", "orders-db": "database"},
                "calls": [["web", "orders-db"]],
            }
        )
    )
    out = dict(zip(OUTPUTS, outputs, strict=True))
    settings = Settings(
        kafka={
            "bootstrap_servers": bootstrap,
            "input_topics": [source, changes],
            "group_id": source,
            "formats": {changes: "change"},
        },
        topics=out,
        correlation={"topology": topology},
    )
    return _Job(settings, source, changes, out)


@pytest.mark.parametrize("shape", ["one event a message", "batches"])
def test_events_in_kpis_anomalies_incidents_and_dead_letters_out(
    kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path, shape: str
) -> None:
    job = _job(kafka_bootstrap, kafka_topics, tmp_path)
    events = _events(minutes=80, slow_from=70)
    if shape == "batches":
        events = _batched(events)
    good = [OutMessage(job.source, m.key, m.value) for m in events]
    poison = [
        OutMessage(job.source, b"x", b"{not json"),
        OutMessage(job.source, b"x", b""),
    ]

    produce_all(kafka_bootstrap, good[:100] + poison + good[100:])
    run_main(kafka_flow(job.settings, until_end=True))  # type: ignore[arg-type]

    kpis = _read(kafka_bootstrap, job.out["kpis"])
    anomalies = consume_all(kafka_bootstrap, job.out["anomalies"])
    incidents = _read(kafka_bootstrap, job.out["incidents"])
    dead = _read(kafka_bootstrap, job.out["dead_letters"])

    assert {(k["kpi"]["service"], k["kpi"]["kpi"]) for k in kpis} >= {
        ("orders-db", "query_time_p95_ms"),
        ("web", "page_load_p75_ms"),
    }
    minutes = {k["kpi"]["window_start"] for k in kpis if k["kpi"]["service"] == "web"}
    assert len(minutes) == 80
    assert anomalies and all(m.key in (b"orders-db", b"web") for m in anomalies)
    first_db = min(
        json.loads(m.value)["window_start"] for m in anomalies if m.key == b"orders-db"
    )
    assert first_db == "2025-03-04T10:10:00Z"
    assert incidents, "the slow database reached users: one incident"
    assert {i["id"] for i in incidents} == {incidents[0]["id"]}
    assert incidents[-1]["root_causes"][0]["service"] == "orders-db"
    assert incidents[-1]["lead_time_s"] == 120.0
    assert sorted(d["reason"] for d in dead) == ["empty_payload", "json_decode_error"]
    assert all(d["topic"] == job.source and d["offset"] in (100, 101) for d in dead)


def test_deploys_on_their_own_topic_are_cited_by_the_incident(
    kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    job = _job(kafka_bootstrap, kafka_topics, tmp_path)
    deploy = {
        "time": (T0 + timedelta(minutes=69, seconds=30)).isoformat(),
        "layer": "database",
        "service": "orders-db",
        "change_type": "configuration",
        "version": "pool-4",
    }
    telemetry = [OutMessage(job.source, m.key, m.value) for m in _events(80, 70)]
    produce_all(
        kafka_bootstrap,
        [
            OutMessage(job.changes, b"orders-db", json.dumps(deploy).encode()),
            OutMessage(job.changes, b"orders-db", b'{"service": "orders-db"}'),
            *telemetry,
        ],
    )
    run_main(kafka_flow(job.settings, until_end=True))  # type: ignore[arg-type]

    incidents = _read(kafka_bootstrap, job.out["incidents"])
    dead = _read(kafka_bootstrap, job.out["dead_letters"])

    assert incidents
    assert [c["version"] for c in incidents[-1]["changes"]] == ["pool-4"]
    top = incidents[-1]["root_causes"][0]
    assert top["service"] == "orders-db"
    assert top["reasons"][0].startswith("configuration pool-4 of orders-db at 10:09:30")
    assert [(d["topic"], d["reason"]) for d in dead] == [(job.changes, "schema")]
