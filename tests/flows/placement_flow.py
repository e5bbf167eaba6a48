"""A dataflow that reports where Bytewax reads each partition and where it
keeps the partition's window state (`tests/flows/test_placement.py`).

Each partition emits its name with the process and thread that read it; a
stateful step keyed as the window step keys it adds where it ran. Run it in
one process with several workers, or as a cluster with `FORESHOCK_PROCESS`
= "index/count/workers", where each process lists its share as
`KafkaSource` does.
"""

from __future__ import annotations

import os
import threading

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.kafka import parts_of_process
from flows.placement import window_keys

# Names as `KafkaSource` gives them, more than ten to a topic so that their
# sorted order differs from their numbers'.
PARTS = [f"events:{n}" for n in range(12)] + ["changes:0", "otlp:0", "otlp:1"]


def _where() -> str:
    return f"{os.getpid()}/{threading.get_ident()}"


class _Part(StatefulSourcePartition[tuple[str, str], None]):
    def __init__(self, name: str) -> None:
        self._name = name
        self._done = False

    def next_batch(self) -> list[tuple[str, str]]:
        if self._done:
            raise StopIteration
        self._done = True
        return [(self._name, _where())]

    def snapshot(self) -> None:
        return None


class _Source(FixedPartitionedSource[tuple[str, str], None]):
    def list_parts(self) -> list[str]:
        index, count, workers = os.environ.get("FORESHOCK_PROCESS", "0/1/1").split("/")
        return parts_of_process(PARTS, int(index), int(count), int(workers))

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Part:
        return _Part(for_part)


class _Print(StatelessSinkPartition[tuple[str, str, str]]):
    def write_batch(self, items: list[tuple[str, str, str]]) -> None:
        for part, read, kept in items:
            # One write a line, so that workers' lines never interleave.
            os.write(1, f"placed {part} {read} {kept}\n".encode())


class _Stdout(DynamicSink[tuple[str, str, str]]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Print:
        return _Print()


def _keep(state: None, item: tuple[str, str]) -> tuple[None, tuple[str, str, str]]:
    part, read = item
    return None, (part, read, _where())


def placement_flow(keyed: bool = True) -> Dataflow:
    """Read `PARTS`; key them by `window_keys` or, unless `keyed`, by name."""
    keys = window_keys(PARTS) if keyed else {}
    flow = Dataflow("placement")
    read = op.input("read", flow, _Source())
    by_key = op.key_on("key", read, lambda item: keys.get(item[0], item[0]))
    kept = op.key_rm("unkey", op.stateful_map("kept", by_key, _keep))
    op.output("out", kept, _Stdout())
    return flow


flow = placement_flow()
plain = placement_flow(keyed=False)
