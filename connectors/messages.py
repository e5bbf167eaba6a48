"""What travels between connectors and flows: raw records in, keyed records out."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["OutMessage", "RawBatch", "RawMessage"]


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One record as a source read it, before any decoding.

    `value` is None for a Kafka tombstone. `timestamp_ms` is the broker's (or
    the producer's) timestamp when the source has one.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class RawBatch:
    """Records read in one go from one source partition.

    A flow handles a whole batch as one item, so that per-record work stays
    inside a Python loop rather than in the engine. `shard` names the source
    partition (for Kafka, "topic:partition"); windows and watermarks are kept
    per shard. `format` names the decoder of every record in the batch (see
    `foreshock.decode`): a source reads one topic per batch, and a topic
    carries one format. An empty batch with `caught_up` says the partition
    had nothing to read when the source opened it, so that a flow waiting
    for every partition's progress need not wait for this one.
    """

    shard: str
    messages: tuple[RawMessage, ...]
    format: str = "native"
    caught_up: bool = False


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A record for a sink: the topic it goes to, its key and its value."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = field(default=())
