"""The demo's simulated stack through the main flow: its three stories."""

from pathlib import Path

import pytest

from connectors.simulator import SimulatedStack, demo_stack
from foreshock.demo import DemoReport, simulate
from foreshock.present import describe_incident
from foreshock.records import Incident, Record

README = Path(__file__).parents[1] / "README.md"


@pytest.fixture(scope="module")
def demo() -> tuple[SimulatedStack, DemoReport, list[Record]]:
    stack = demo_stack()
    records: list[Record] = []
    report = simulate(stack, records.append)
    return stack, report, records


def test_demo_turns_injected_failures_into_incidents(
    demo: tuple[SimulatedStack, DemoReport, list[Record]],
) -> None:
    stack, report, _ = demo

    caught = {}
    for failure in stack.failures:
        opened = [
            i for i in report.opened if failure.start <= i.opened_at <= failure.end
        ]
        caught[failure.name] = opened[0].id if opened else None
    assert all(caught.values()), caught
    assert report.dead_letters == 0
    causes = {
        f.name: [c.service for c in report.incidents[caught[f.name]].root_causes[:3]]
        for f in stack.failures
    }
    by_name = {f.name: f.root_cause_service for f in stack.failures}
    # The database and container stories name their cause first.
    assert causes["full-scan-query"][0] == by_name["full-scan-query"]
    assert causes["saturated-containers"][0] == by_name["saturated-containers"]


def test_the_readme_shows_an_incident_as_the_demo_prints_it(
    demo: tuple[SimulatedStack, DemoReport, list[Record]],
) -> None:
    _, _, records = demo
    text = README.read_text()
    start = text.index("[OPEN] incident ")
    shown = text[start : text.index("\n```", start)]
    incident_id = shown.split()[2]

    [opened] = [
        r
        for r in records
        if isinstance(r, Incident) and r.id == incident_id and r.status == "open"
    ]

    assert shown == describe_incident(opened)
