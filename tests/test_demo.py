"""The demo's simulated stack through the main flow: its three stories."""

from pathlib import Path

import pytest

from connectors.simulator import SimulatedStack, demo_stack
from foreshock import shutdown
from foreshock.config import DetectionSettings, Settings
from foreshock.demo import DemoReport, _summary, simulate
from foreshock.present import describe_incident
from foreshock.records import Incident, KpiScore, Record

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


def test_a_stopped_demo_says_which_failures_it_did_not_see_to_their_end(
    demo: tuple[SimulatedStack, DemoReport, list[Record]],
) -> None:
    stack, _, records = demo
    last = stack.failures[-1]
    # The records of a run stopped just after the last failure began: those
    # published before the first window scored from then.
    cut = DemoReport()
    for record in records:
        if isinstance(record, KpiScore) and record.kpi.window_start >= last.start:
            break
        cut.take(record)
    shutdown.request()
    try:
        lines = _summary(stack, cut, 1.0).splitlines()
    finally:
        shutdown.reset()

    said = [line.strip() for line in lines if line.strip().startswith("->")]
    assert len(said) == len(stack.failures)
    assert said[-1] == "-> not reached when the run was stopped"
    assert all(line.startswith("-> incident ") for line in said[:-1])


def test_the_demo_takes_its_detectors_and_threshold_from_a_configuration() -> None:
    settings = Settings(
        detection=DetectionSettings(
            detector="robust_z", by_kpi={"crash_rate": "longtail"}, threshold=0.9
        )
    )
    records: list[Record] = []

    simulate(demo_stack(hours=1), records.append, settings=settings)

    scores = [r for r in records if isinstance(r, KpiScore)]
    crashes = {r.detector for r in scores if r.kpi.kpi == "crash_rate"}
    others = {r.detector for r in scores if r.kpi.kpi != "crash_rate"}
    assert (crashes, others) == ({"longtail"}, {"robust_z"})
    # Anomalous only from 0.9 on, or past a static objective (scored 1).
    assert all(r.score >= 0.9 for r in scores if r.anomalous and r.score is not None)
