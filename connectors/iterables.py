"""A source over any iterable of batches: simulations, files, replays in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import groupby, islice

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.messages import RawBatch, RawMessage
from foreshock import shutdown
from foreshock.schema import Event

__all__ = ["IterableSource", "event_batches"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


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
        shutdown.started()
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


def event_batches(
    shard: str,
    events: Iterable[Event],
    size: int,
    split_every: timedelta | None = None,
) -> Iterator[RawBatch]:
    """`events` as native JSON records of `shard` ("topic:partition"), `size`
    to a batch, as a Kafka source would read them after a replay: keyed by
    service, timestamped with their event time, numbered from offset 0.

    With `split_every`, a batch also ends where event time crosses a
    multiple of it since the epoch, so that no batch spans two windows.
    """
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size!r}")
    topic, _, partition = shard.rpartition(":")
    messages = (
        RawMessage(
            topic=topic,
            partition=int(partition),
            offset=offset,
            key=event.service.encode(),
            value=event.model_dump_json(exclude_none=True).encode(),
            timestamp_ms=(event.time - _EPOCH) // _MS,
        )
        for offset, event in enumerate(events)
    )
    every_ms = split_every // _MS if split_every is not None else None
    for _, group in groupby(
        messages,
        key=lambda m: 0 if every_ms is None else (m.timestamp_ms or 0) // every_ms,
    ):
        while chunk := tuple(islice(group, size)):
            yield RawBatch(shard, chunk)
