"""A sink that writes incident reports into a folder, one file per incident.

Each page replaces the incident's previous one whole (written aside, then
renamed), so a web server in front of the folder always serves a complete
page, the latest one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from foreshock.report import ReportPage, write_page

__all__ = ["ReportDirectorySink"]

log = logging.getLogger(__name__)


class ReportDirectorySink(DynamicSink[ReportPage]):
    """Writes each `ReportPage` to `<directory>/<incident id>.html`."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self._directory)


class _Partition(StatelessSinkPartition[ReportPage]):
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self.written: list[Path] = []

    def write_batch(self, items: list[ReportPage]) -> None:
        for page in items:
            try:
                self.written.append(write_page(self._directory, page))
            except OSError:
                # A full disk must not stop alerting: the incident is on its
                # topic and in the on-call tools; only its page is missing.
                log.error(
                    "report not written incident=%s directory=%s",
                    page.incident_id,
                    self._directory,
                    exc_info=True,
                )
