"""Sinks inside the process: a callback per record, for consoles and tools."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from bytewax.outputs import DynamicSink, StatelessSinkPartition

__all__ = ["CallbackSink"]

X = TypeVar("X")


class CallbackSink(DynamicSink[X], Generic[X]):
    """Hands every record to `callback`, in the order each worker writes them."""

    def __init__(self, callback: Callable[[X], None]) -> None:
        self._callback = callback

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> _Partition[X]:
        return _Partition(self._callback)


class _Partition(StatelessSinkPartition[X], Generic[X]):
    def __init__(self, callback: Callable[[X], None]) -> None:
        self._callback = callback

    def write_batch(self, items: list[X]) -> None:
        for item in items:
            self._callback(item)
