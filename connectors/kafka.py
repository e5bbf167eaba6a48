"""Kafka source and sink for bytewax flows, on confluent-kafka.

`KafkaSource` reads every partition of its topics as one bytewax partition
and emits `RawBatch` items; `KafkaSink` produces `OutMessage` items with
delivery reports. `produce_all` and `consume_all` do the same outside a flow,
for tests and tools.

Client settings are passed to confluent-kafka as given, so TLS and SASL
settings work; their values are never logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ClusterMetadata,
    ConfigResource,
    NewTopic,
)

from connectors.messages import OutMessage, RawBatch, RawMessage
from foreshock import shutdown, telemetry
from foreshock.errors import UserError

__all__ = [
    "CLIENT_LOG",
    "DeliveryError",
    "KafkaSink",
    "KafkaSource",
    "MissingTopicError",
    "Replacement",
    "StartingOffset",
    "consume_all",
    "ensure_topics",
    "parts_of_process",
    "produce_all",
    "retention_ms",
    "waiting_on",
]

_LOG = logging.getLogger(__name__)
# What librdkafka itself logs (connection failures, retries) goes here rather
# than to stderr, so that a command can keep it for `-v`.
CLIENT_LOG = logging.getLogger("foreshock.kafka.client")

StartingOffset = Literal["earliest", "latest"]

# While a broker is away a client reports an error every few hundred
# milliseconds; the log gets the first, then a sum this often.
_ERRORS_EVERY_S = 30.0


class _ClientErrors:
    """The errors one Kafka client reports, logged in bounded number.

    A broker away for minutes makes librdkafka report a failed connection
    several times a second. The first error is logged at WARNING, with what
    the client is; those that follow within `every_s` are counted, and the
    next line says how many there were and the latest. Kafka's clients
    retry on their own: nothing here changes what the flow does.
    """

    def __init__(
        self,
        client: str,
        every_s: float = _ERRORS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._every_s = every_s
        self._clock = clock
        self._logged_at: float | None = None
        self._unlogged = 0

    def report(self, error: KafkaError | str) -> None:
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < self._every_s:
            self._unlogged += 1
            return
        if self._unlogged:
            _LOG.warning(
                "%s: %s more Kafka errors in the last %.0f s, the latest: %s",
                self._client,
                self._unlogged + 1,
                now - self._logged_at if self._logged_at is not None else 0.0,
                error,
            )
        else:
            _LOG.warning(
                "%s: Kafka error, retrying (more are summed up every %.0f s): %s",
                self._client,
                self._every_s,
                error,
            )
        self._logged_at, self._unlogged = now, 0


# confluent-kafka refuses a consumer without a group.id, even one that only
# assigns partitions; this one is never committed to.
_ASSIGN_ONLY_GROUP = "foreshock-assign-only"
_METADATA_TIMEOUT_S = 10.0
_RETRY_AFTER_ERROR = timedelta(seconds=1)
_OPEN_TIMEOUT_S = 30.0
# Answers that only mean "not yet": a group coordinator is still being chosen,
# which happens on a young cluster until the offsets topic exists.
_NOT_YET = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)

# Answers that condemn one record, not the connection: the record is too
# large for the producer or the topic, or invalid for the topic. Sent again,
# it gets the same answer, so waiting or restarting can never get it through.
_REFUSED_FOR_GOOD = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD}
)

# What a sink writes in place of a record Kafka refused for good, given the
# record and Kafka's answer (see `KafkaSink`).
Replacement = Callable[[OutMessage, str], OutMessage]

_T = TypeVar("_T")

_Headers = tuple[tuple[str, bytes], ...]


class MissingTopicError(UserError, LookupError):
    """A topic that a source should read does not exist on the cluster."""


class DeliveryError(UserError, RuntimeError):
    """Some messages given to a sink were not delivered to Kafka."""


@dataclass(frozen=True, slots=True)
class _SourceSettings:
    config: dict[str, str]
    starting_offset: StartingOffset
    batch_size: int
    poll_timeout_s: float
    stop_at_end: bool

    @property
    def commits(self) -> bool:
        return "group.id" in self.config


class KafkaSource(FixedPartitionedSource[RawBatch, int]):
    """Read Kafka topics in batches, one bytewax partition per Kafka partition.

    Design decisions:

    - Partitions are assigned, never subscribed: bytewax decides which worker
      reads which partition, so there is no group rebalancing. Partitions are
      listed once, at start.
    - A partition starts at the snapshot offset when the flow resumes; else
      at the offset committed for `group.id`, if any; else at
      `starting_offset`.
    - With a `group.id`, every snapshot also commits the next offset to read,
      asynchronously, so that monitoring sees consumer lag. A restart
      without recovery resumes from that offset: records that were read but
      not yet written out when the flow stopped are not read again.
    - Errors reported by Kafka are logged at WARNING and the partition keeps
      going; they never stop the flow.
    - After each batch, the partition's consumer lag (the high watermark the
      latest fetch brought, minus the next offset to read) goes to the
      `foreshock_consumer_lag` gauge; it costs no request to Kafka.
    - `stop_at_end` makes a bounded run: each partition stops after the last
      record that was in it when the partition was opened.
    - `config` goes to confluent-kafka as given, except that the source
      manages `enable.auto.commit`, `enable.auto.offset.store` and
      `enable.partition.eof` itself.
    - `formats` maps a topic to the format of its records ("native" when not
      named); each batch carries its topic's format, so the flow picks the
      decoder without knowing where the batch came from.
    - `process` = (index, count) in a cluster of processes of `workers`
      workers each: this process lists, and so reads, the partitions
      `parts_of_process` gives it (Bytewax builds a partition where it is
      listed), so that partitions are spread evenly rather than wherever a
      hash of their names falls, and each is read by the worker that
      `flows.placement` keeps its windows on.
    """

    def __init__(
        self,
        topics: Sequence[str],
        config: dict[str, str],
        *,
        starting_offset: StartingOffset = "latest",
        batch_size: int = 10_000,
        poll_timeout_s: float = 0.05,
        stop_at_end: bool = False,
        formats: Mapping[str, str] | None = None,
        process: tuple[int, int] = (0, 1),
        workers: int = 1,
    ) -> None:
        _check_source_arguments(topics, config, starting_offset, batch_size)
        index, count = process
        if not 0 <= index < count:
            raise ValueError(f"process {index} of {count} does not exist")
        if workers < 1:
            raise ValueError(f"a process needs at least one worker, got {workers}")
        self._topics = list(topics)
        self._formats = dict(formats or {})
        self._process = process
        self._workers = workers
        self._settings = _SourceSettings(
            dict(config), starting_offset, batch_size, poll_timeout_s, stop_at_end
        )

    def list_parts(self) -> list[str]:
        """The partitions this process reads, as "topic:partition"."""
        index, count = self._process
        return parts_of_process(self.all_parts(), index, count, self._workers)

    def all_parts(self) -> list[str]:
        """Every partition of every topic, as "topic:partition"."""
        consumer = Consumer(_consumer_config(self._settings))
        bootstrap = self._settings.config["bootstrap.servers"]
        try:
            with waiting_on(bootstrap, _METADATA_TIMEOUT_S):
                metadata: ClusterMetadata = consumer.list_topics(
                    timeout=_METADATA_TIMEOUT_S
                )
        finally:
            consumer.close()
        return [
            _shard(topic, partition)
            for topic in self._topics
            for partition in _partitions_of(metadata, topic, bootstrap)
        ]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[RawBatch, int]:
        """Open one Kafka partition at its starting offset."""
        shutdown.started()
        topic, _, partition = for_part.rpartition(":")
        return _KafkaPartition(
            self._settings,
            topic,
            int(partition),
            resume_state,
            self._formats.get(topic, "native"),
        )


def parts_of_process(
    parts: Iterable[str], index: int, count: int, workers: int = 1
) -> list[str]:
    """The partitions process `index` of `count` reads, each process with
    `workers` workers.

    Bytewax sorts a source's partitions by name and gives the j-th to worker
    `j % (count * workers)` of those listing it, and the workers of process
    i are numbered from `i * workers`; so this process lists the partitions
    whose worker is one of its own.
    """
    total = count * workers
    return [
        part
        for place, part in enumerate(sorted(set(parts)))
        if (place % total) // workers == index
    ]


def _check_source_arguments(
    topics: Sequence[str],
    config: dict[str, str],
    starting_offset: str,
    batch_size: int,
) -> None:
    if isinstance(topics, str) or not topics:
        raise ValueError(f"topics must be a non-empty list of names, got {topics!r}")
    if "bootstrap.servers" not in config:
        raise ValueError("config has no 'bootstrap.servers'; name the Kafka brokers")
    if starting_offset not in ("earliest", "latest"):
        raise ValueError(
            f"starting_offset must be 'earliest' or 'latest', got {starting_offset!r}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")


def _shard(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def _partitions_of(metadata: ClusterMetadata, topic: str, bootstrap: str) -> list[int]:
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise MissingTopicError(
            f"Kafka topic {topic!r} does not exist (or has no partitions) on "
            f"{bootstrap!r}; create it before starting the flow"
        )
    return sorted(found.partitions)


def _consumer_config(settings: _SourceSettings, **callbacks: Any) -> dict[str, Any]:
    # Offsets are committed by the partitions themselves, on snapshot.
    return {
        "group.id": _ASSIGN_ONLY_GROUP,
        "auto.offset.reset": settings.starting_offset,
        **settings.config,
        "enable.auto.commit": "false",
        "enable.auto.offset.store": "false",
        "enable.partition.eof": "true" if settings.stop_at_end else "false",
        "logger": CLIENT_LOG,
        **callbacks,
    }


class _KafkaPartition(StatefulSourcePartition[RawBatch, int]):
    """Reads one Kafka partition; the snapshot is the next offset to read."""

    def __init__(
        self,
        settings: _SourceSettings,
        topic: str,
        partition: int,
        resume_state: int | None,
        format: str = "native",
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._partition = partition
        self._format = format
        self._shard = _shard(topic, partition)
        self._errors = _ClientErrors(
            f"kafka source topic={topic} partition={partition}"
        )
        self._awake: datetime | None = None
        self._at_eof = False
        self._committed: int | None = None
        self._next_offset = 0
        self._end: int | None = None
        self._announce = False
        self._consumer = Consumer(
            _consumer_config(
                settings, error_cb=self._on_client_error, on_commit=self._on_commit
            )
        )
        try:
            self._open(resume_state)
        except KafkaException:
            _LOG.error(
                "kafka source could not open topic=%s partition=%s",
                topic,
                partition,
                exc_info=True,
            )
            self._consumer.close()
            raise

    def _open(self, resume_state: int | None) -> None:
        low, high = _when_ready(self._watermarks)
        self._committed = _when_ready(self._group_offset)
        start, origin = self._start(resume_state, low, high)
        self._consumer.assign([TopicPartition(self._topic, self._partition, start)])
        self._next_offset = start
        self._end = high if self._settings.stop_at_end else None
        # Nothing to read yet: the first batch says so (see RawBatch).
        self._announce = start >= high
        _LOG.info(
            "kafka source assigned topic=%s partition=%s offset=%s from=%s",
            self._topic,
            self._partition,
            start,
            origin,
        )

    def _start(self, resume_state: int | None, low: int, high: int) -> tuple[int, str]:
        if resume_state is not None:
            return resume_state, "snapshot"
        if self._committed is not None:
            return self._committed, "group"
        if self._settings.starting_offset == "earliest":
            return low, "earliest"
        return high, "latest"

    def _watermarks(self) -> tuple[int, int]:
        wanted = TopicPartition(self._topic, self._partition)
        return self._consumer.get_watermark_offsets(wanted, timeout=_METADATA_TIMEOUT_S)

    def _group_offset(self) -> int | None:
        if not self._settings.commits:
            return None
        wanted = [TopicPartition(self._topic, self._partition)]
        [found] = self._consumer.committed(wanted, timeout=_METADATA_TIMEOUT_S)
        # A negative offset is Kafka's way of saying "nothing committed".
        return found.offset if found.offset >= 0 else None

    def next_batch(self) -> list[RawBatch]:
        """The records that arrived since the last call, as at most one batch."""
        if self._announce:
            self._announce = False
            return [RawBatch(self._shard, (), self._format, caught_up=True)]
        if self._finished():
            raise StopIteration

        # Reset first: an error reported while consuming sets a new wait.
        self._awake = None
        try:
            polled = self._consumer.consume(
                self._settings.batch_size, self._settings.poll_timeout_s
            )
        except KafkaException as error:
            self._on_client_error(error.args[0])
            return []

        messages = self._accept(polled)
        if not messages:
            return []
        self._report_lag()
        return [RawBatch(self._shard, messages, self._format)]

    def _report_lag(self) -> None:
        # The high watermark cached from the latest fetch: no request to Kafka.
        # Before any fetch it is unknown (negative) and nothing is reported.
        wanted = TopicPartition(self._topic, self._partition)
        _, high = self._consumer.get_watermark_offsets(wanted, cached=True)
        if high >= 0:
            lag = max(0, high - self._next_offset)
            telemetry.consumer_lag(self._topic, self._partition, lag)

    def next_awake(self) -> datetime | None:
        """After an error, wait a moment before asking Kafka again."""
        return self._awake

    def snapshot(self) -> int:
        """The next offset to read; also committed when there is a group."""
        if self._settings.commits and self._next_offset != self._committed:
            self._commit(self._next_offset)
        return self._next_offset

    def close(self) -> None:
        """Leave the partition; nothing is committed here."""
        self._consumer.close()

    def _finished(self) -> bool:
        # A stop asked for by a signal ends the partition where it is; the
        # next offset is in the last snapshot, and a restart reads on.
        if shutdown.requested():
            return True
        if self._end is None:
            return False
        return self._at_eof or self._next_offset >= self._end

    def _accept(self, polled: list[Message]) -> tuple[RawMessage, ...]:
        accepted: list[RawMessage] = []
        for message in polled:
            error = message.error()
            offset = message.offset()
            if error is not None:
                self._on_message_error(error)
            elif offset is not None and not self._past_end(offset):
                accepted.append(self._to_raw(message, offset))
                self._next_offset = offset + 1
        return tuple(accepted)

    def _past_end(self, offset: int) -> bool:
        return self._end is not None and offset >= self._end

    def _to_raw(self, message: Message, offset: int) -> RawMessage:
        kind, timestamp_ms = message.timestamp()
        # Positional arguments: this runs for every record read.
        return RawMessage(
            self._topic,
            self._partition,
            offset,
            message.key(),
            message.value(),
            None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp_ms,
            _headers_of(message),
        )

    def _commit(self, offset: int) -> None:
        wanted = [TopicPartition(self._topic, self._partition, offset)]
        try:
            self._consumer.commit(offsets=wanted, asynchronous=True)
        except KafkaException as error:
            self._on_client_error(error.args[0])
            return
        self._committed = offset

    def _on_message_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            self._at_eof = True
            return
        self._errors.report(error)

    def _on_client_error(self, error: KafkaError) -> None:
        self._awake = datetime.now(UTC) + _RETRY_AFTER_ERROR
        self._errors.report(error)

    def _on_commit(
        self, error: KafkaError | None, partitions: list[TopicPartition]
    ) -> None:
        failed = [part for part in partitions if part.error is not None]
        if error is None and not failed:
            return
        _LOG.warning(
            "kafka source commit failed topic=%s partition=%s error=%s",
            self._topic,
            self._partition,
            error if error is not None else failed[0].error,
        )


def _when_ready(call: Callable[[], _T]) -> _T:
    deadline = time.monotonic() + _OPEN_TIMEOUT_S
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0]
            if not _is_transient(error) or time.monotonic() > deadline:
                raise
            _LOG.info("kafka cluster not ready, retrying error=%s", error)
        time.sleep(0.2)


def _is_transient(error: object) -> bool:
    if not isinstance(error, KafkaError):
        return False
    return error.retriable() or error.code() in _NOT_YET


def _headers_of(message: Message) -> _Headers:
    headers = message.headers()
    # Most records carry no headers; this runs for every record read.
    if not headers:
        return ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    return tuple((name, _header_bytes(value)) for name, value in pairs)


def _header_bytes(value: str | bytes | None) -> bytes:
    # RawMessage has no room for a null header value; it reads as empty.
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value


class KafkaSink(DynamicSink[OutMessage]):
    """Produce `OutMessage` items to Kafka, one producer per worker.

    A message goes to its own topic with its key, so Kafka's default
    partitioner keeps each key on one partition. A failed delivery is logged
    at ERROR with its topic and key when Kafka reports it, and counted;
    `close` waits for outstanding deliveries (up to `flush_timeout_s`) and
    raises `DeliveryError` if any failed or any are still unsent, so that a
    bounded run never loses data silently.

    With `wait_for_delivery` (what a flow with recovery needs), each batch
    is delivered before `write_batch` returns, so the flow never snapshots
    past output that Kafka does not have: after a crash, what was not
    delivered is produced again from the snapshot. While the broker is away
    the batch waits, and a delivery Kafka refuses raises `DeliveryError`,
    which stops the flow rather than lose the batch. The producer is then
    idempotent, so its own retries add no duplicates.

    A record Kafka refuses for good (too large for the producer's
    `message.max.bytes` or the topic's `max.message.bytes`, or invalid for
    its topic) would get the same answer after every restart, so it must
    not stop the flow. With `replace_refused`, it is logged at ERROR with
    its topic, key and size, counted (`foreshock_output_refused_total`),
    and the message `replace_refused` makes of it is written instead: a
    small dead letter that says which record could not be written and why.
    A replacement refused in turn is logged at ERROR and dropped. Without
    `replace_refused`, such a record is a failed delivery as above.
    """

    def __init__(
        self,
        config: dict[str, str],
        *,
        flush_timeout_s: float = 30.0,
        wait_for_delivery: bool = False,
        replace_refused: Replacement | None = None,
    ) -> None:
        if "bootstrap.servers" not in config:
            raise ValueError(
                "config has no 'bootstrap.servers'; name the Kafka brokers"
            )
        self._config = dict(config)
        if wait_for_delivery:
            self._config.setdefault("enable.idempotence", "true")
        self._flush_timeout_s = flush_timeout_s
        self._wait_for_delivery = wait_for_delivery
        self._replace_refused = replace_refused

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[OutMessage]:
        """A producer for one worker."""
        # Bytewax builds sinks once the processes of a cluster are connected.
        shutdown.started()
        return _ProducerPartition(
            self._config,
            self._flush_timeout_s,
            self._wait_for_delivery,
            self._replace_refused,
        )


class _ProducerPartition(StatelessSinkPartition[OutMessage]):
    def __init__(
        self,
        config: dict[str, str],
        flush_timeout_s: float,
        wait_for_delivery: bool = False,
        replace_refused: Replacement | None = None,
    ) -> None:
        self._flush_timeout_s = flush_timeout_s
        self._wait_for_delivery = wait_for_delivery
        self._replace_refused = replace_refused
        self.failed = 0
        self._errors = _ClientErrors("kafka sink")
        # Records refused for good, with Kafka's answer, until replaced.
        self._refused: list[tuple[OutMessage, KafkaError]] = []
        self._producer = Producer(
            {**config, "error_cb": self._on_client_error, "logger": CLIENT_LOG}
        )

    def write_batch(self, items: list[OutMessage]) -> None:
        for item in items:
            self._produce(item)
        if self._wait_for_delivery:
            self._deliver()
            return
        # Serves delivery reports of earlier batches without waiting.
        self._producer.poll(0)
        self._replace()

    def _deliver(self) -> None:
        """Wait until Kafka has the batch, however long the broker is away."""
        while True:
            while (unsent := self._producer.flush(self._flush_timeout_s)) > 0:
                _LOG.warning(
                    "kafka sink waiting for delivery unsent=%s seconds=%.0f",
                    unsent,
                    self._flush_timeout_s,
                )
            # Replacements are part of the batch: delivered before it ends.
            if not self._replace():
                break
        if self.failed:
            message = (
                f"Kafka refused {self.failed} messages; see the ERROR log lines "
                "above for topics and keys. The flow stops so that a restart "
                "produces them again from its last snapshot"
            )
            _LOG.error("%s", message)
            raise DeliveryError(message)

    def close(self) -> None:
        unsent = self._producer.flush(self._flush_timeout_s)
        if self._replace():
            unsent = self._producer.flush(self._flush_timeout_s)
        if self.failed or unsent:
            message = (
                f"Kafka did not take every message: {self.failed} failed, "
                f"{unsent} still unsent after {self._flush_timeout_s:.0f} s; "
                "see the ERROR log lines above for topics and keys"
            )
            _LOG.error("%s", message)
            raise DeliveryError(message)

    def _produce(self, item: OutMessage, replacement: bool = False) -> None:
        headers: list[tuple[str, str | bytes | None]] | None = (
            list(item.headers) if item.headers else None
        )
        on_delivery = self._on_replacement if replacement else self._on_delivery
        while True:
            try:
                self._producer.produce(
                    item.topic,
                    item.value,
                    item.key,
                    headers=headers,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                # The local queue is full: wait for deliveries to make room.
                self._producer.poll(0.1)
            except KafkaException as exc:
                # The producer refuses a record beyond its own size bound
                # before sending it, with the answer a broker would give.
                error: KafkaError = exc.args[0]
                if error.code() not in _REFUSED_FOR_GOOD:
                    raise
                self._refuse(item, error, replacement)
                return

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        self._delivered(error, message, replacement=False)

    def _on_replacement(self, error: KafkaError | None, message: Message) -> None:
        self._delivered(error, message, replacement=True)

    def _delivered(
        self, error: KafkaError | None, message: Message, replacement: bool
    ) -> None:
        if error is None:
            return
        if error.code() in _REFUSED_FOR_GOOD:
            self._refuse(_out_message(message), error, replacement)
            return
        self._failed(message.topic(), message.key(), error)

    def _failed(self, topic: str | None, key: bytes | None, error: KafkaError) -> None:
        self.failed += 1
        _LOG.error("kafka delivery failed topic=%s key=%r error=%s", topic, key, error)

    def _refuse(self, item: OutMessage, error: KafkaError, replacement: bool) -> None:
        """Set a record refused for good aside for its replacement."""
        if replacement:
            _LOG.error(
                "kafka refused the replacement of a refused record, dropped: "
                "topic=%s key=%r bytes=%s error=%s",
                item.topic,
                item.key,
                len(item.value),
                error,
            )
        elif self._replace_refused is None:
            self._failed(item.topic, item.key, error)
        else:
            self._refused.append((item, error))

    def _replace(self) -> bool:
        """Write the replacement of each record refused since; whether any."""
        refused, self._refused = self._refused, []
        for item, error in refused:
            assert self._replace_refused is not None
            _LOG.error(
                "kafka refused a record for good, a dead letter takes its "
                "place: topic=%s key=%r bytes=%s error=%s",
                item.topic,
                item.key,
                len(item.value),
                error,
            )
            telemetry.output_refused(item.topic)
            self._produce(self._replace_refused(item, error.str()), replacement=True)
        return bool(refused)

    def _on_client_error(self, error: KafkaError) -> None:
        self._errors.report(error)


def _out_message(message: Message) -> OutMessage:
    """The record a delivery report is about, as it was given to the sink."""
    return OutMessage(
        message.topic() or "",
        message.key(),
        message.value() or b"",
        _headers_of(message),
    )


# A broker that has not answered a request for metadata after this long is
# named on the terminal, since the wait can last as long as the timeout.
_QUIET_BROKER_S = 5.0


@contextmanager
def waiting_on(
    bootstrap: str, timeout_s: float, after_s: float = _QUIET_BROKER_S
) -> Iterator[None]:
    """Within the block, a request waits on the broker at `bootstrap`: if it
    takes more than `after_s`, one warning says what is being waited for and
    for how long at most."""
    notice = threading.Timer(
        after_s,
        _LOG.warning,
        args=(
            "no answer yet from the Kafka broker at %s; waiting up to %.0f s "
            "(kafka.bootstrap_servers)",
            bootstrap,
            timeout_s,
        ),
    )
    notice.daemon = True
    notice.start()
    try:
        yield
    finally:
        notice.cancel()


def ensure_topics(
    client: dict[str, Any],
    topics: Iterable[str],
    *,
    create: bool,
    timeout_s: float = 30,
    config: dict[str, str] | None = None,
    partitions: int | None = None,
) -> list[str]:
    """Make sure `topics` exist; return those this call created.

    With `create`, missing topics are made with `partitions` partitions (the
    broker's default if None) and its default replication, and the topic
    settings `config` gives. Without
    it, a missing topic is an error that names every missing one, raised
    before any work starts.
    """
    settings: dict[str, Any] = {**client, "logger": CLIENT_LOG}
    admin = AdminClient(settings)
    wanted = sorted(set(topics))
    with waiting_on(str(client.get("bootstrap.servers")), timeout_s):
        known = admin.list_topics(timeout=timeout_s).topics
    missing = [t for t in wanted if t not in known]
    if missing and not create:
        raise MissingTopicError(
            f"missing Kafka topics: {', '.join(missing)}; create them, or set "
            "kafka.create_topics = true"
        )
    if not missing:
        return []
    # -1: the broker's default.
    count = partitions if partitions is not None else -1
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=count, config=config or {}) for t in missing]
    )
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        _LOG.info("created topic=%s", topic)
    return missing


def retention_ms(client: dict[str, Any], topic: str, timeout_s: float = 30) -> int:
    """How long `topic` keeps records, in milliseconds by their timestamps;
    -1 for ever."""
    settings: dict[str, Any] = {**client, "logger": CLIENT_LOG}
    admin = AdminClient(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    described = admin.describe_configs([resource])[resource].result(timeout=timeout_s)
    return int(described["retention.ms"].value)


def produce_all(
    bootstrap: str,
    messages: Iterable[OutMessage],
    *,
    config: dict[str, str] | None = None,
    flush_timeout_s: float = 30.0,
) -> int:
    """Produce messages and wait until Kafka has them all; return the count.

    Raises `DeliveryError` if any message was not delivered.
    """
    settings = {**(config or {}), "bootstrap.servers": bootstrap}
    producer = _ProducerPartition(settings, flush_timeout_s)
    batch = list(messages)
    producer.write_batch(batch)
    producer.close()
    return len(batch)


def consume_all(
    bootstrap: str,
    topic: str,
    timeout_s: float = 30.0,
    *,
    config: dict[str, str] | None = None,
) -> list[RawMessage]:
    """Read every record that is in a topic now, partition by partition.

    Reads each partition from its first record up to its end as seen when
    the call starts, in offset order. Raises `TimeoutError` if that takes
    longer than `timeout_s`.
    """
    settings = {**(config or {}), "bootstrap.servers": bootstrap}
    source = KafkaSource(
        [topic], settings, starting_offset="earliest", stop_at_end=True
    )
    deadline = time.monotonic() + timeout_s
    records: list[RawMessage] = []
    for shard in source.list_parts():
        partition = source.build_part("consume_all", shard, None)
        try:
            records.extend(_drain(partition, shard, deadline))
        finally:
            partition.close()
    return records


def _drain(
    partition: StatefulSourcePartition[RawBatch, int], shard: str, deadline: float
) -> list[RawMessage]:
    records: list[RawMessage] = []
    while time.monotonic() < deadline:
        try:
            batches = partition.next_batch()
        except StopIteration:
            return records
        for batch in batches:
            records.extend(batch.messages)
    raise TimeoutError(
        f"Kafka partition {shard!r} was not read to its end in time; "
        f"{len(records)} records read so far"
    )
