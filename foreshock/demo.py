"""`foreshock demo`: the main dataflow on a simulated stack, printed to the console.

The simulation injects three failures whose cause shows deep in the stack
before users feel it. The demo runs the very flow `foreshock run` runs, with
the simulator as its source and the console as its sink. With `--format
native` or `--format cloudevents` it prints every message exactly as the
Kafka sink would write it, `topic<TAB>value` per line, for trying consumers.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

from bytewax.testing import run_main

from connectors.console import CallbackSink
from connectors.iterables import IterableSource
from connectors.reports import ReportDirectorySink
from connectors.routing import encoder
from connectors.simulator import SimulatedStack, demo_stack
from flows.pipeline import FlowConfig, Record, build_flow
from flows.reports import ReportOutput
from foreshock import shutdown
from foreshock.config import OutputSettings, Settings, TopicSettings, load_settings
from foreshock.errors import UserError
from foreshock.jobs import flow_config
from foreshock.present import describe_gap, describe_incident, describe_warning
from foreshock.records import (
    Anomaly,
    DataGap,
    DeadLetter,
    EarlyWarning,
    Incident,
    KpiScore,
)

__all__ = ["DemoReport", "run_demo", "simulate"]


@dataclass
class DemoReport:
    """What one demo run produced, for the summary and for tests."""

    windows: int = 0
    anomalies: int = 0
    dead_letters: int = 0
    warnings: list[EarlyWarning] = field(default_factory=list)
    incidents: dict[str, Incident] = field(default_factory=dict)
    opened: list[Incident] = field(default_factory=list)
    # The end of the latest window scored: how far the simulation got.
    reached: datetime | None = None

    def take(self, record: Record) -> None:
        match record:
            case KpiScore():
                self.windows += 1
                end = record.kpi.window_end
                if self.reached is None or end > self.reached:
                    self.reached = end
            case Anomaly():
                self.anomalies += 1
            case DeadLetter():
                self.dead_letters += 1
            case EarlyWarning():
                self.warnings.append(record)
            case Incident():
                if record.status == "open":
                    self.opened.append(record)
                self.incidents[record.id] = record


def simulate(
    stack: SimulatedStack,
    on_record: Callable[[Record], None] | None = None,
    reports: Path | None = None,
    settings: Settings | None = None,
) -> DemoReport:
    """Run the main dataflow over the simulated stack; return what it produced.

    With `reports`, an HTML report of each incident is written into that
    folder each time the incident opens, changes or resolves. `settings`
    give the detectors and the correlation their configuration; the stack
    keeps its own call graph and windows.
    """
    report = DemoReport()

    def take(record: Record) -> None:
        report.take(record)
        if on_record is not None:
            on_record(record)

    config = FlowConfig(topology=stack.topology)
    if settings is not None:
        job = flow_config(settings, stack.topology)
        config = replace(
            config,
            detector=job.detector,
            detectors_by_kpi=job.detectors_by_kpi,
            threshold=job.threshold,
            correlation=job.correlation,
        )
    pages = None if reports is None else ReportOutput(ReportDirectorySink(reports))
    flow = build_flow(
        IterableSource(lambda: stack.batches()),
        CallbackSink(take),
        config,
        reports=pages,
    )
    # Ctrl-C ends the simulation where it is; the report shows that much.
    with shutdown.on_signals():
        run_main(flow)  # type: ignore[no-untyped-call]
    if shutdown.requested():
        print(
            "foreshock: stopped early; what follows covers that much", file=sys.stderr
        )
    return report


def run_demo(
    seed: int = 7,
    hours: float | None = None,
    output: Literal["human", "native", "cloudevents"] = "human",
    reports: Path | None = None,
    config: Path | None = None,
) -> int:
    settings = None if config is None else load_settings(config)
    if reports is not None:
        _make_reports_folder(reports)
    stack = demo_stack(seed) if hours is None else demo_stack(seed, hours=hours)
    if output != "human":
        printer = _message_printer(OutputSettings(format=output))
        simulate(stack, printer, reports, settings)
        return 0
    print(
        f"Simulating {stack.start:%Y-%m-%d %H:%M}Z to {stack.end:%H:%M}Z: "
        f"{len(stack.topology.services())} services, "
        f"{len(stack.failures)} failures injected.\n"
    )
    started = time.perf_counter()
    report = simulate(stack, _print_live, reports, settings)
    seconds = time.perf_counter() - started
    _emit(_summary(stack, report, seconds) + "\n")
    if reports is not None:
        for incident_id in report.incidents:
            _emit(f"  report: {reports / f'{incident_id}.html'}\n")
    return 0


def _make_reports_folder(reports: Path) -> None:
    """Create `reports` if missing, or say in one line why it cannot hold them.

    The report sink logs a page it cannot write and goes on, as alerting
    must; in the demo, a folder that cannot be used is said once, up front.
    """
    try:
        reports.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"cannot use {str(reports)!r} as the reports folder "
            f"({error.strerror or error}); give --reports a folder that can be "
            "created and written"
        ) from error
    if not os.access(reports, os.W_OK | os.X_OK):
        raise UserError(
            f"cannot write into the reports folder {str(reports)!r}; give "
            "--reports a folder that can be written"
        )


def _message_printer(output: OutputSettings) -> Callable[[Record], None]:
    encode = encoder(TopicSettings(), output)

    def print_message(record: Record) -> None:
        message = encode(record)
        _emit(f"{message.topic}\t{message.value.decode()}\n")

    return print_message


def _print_live(record: Record) -> None:
    if isinstance(record, Incident) and record.status in ("open", "resolved"):
        _emit(describe_incident(record) + "\n\n")
    elif isinstance(record, EarlyWarning):
        _emit(describe_warning(record) + "\n\n")
    elif isinstance(record, DataGap):
        _emit(describe_gap(record) + "\n\n")


def _emit(text: str) -> None:
    """Write to stdout; once its reader has gone (`| head`), write nowhere."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The rest of the run goes to /dev/null, so that neither this flow
        # nor Python's exit trips over the closed pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _summary(stack: SimulatedStack, report: DemoReport, seconds: float) -> str:
    lines = [
        "Summary",
        f"  {report.windows} KPI windows scored, {report.anomalies} anomalies, "
        f"{len({w.id for w in report.warnings})} early warnings, "
        f"{len(report.incidents)} incidents "
        f"in {seconds:.1f} s",
    ]
    for failure in stack.failures:
        lines.append(
            f"  injected {failure.start:%H:%M}Z {failure.name}: "
            f"{failure.description} (cause: {failure.root_cause_service})"
        )
        match = _incident_for(report, failure.start, failure.end)
        reached = report.reached
        if match is None and shutdown.requested():
            if reached is None or reached <= failure.start:
                lines.append("    -> not reached when the run was stopped")
                continue
            if reached <= failure.end:
                lines.append("    -> not over when the run was stopped")
                continue
        if match is None:
            lines.append("    -> no incident")
            continue
        top = match.root_causes[0].service if match.root_causes else "?"
        lead = (
            f"{match.lead_time_s / 60:.0f} min lead time"
            if match.lead_time_s is not None
            else "no lead time"
        )
        lines.append(
            f"    -> incident {match.id} opened {match.opened_at:%H:%M}Z, "
            f"root cause #1 {top}, {lead}"
        )
    return "\n".join(lines)


def _incident_for(
    report: DemoReport, start: datetime, end: datetime
) -> Incident | None:
    for opened in report.opened:
        if start <= opened.opened_at <= end:
            return report.incidents[opened.id]
    return None
