"""The report branch of the main dataflow: a page per incident change.

    scored ─┐
            ├ key_report ("all")  ─ report  Reporter: history, pages
 correlated ┘                            └ ReportPage per incident change

Reports need every series, so every scored window and every correlated
record goes to one key, as for correlation. The state is the reporter with
its bounded history; it is snapshotted as pickled bytes like the other steps.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.operators import StatefulLogic
from bytewax.outputs import Sink

from foreshock.correlation import Output
from foreshock.records import KpiScore
from foreshock.report import DEFAULT_KEEP_S, Reporter, ReportPage, SeriesHistory

__all__ = ["ReportLogic", "ReportOutput", "report_pages"]


@dataclass(frozen=True)
class ReportOutput:
    """Where the flow's reports go, and how much history they show."""

    sink: Sink[ReportPage]
    keep_s: float = DEFAULT_KEEP_S
    base_url: str | None = None


class ReportLogic(StatefulLogic[KpiScore | Output, ReportPage, bytes]):
    """Keeps the reporter; answers each incident record with its page."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def on_item(self, value: KpiScore | Output) -> tuple[Iterable[ReportPage], bool]:
        return self.reporter.take(value), StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.reporter, protocol=pickle.HIGHEST_PROTOCOL)


def report_pages(scored: Any, correlated: Any, output: ReportOutput) -> Any:
    """The stream of report pages from the scored and correlated streams."""
    both = op.merge("report_inputs", scored, correlated)
    # ("all", KpiScore | Output)
    keyed = op.key_on("key_report", both, lambda _: "all")
    pages = op.stateful("report", keyed, _builder(output))
    # ReportPage
    return op.key_rm("unkey_report", pages)


def _builder(output: ReportOutput) -> Callable[[bytes | None], ReportLogic]:
    def build(resume: bytes | None) -> ReportLogic:
        if resume is not None:
            return ReportLogic(pickle.loads(resume))
        history = SeriesHistory(keep_s=output.keep_s)
        return ReportLogic(Reporter(history, output.base_url))

    return build
