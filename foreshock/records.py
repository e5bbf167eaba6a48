"""What Foreshock publishes: KPI windows, scores, anomalies, dead letters.

Every record is a frozen pydantic model with a `schema_version`, so that
consumers can tell versions apart; their JSON Schemas are exported to
`schemas/` beside the event schema. Marks added since version 1 (`backfill`,
`closed_by`, `restated`, a late event's `reason`, a cut dead letter's size
and hash) are written only when they differ from their default, so that a
record without them reads as before.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from foreshock.kpis import Dimension, Direction
from foreshock.layers import Layer

__all__ = [
    "SILENCE",
    "Anomaly",
    "Candidate",
    "Change",
    "ClosedBy",
    "DataGap",
    "DeadLetter",
    "EarlyWarning",
    "Evidence",
    "Incident",
    "KpiRecord",
    "KpiScore",
    "LateEvent",
    "Record",
    "WindowState",
    "stable_id",
]

# "ok": a value was measured; "no_traffic": the service reported in but had
# nothing this KPI counts (zero queries make no error rate); "no_data": nothing
# at all arrived from the service for the window.
WindowState = Literal["ok", "no_traffic", "no_data"]
# What closed a window: the watermark passing its end (the normal way), the
# idle timeout of a shard whose events stopped advancing, or the end of the
# input.
ClosedBy = Literal["watermark", "idle_timeout", "end_of_input"]


def stable_id(*parts: object) -> str:
    """A short id that is the same for the same parts on every run."""
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1


class KpiRecord(_Record):
    """The value of one KPI of one service for one closed window."""

    layer: Layer
    service: str
    kpi: str
    dimension: Dimension
    direction: Direction
    unit: str
    window_start: datetime
    window_end: datetime
    value: float | None
    state: WindowState
    events: int = 0
    rejected_values: int = 0
    closed_by: ClosedBy = Field(
        default="watermark", exclude_if=lambda v: v == "watermark"
    )
    # Old news when it closed (a backlog replayed after downtime): scored and
    # learned like any window, but it pages nobody.
    backfill: bool = Field(default=False, exclude_if=lambda v: not v)
    # The window again, after events of a restatable kind (app crashes
    # uploaded hours after they happened) reached it once it had closed: a
    # correction of the published window, neither learned nor paged.
    restated: bool = Field(default=False, exclude_if=lambda v: not v)

    @property
    def series(self) -> str:
        return f"{self.layer.value}/{self.service}/{self.kpi}"


class KpiScore(_Record):
    """A KPI window as its detector judged it."""

    kpi: KpiRecord
    detector: str
    score: float | None
    expected: float | None
    side: int
    detector_state: Literal["warming_up", "ready", "skipped"]
    anomalous: bool
    # Set when the window breached the KPI's static objective, which makes
    # it anomalous whatever the score.
    objective: float | None = None


class Anomaly(_Record):
    """A KPI window whose score crossed the threshold in its harmful direction."""

    id: str
    layer: Layer
    service: str
    kpi: str
    dimension: Dimension
    direction: Literal["up", "down"]
    window_start: datetime
    window_end: datetime
    value: float
    expected: float | None
    score: float
    detector: str
    detector_state: Literal["warming_up", "ready"]
    # From a backfill window: published for the record, never paged.
    backfill: bool = Field(default=False, exclude_if=lambda v: not v)

    @classmethod
    def from_score(cls, s: KpiScore) -> Anomaly:
        k = s.kpi
        assert k.value is not None and s.score is not None
        return cls(
            id=stable_id("anomaly", k.series, k.window_start.isoformat()),
            layer=k.layer,
            service=k.service,
            kpi=k.kpi,
            dimension=k.dimension,
            direction="up" if s.side > 0 else "down",
            window_start=k.window_start,
            window_end=k.window_end,
            value=k.value,
            expected=s.expected,
            score=s.score,
            detector=s.detector,
            detector_state=(
                "warming_up" if s.detector_state == "warming_up" else "ready"
            ),
            backfill=k.backfill,
        )


class DeadLetter(_Record):
    """An input record that could not be used, with why and where it came from.

    `value_b64` holds the original bytes (base64), so the record can be
    repaired and replayed. A letter must itself fit in a Kafka message, so it
    carries at most a bounded number of the original bytes: beyond that,
    `value_b64` is the original's first bytes, `truncated` is set, and
    `value_bytes` and `value_sha256` (hex) describe the whole original, which
    stays at `topic`, `partition` and `offset` for as long as the topic keeps
    it. `key` is the original key as text; a key that is not UTF-8 is also
    kept exactly, as `key_b64`. A key longer than 1 KiB keeps its first
    bytes too, and is marked `truncated`. Reason "too_many_refused" stands
    for the events of one message beyond those given letters of their own;
    "output_refused" for an output record Kafka refused for good, never
    written anywhere, so its partition and offset are -1 and `topic` is
    where it was going; "decoder_failed" for a message whose format's
    decoder raised, with the error in `detail`.
    """

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value_b64: str | None
    key_b64: str | None = Field(default=None, exclude_if=lambda v: v is None)
    timestamp_ms: int | None = None
    truncated: bool = Field(default=False, exclude_if=lambda v: not v)
    value_bytes: int | None = Field(default=None, exclude_if=lambda v: v is None)
    value_sha256: str | None = Field(default=None, exclude_if=lambda v: v is None)

    # Of the original value, at most this much by default: with base64's
    # third more and the letter's other fields, a letter stays far below
    # the 1 MB that Kafka's producers and brokers accept by default.
    VALUE_BYTES: ClassVar[int] = 262_144
    # Keys name things (a service, a session): longer ones are hostile.
    KEY_BYTES: ClassVar[int] = 1024

    @staticmethod
    def encode(value: bytes | None) -> str | None:
        return None if value is None else base64.b64encode(value).decode()

    @classmethod
    def of(
        cls,
        *,
        reason: str,
        detail: str,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int | None = None,
        max_value_bytes: int | None = VALUE_BYTES,
    ) -> DeadLetter:
        """The letter of a record, with at most `max_value_bytes` of its value.

        None keeps the value whole, however large.
        """
        kept, size, digest = _cut(value, max_value_bytes)
        long_key = key is not None and len(key) > cls.KEY_BYTES
        key = None if key is None else key[: cls.KEY_BYTES]
        text, exact = _key_text(key)
        return cls(
            reason=reason,
            detail=detail,
            topic=topic,
            partition=partition,
            offset=offset,
            key=text,
            key_b64=exact,
            value_b64=cls.encode(kept),
            timestamp_ms=timestamp_ms,
            truncated=size is not None or long_key,
            value_bytes=size,
            value_sha256=digest,
        )


def _key_text(key: bytes | None) -> tuple[str | None, str | None]:
    """A key as text, and as base64 too when text cannot hold it exactly."""
    if key is None:
        return None, None
    try:
        return key.decode(), None
    except UnicodeDecodeError:
        return key.decode(errors="replace"), base64.b64encode(key).decode()


def _cut(
    value: bytes | None, limit: int | None
) -> tuple[bytes | None, int | None, str | None]:
    """The bytes a letter keeps; with the whole's size and SHA-256 if cut."""
    if value is None or limit is None or len(value) <= limit:
        return value, None, None
    return value[:limit], len(value), hashlib.sha256(value).hexdigest()


