"""One bytewax sink that hands every item to several sinks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Generic, TypeVar

from bytewax.outputs import DynamicSink, StatelessSinkPartition

__all__ = ["FanOutSink"]

log = logging.getLogger(__name__)

X = TypeVar("X")


class FanOutSink(DynamicSink[X], Generic[X]):
    """Writes each batch to every sink given, in the order given.

    The flow has one output step for incidents and early warnings; this lets
    it feed Alertmanager and a chat webhook at once. Each sink keeps its own
    partitions and error handling; a sink that raises stops the batch there.
    """

    def __init__(self, sinks: Sequence[DynamicSink[X]]) -> None:
        if not sinks:
            raise ValueError("FanOutSink needs at least one sink")
        self._sinks = list(sinks)

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[X]:
        """One partition of each sink, for this worker."""
        parts = [s.build(step_id, worker_index, worker_count) for s in self._sinks]
        return _FanOutPartition(parts)


class _FanOutPartition(StatelessSinkPartition[X], Generic[X]):
    def __init__(self, parts: list[StatelessSinkPartition[X]]) -> None:
        self._parts = parts

    def write_batch(self, items: list[X]) -> None:
        for part in self._parts:
            part.write_batch(items)

    def close(self) -> None:
        # Every sink gets to close, even after one failed to.
        failed: Exception | None = None
        for part in self._parts:
            try:
                part.close()
            except Exception as error:
                log.error("sink failed to close sink=%s", type(part).__name__)
                failed = failed or error
        if failed is not None:
            raise failed
