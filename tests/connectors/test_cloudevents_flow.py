"""The main flow, run twice over the same input, gives the same CloudEvents."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from bytewax.testing import TestingSink, run_main

from connectors.iterables import IterableSource
from connectors.messages import OutMessage
from connectors.routing import encoder
from connectors.simulator import demo_stack
from flows.pipeline import FlowConfig, Record, build_flow
from foreshock.cli import main
from foreshock.config import OutputSettings, TopicSettings
from foreshock.demo import simulate

# From 06:00 to 08:42: the first injected failure (08:00-08:30) and its
# incident fit, with ten minutes after it.
_HOURS = 2.7

Runs = tuple[list[Record], list[Record]]


def _run_flow() -> list[Record]:
    stack = demo_stack(hours=_HOURS)
    batches = list(stack.batches())
    out: list[Record] = []
    source = IterableSource(lambda: batches)
    config = FlowConfig(topology=stack.topology)
    run_main(build_flow(source, TestingSink(out), config))  # type: ignore[no-untyped-call]
    return out


def _encode(records: list[Record], format: str) -> list[OutMessage]:
    output = OutputSettings(format=format)  # type: ignore[arg-type]
    encode = encoder(TopicSettings(), output)
    return [encode(r) for r in records]


@pytest.fixture(scope="module")
def runs() -> Runs:
    return _run_flow(), _run_flow()


@pytest.mark.parametrize("format", ["cloudevents", "cloudevents-binary"])
def test_same_input_gives_the_same_events_byte_for_byte(
    runs: Runs, format: str
) -> None:
    first, second = (_encode(records, format) for records in runs)

    topics = Counter(m.topic for m in first)
    assert topics["incidents"] >= 1
    assert topics["early-warnings"] >= 1
    assert topics["anomalies"] >= 1
    assert first == second


def test_no_two_distinct_events_of_a_run_share_an_id(runs: Runs) -> None:
    messages = _encode(runs[0], "cloudevents")

    values_by_id: dict[str, set[bytes]] = {}
    for m in messages:
        values_by_id.setdefault(json.loads(m.value)["id"], set()).add(m.value)

    shared = {i: len(v) for i, v in values_by_id.items() if len(v) > 1}
    assert shared == {}


def test_the_demo_prints_each_message_as_the_sink_would_write_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    records: list[Record] = []
    simulate(demo_stack(hours=0.5), records.append)
    expected = [
        f"{m.topic}\t{m.value.decode()}" for m in _encode(records, "cloudevents")
    ]

    main(["demo", "--format", "cloudevents", "--hours", "0.5"])
    lines = capsys.readouterr().out.splitlines()

    assert lines == expected
    assert {line.split("\t")[0] for line in lines} >= {"kpis", "anomalies"}
