"""A source over any iterable of batches: simulations, files, replays in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.messages import RawBatch
from foreshock import shutdown

__all__ = ["IterableSource"]


class IterableSource(FixedPartitionedSource[RawBatch, int]):
    """Emits the batches a factory yields, in order, from one partition.

    The factory is called once per run; on resume the batches already emitted
    are skipped, so a deterministic factory resumes exactly.
    """

    def __init__(self, batches: Callable[[], Iterable[RawBatch]]) -> None:
        self._batches = batches

    def list_parts(self) -> list[str]:
        return ["iterable"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _Partition:
        return _Partition(iter(self._batches()), resume_state or 0)


class _Partition(StatefulSourcePartition[RawBatch, int]):
    def __init__(self, batches: Iterator[RawBatch], done: int) -> None:
        self._batches = islice(batches, done, None)
        self._done = done

    def next_batch(self) -> list[RawBatch]:
        # A stop asked for by a signal ends the input here (foreshock.shutdown).
        if shutdown.requested():
            raise StopIteration
        batch = next(self._batches)
        self._done += 1
        return [batch]

    def snapshot(self) -> int:
        return self._done
