"""On-call commands against the real broker: listing incidents, feedback."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from connectors.kafka import consume_all, produce_all
from connectors.messages import OutMessage
from connectors.routing import to_message
from foreshock.cli import main
from foreshock.config import Settings, TopicSettings
from foreshock.feedback import (
    Feedback,
    Scope,
    SuppressionBook,
    decode_feedback,
    feedback_of_batch,
)
from foreshock.jobs import feedback_source
from foreshock.layers import Layer
from foreshock.records import Incident
from tests.report.samples import INCIDENT, T0

pytestmark = pytest.mark.kafka

BASE_URL = "https://reports.example/foreshock"


def _config(tmp_path: Path, bootstrap: str, **topics: str) -> Path:
    lines = [
        "[kafka]",
        f'bootstrap_servers = "{bootstrap}"',
        "[topics]",
        *(f'{name} = "{topic}"' for name, topic in topics.items()),
        "[reports]",
        f'base_url = "{BASE_URL}"',
        "[feedback]",
        "enabled = true",
    ]
    path = tmp_path / "foreshock.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _versions() -> list[Incident]:
    """Incident A opens, changes, resolves; B opens and changes; C is old."""
    a = INCIDENT
    a_updated = a.model_copy(update={"status": "updated", "updated_at": T0 + _m(50)})
    a_resolved = a_updated.model_copy(
        update={
            "status": "resolved",
            "updated_at": T0 + _m(80),
            "resolved_at": T0 + _m(80),
        }
    )
    b = a.model_copy(
        update={
            "id": "inc-app-1105",
            "title": "app crash_rate degraded",
            "opened_at": T0 + _m(125),
            "updated_at": T0 + _m(125),
            "root_causes": [],
            "lead_time_s": None,
        }
    )
    b_updated = b.model_copy(update={"status": "updated", "updated_at": T0 + _m(130)})
    c = a_resolved.model_copy(
        update={
            "id": "inc-old",
            "opened_at": T0 - timedelta(days=2),
            "resolved_at": T0 - timedelta(days=2) + _m(20),
        }
    )
    return [c, a, b, a_updated, b_updated, a_resolved]


def _m(minutes: int) -> timedelta:
    return timedelta(minutes=minutes)


def _publish(bootstrap: str, topic: str, incidents: list[Incident]) -> None:
    topics = TopicSettings(incidents=topic)
    produce_all(bootstrap, [to_message(i, topics) for i in incidents])


def test_incidents_lists_open_then_recently_resolved(
    kafka_bootstrap: str, kafka_topics, tmp_path: Path, capsys
) -> None:
    [incidents] = kafka_topics("incidents")
    _publish(kafka_bootstrap, incidents, _versions())
    produce_all(kafka_bootstrap, [OutMessage(incidents, b"x", b'{"id": 1}')])
    config = _config(tmp_path, kafka_bootstrap, incidents=incidents)

    code = main(["incidents", "--config", str(config), "--since", "2025-03-04T00:00"])

    out, err = capsys.readouterr()
    assert code == 0
    assert out == (
        "1 open, 1 resolved since 2025-03-04 00:00Z "
        "(1 resolved before; widen --since to see them)\n"
        "\n"
        "OPEN      inc-app-1105  app crash_rate degraded\n"
        "          opened 2025-03-04 11:05Z, last updated 11:10Z\n"
        f"          report {BASE_URL}/inc-app-1105.html\n"
        "\n"
        "RESOLVED  inc-web-0940  web page_load_p95_ms degraded; probable root "
        "cause orders-db\n"
        "          opened 2025-03-04 09:41Z, resolved 10:20Z after 39 min\n"
        "          root cause #1 orders-db (database, score 1.31); lead time 10 min\n"
        f"          report {BASE_URL}/inc-web-0940.html\n"
    )
    assert f"skipped {incidents}:0@6: not a Incident" in err


def test_incidents_open_only(
    kafka_bootstrap: str, kafka_topics, tmp_path: Path, capsys
) -> None:
    [incidents] = kafka_topics("incidents")
    _publish(kafka_bootstrap, incidents, _versions())
    config = _config(tmp_path, kafka_bootstrap, incidents=incidents)

    code = main(["incidents", "--config", str(config), "--open"])

    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[:3] == [
        "1 open",
        "",
        "OPEN      inc-app-1105  app crash_rate degraded",
    ]


def test_feedback_and_silence_round_trip_through_the_feedback_topic(
    kafka_bootstrap: str, kafka_topics, tmp_path: Path, capsys
) -> None:
    incidents, feedback = kafka_topics("incidents", "feedback")
    _publish(kafka_bootstrap, incidents, [INCIDENT])
    config = _config(tmp_path, kafka_bootstrap, incidents=incidents, feedback=feedback)

    said = main(
        [
            "feedback",
            "--incident",
            INCIDENT.id,
            "--verdict",
            "not_anomaly",
            "--for",
            "24h",
            "--author",
            "alice",
            "--comment",
            "load test",
            "--config",
            str(config),
        ]
    )
    silenced = main(
        [
            "silence",
            "--service",
            "orders-db",
            "--layer",
            "database",
            "--from",
            "2025-03-04T09:00Z",
            "--until",
            "2025-03-04T12:00Z",
            "--reason",
            "index rebuild",
            "--author",
            "bob",
            "--config",
            str(config),
        ]
    )

    assert (said, silenced) == (0, 0)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(
        f"published not_anomaly on incident {INCIDENT.id} to {feedback}: "
        "frontend/web/page_load_p95_ms until "
    )
    assert out[1] == (
        f"published silence to {feedback}: database/orders-db/* until 2025-03-04 12:00Z"
    )
    messages = consume_all(kafka_bootstrap, feedback)
    assert [m.key for m in messages] == [INCIDENT.id.encode(), b"orders-db"]
    verdict, silence = [decode_feedback(m.value or b"") for m in messages]
    assert isinstance(verdict, Feedback) and isinstance(silence, Feedback)
    # The scope comes from the incident's user-facing series.
    assert verdict.scopes == [
        Scope(service="web", layer=Layer.FRONTEND, kpi="page_load_p95_ms")
    ]
    assert (verdict.target_kind, verdict.author, verdict.comment) == (
        "incident",
        "alice",
        "load test",
    )
    assert verdict.expires_at is not None
    assert verdict.expires_at - verdict.created_at == timedelta(hours=24)

    # What the flow reads back, through the job's own feedback source.
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        topics={"feedback": feedback},
        feedback={"enabled": True},
    )
    source = feedback_source(settings, until_end=True)
    assert source is not None
    read: list[object] = []
    flow = Dataflow("feedback_round_trip")
    op.output(
        "out",
        op.flat_map("decode", op.input("in", flow, source), feedback_of_batch),
        TestingSink(read),
    )
    run_main(flow)
    assert read == [verdict, silence]

    book = SuppressionBook()
    for item in read:
        assert isinstance(item, Feedback)
        book.add(item)
    assert book.suppressed(
        Layer.DATABASE, "orders-db", "query_p95_ms", T0 + _m(30)
    ) == ("silenced by bob until 2025-03-04 12:00Z: index rebuild")
    assert book.suppressed(
        Layer.FRONTEND, "web", "page_load_p95_ms", verdict.created_at
    ) == (f"not_anomaly by alice until {verdict.expires_at:%Y-%m-%d %H:%M}Z: load test")


def test_feedback_on_an_unknown_incident_says_how_to_scope_it(
    kafka_bootstrap: str, kafka_topics, tmp_path: Path, capsys
) -> None:
    incidents, feedback = kafka_topics("incidents", "feedback")
    config = _config(tmp_path, kafka_bootstrap, incidents=incidents, feedback=feedback)

    code = main(
        [
            "feedback",
            "--incident",
            "nope",
            "--verdict",
            "expected",
            "--config",
            str(config),
        ]
    )

    assert code == 2
    assert capsys.readouterr().err == (
        f"foreshock: no incident 'nope' on topic {incidents!r}; check the id, "
        "or give --service (and --layer, --kpi) to scope the verdict yourself\n"
    )
    assert consume_all(kafka_bootstrap, feedback) == []


def test_run_writes_a_report_per_incident_and_reads_feedback(
    kafka_bootstrap: str, kafka_topics, tmp_path: Path
) -> None:
    from foreshock.jobs import kafka_flow
    from tests.test_end_to_end_kafka import _events

    names = kafka_topics("in", "out", "incidents", "feedback")
    topology = tmp_path / "topology.json"
    topology.write_text(
        '{"services": {"web": "frontend", "orders-db": "database"},'
        ' "calls": [["web", "orders-db"]]}'
    )
    others = ("kpis", "anomalies", "early_warnings", "dead_letters", "late_events")
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "input_topics": [names[0]]},
        topics={
            **dict.fromkeys(others, names[1]),
            "incidents": names[2],
            "feedback": names[3],
        },
        correlation={"topology": topology},
        reports={"dir": tmp_path / "reports", "base_url": BASE_URL},
        feedback={"enabled": True},
        metrics={"enabled": False},
    )
    produce_all(
        kafka_bootstrap,
        [OutMessage(names[0], m.key, m.value) for m in _events(80, slow_from=70)],
    )

    run_main(kafka_flow(settings, until_end=True))  # type: ignore[arg-type]

    incidents = [
        json.loads(m.value)["id"]
        for m in consume_all(kafka_bootstrap, names[2])
        if m.value
    ]
    pages = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert incidents and pages == sorted({f"{i}.html" for i in incidents})
    html = (tmp_path / "reports" / pages[0]).read_text()
    assert f"{BASE_URL}/{pages[0]}" in html
    assert "#1 orders-db" in html and "<svg" in html


def test_a_silence_of_a_service_the_call_graph_lacks_says_so(
    kafka_bootstrap: str, kafka_topics, tmp_path: Path, capsys
) -> None:
    (feedback,) = kafka_topics("feedback")
    config = _config(tmp_path, kafka_bootstrap, feedback=feedback)
    graph = tmp_path / "graph.json"
    graph.write_text(
        '{"services": {"web": "frontend", "orders-db": "database"}, '
        '"calls": [["web", "orders-db"]]}'
    )
    config.write_text(config.read_text() + f'[correlation]\ntopology = "{graph}"\n')

    code = main(
        [
            *("silence", "--service", "orders-bd", "--until", "2h"),
            *("--reason", "index rebuild", "--config", str(config)),
        ]
    )

    # Published all the same: the graph may lag behind what runs.
    assert code == 0
    assert len(consume_all(kafka_bootstrap, feedback)) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"note: 'orders-bd' is not a service of the call graph in "
        f"correlation.topology ({graph}); did you mean 'orders-db'?"
    ]
