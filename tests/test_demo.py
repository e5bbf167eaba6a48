"""The demo's simulated stack through the main flow: its three stories."""

from connectors.simulator import demo_stack
from foreshock.demo import simulate


def test_demo_turns_injected_failures_into_incidents() -> None:
    stack = demo_stack()

    report = simulate(stack)

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