class LateEvent(_Record):
    """An event kept out of its window: late, or quarantined for clock skew.

    It is not merged into the published window; it is routed here, with the
    window it belonged to and the shard's watermark when it came. `reason`
    "late": its window had closed. "clock_skew": its event time was too far
    from the broker's receive time (`received_at`) to be trusted, so it was
    kept from moving the watermark and making honest events late; the
    watermark is then the receive time when the shard had none yet.
    """

    layer: Layer
    service: str
    kind: str
    event_time: datetime
    window_start: datetime
    watermark: datetime
    event_id: str | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    lateness_s: float = Field(ge=0)
    reason: Literal["late", "clock_skew"] = Field(
        default="late", exclude_if=lambda v: v == "late"
    )
    received_at: datetime | None = Field(default=None, exclude_if=lambda v: v is None)


# The pseudo-KPI of evidence that a service went silent: every one of its
# series had `no_data` windows.
SILENCE = "telemetry"


class Evidence(_Record):
    """One anomalous KPI window cited in an incident or an early warning."""

    layer: Layer
    service: str
    kpi: str
    dimension: Dimension
    direction: Literal["up", "down"]
    value: float
    expected: float | None
    score: float
    onset: datetime
    window_start: datetime

    @classmethod
    def from_anomaly(cls, a: Anomaly, onset: datetime) -> Evidence:
        return cls(
            layer=a.layer,
            service=a.service,
            kpi=a.kpi,
            dimension=a.dimension,
            direction=a.direction,
            value=a.value,
            expected=a.expected,
            score=a.score,
            onset=onset,
            window_start=a.window_start,
        )

    @classmethod
    def silence(cls, layer: Layer, service: str, since: datetime) -> Evidence:
        """A service that sends no telemetry at all since `since`."""
        return cls(
            layer=layer,
            service=service,
            kpi=SILENCE,
            dimension="availability",
            direction="down",
            value=0.0,
            expected=None,
            score=1.0,
            onset=since,
            window_start=since,
        )

    def describe(self) -> str:
        if self.kpi == SILENCE:
            return f"no telemetry from {self.service} since {self.onset:%H:%M}"
        base = "?" if self.expected is None else f"{self.expected:.4g}"
        return (
            f"{self.layer.value}/{self.service} {self.kpi} {self.value:.4g} "
            f"(baseline {base}), {self.direction} since {self.onset:%H:%M}"
        )


class Candidate(_Record):
    """A possible root cause, with the evidence and reasons behind its rank."""

    service: str
    layer: Layer | None
    rank: int
    score: float
    onset: datetime
    distance: int | None
    reasons: list[str]
    evidence: list[Evidence]


class Change(_Record):
    """A deploy or other change of a service, as context for what follows it."""

    id: str
    time: datetime
    layer: Layer
    service: str
    change_type: str
    version: str | None
    description: str | None

    def describe(self) -> str:
        what = self.change_type.replace("_", " ")
        version = f" {self.version}" if self.version else ""
        return f"{what}{version} of {self.service} at {self.time:%H:%M:%S}"


class EarlyWarning(_Record):
    """Deep-stack anomalies on a path to users, before users feel anything.

    `service` is where the trouble showed first; `services` every service that
    joined since, in order of onset. The same `id` is published again, with
    status "updated", each time another service joins, and a last time with
    status "ended" when its trouble has not shown outside an open incident
    for the correlation's cool-down (30 minutes by default): it is over, or
    an incident that lists it carries it. Consumers upsert by `id`.
    """

    id: str
    service: str
    layer: Layer
    onset: datetime
    published_at: datetime
    at_risk: list[str]
    evidence: list[Evidence]
    services: list[str] = []
    status: Literal["open", "updated", "ended"] = "open"
    # Deploys and other changes of these services shortly before the onset.
    changes: list[Change] = []
    # Its services ranked as for an incident: where the trouble started.
    root_causes: list[Candidate] = []


class DataGap(_Record):
    """A service that stopped sending telemetry while its users were fine.

    Missing data is a data-quality signal for whoever runs the telemetry
    pipeline, not an outage to page the service's owners for: it opens after
    a few silent windows with no user-facing symptom, and closes when data
    flows again. If users are hit meanwhile, the incident cites the silence
    as evidence instead. Consumers upsert by `id`.
    """

    id: str
    status: Literal["open", "closed"]
    service: str
    layer: Layer
    since: datetime
    until: datetime | None
    published_at: datetime
    users: list[str]


class Incident(_Record):
    """A user-facing degradation, its probable root causes and its chain.

    The same `id` is published when the incident opens, each time its picture
    changes, and when it resolves; consumers upsert by it.
    """

    id: str
    status: Literal["open", "updated", "resolved"]
    title: str
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    user_facing: list[Evidence]
    root_causes: list[Candidate]
    chain: list[Evidence]
    lead_time_s: float | None
    early_warnings: list[str]
    # Deploys and other changes in its scope shortly before its onset.
    changes: list[Change] = []
    # The user-facing service whose symptom opened it; the key it is
    # published under, so all its records stay in order on one partition.
    service: str = ""


# Everything the main dataflow publishes.
Record = KpiScore | Anomaly | Incident | EarlyWarning | DataGap | DeadLetter | LateEvent
