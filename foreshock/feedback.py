"""What on-call engineers say back: verdicts on alerts, and silences.

A `Feedback` record is one verdict on an anomaly, an incident or an early
warning, or a silence of part of the stack. Verdicts go to the `feedback`
topic, and the flow reads them into a `SuppressionBook`:

- "not_anomaly" (the detector was wrong) and "expected" (right, but nothing to
  act on: a release, a sale, a maintenance) suppress the target's series until
  the verdict expires;
- a silence suppresses what its scope names until its end;
- "confirmed" suppresses nothing; it is a label.

A suppressed series neither pages nor warns; its anomalies are still
published, so dashboards and benchmarks keep seeing them. Verdicts are also
counted per detector, so "not_anomaly" against "confirmed" gives each
detector's precision as judged by the people it paged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    ValidationError,
    model_validator,
)

from connectors.messages import RawBatch, RawMessage
from foreshock.decode import Rejection, to_dead_letter
from foreshock.layers import Layer
from foreshock.records import DeadLetter, stable_id

__all__ = [
    "Feedback",
    "Precision",
    "Scope",
    "SuppressionBook",
    "TargetKind",
    "Verdict",
    "decode_feedback",
    "feedback_of_batch",
    "parse_duration",
]

log = logging.getLogger(__name__)

Verdict = Literal["not_anomaly", "expected", "confirmed", "silence"]
TargetKind = Literal["anomaly", "incident", "early_warning"]

# Verdicts that mute their scope until they expire; "confirmed" only labels.
SUPPRESSING: frozenset[str] = frozenset({"not_anomaly", "expected", "silence"})


class Scope(BaseModel):
    """Which series a verdict covers: a service, optionally one layer and KPI.

    A field left out matches any value; the service is always named, so that
    no verdict can mute the whole stack.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str
    layer: Layer | None = None
    kpi: str | None = None

    def matches(self, layer: Layer, service: str, kpi: str) -> bool:
        return (
            service == self.service
            and self.layer in (None, layer)
            and self.kpi in (None, kpi)
        )

    def describe(self) -> str:
        parts = [self.layer.value if self.layer else "*", self.service, self.kpi]
        return "/".join(p or "*" for p in parts)


class Feedback(BaseModel):
    """One verdict on an alert, or one silence, as published to `feedback`.

    `target_id` is the id of the anomaly, incident or early warning judged
    (None for a silence). `scopes` are the series it covers, taken from the
    target (an incident's user-facing series, say) unless given. A
    suppressing verdict holds from `starts_at` (default: when it was given)
    until `expires_at`, both compared with the time of the KPI windows.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    id: str
    verdict: Verdict
    target_id: str | None = None
    target_kind: TargetKind | None = None
    scopes: list[Scope]
    detector: str | None = None
    author: str
    comment: str = ""
    created_at: AwareDatetime
    starts_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Feedback:
        if not self.scopes:
            raise ValueError("feedback needs at least one scope naming a service")
        if self.verdict == "silence" and self.target_id is not None:
            raise ValueError("a silence has no target; give only its scope")
        if self.verdict != "silence" and self.target_id is None:
            raise ValueError(f"a {self.verdict!r} verdict needs the id it judges")
        if self.verdict in SUPPRESSING and self.expires_at is None:
            raise ValueError(f"a {self.verdict!r} verdict needs expires_at")
        if self.expires_at is not None and self.expires_at <= self.start:
            raise ValueError(
                f"expires_at {self.expires_at.isoformat()!r} is not after the "
                f"start {self.start.isoformat()!r}; give a later end"
            )
        return self

    @property
    def start(self) -> datetime:
        return self.starts_at if self.starts_at is not None else self.created_at

    @classmethod
    def new(
        cls,
        verdict: Verdict,
        scopes: list[Scope],
        author: str,
        created_at: datetime,
        **fields: object,
    ) -> Feedback:
        """A feedback record with an id derived from what it says and when."""
        target = fields.get("target_id")
        keys = [s.describe() for s in scopes]
        ident = stable_id("feedback", verdict, target, *keys, author, created_at)
        return cls.model_validate(
            {
                "id": ident,
                "verdict": verdict,
                "scopes": scopes,
                "author": author,
                "created_at": created_at,
                **fields,
            }
        )


@dataclass(frozen=True, slots=True)
class _Suppression:
    scope: Scope
    start: datetime
    end: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Precision:
    """How a detector's alerts were judged: confirmed against not anomalies."""

    confirmed: int
    not_anomaly: int

    @property
    def value(self) -> float | None:
        judged = self.confirmed + self.not_anomaly
        return self.confirmed / judged if judged else None


@dataclass
class SuppressionBook:
    """Active suppressions, labels and per-detector precision from feedback.

    Feedback may arrive more than once (the topic is read again after a
    restart): a record already seen, by id, changes nothing. For precision
    each target counts once, with its latest verdict. Expired suppressions are
    dropped as window time passes them, so the book stays as small as what is
    in force.
    """

    default_detector: str = "unknown"
    _seen: set[str] = field(default_factory=set)
    _suppressions: list[_Suppression] = field(default_factory=list)
    # target id -> (given at, detector, verdict): the latest verdict wins.
    _verdicts: dict[str, tuple[datetime, str, str]] = field(default_factory=dict)

    def add(self, feedback: Feedback) -> None:
        """Take one feedback record into account."""
        if feedback.id in self._seen:
            return
        self._seen.add(feedback.id)

        if feedback.verdict in SUPPRESSING:
            assert feedback.expires_at is not None
            reason = _reason(feedback)
            self._suppressions.extend(
                _Suppression(s, feedback.start, feedback.expires_at, reason)
                for s in feedback.scopes
            )
        if feedback.target_id is not None:
            self._record_verdict(feedback)
        log.info(
            "feedback verdict=%s target=%s scopes=%s author=%s",
            feedback.verdict,
            feedback.target_id,
            ",".join(s.describe() for s in feedback.scopes),
            feedback.author,
        )

    def _record_verdict(self, feedback: Feedback) -> None:
        assert feedback.target_id is not None
        detector = feedback.detector or self.default_detector
        known = self._verdicts.get(feedback.target_id)
        if known is None or known[0] <= feedback.created_at:
            entry = (feedback.created_at, detector, feedback.verdict)
            self._verdicts[feedback.target_id] = entry

    def suppressed(
        self, layer: Layer, service: str, kpi: str, at: datetime
    ) -> str | None:
        """Why the series is muted at `at`, or None when it may alert."""
        self._suppressions = [s for s in self._suppressions if s.end > at]
        for s in self._suppressions:
            if s.start <= at and s.scope.matches(layer, service, kpi):
                return s.reason
        return None

    def label(self, target_id: str) -> str | None:
        """The latest verdict given on an anomaly, incident or early warning."""
        known = self._verdicts.get(target_id)
        return None if known is None else known[2]

    def precision(self) -> dict[str, Precision]:
        """Per detector, how many of its judged alerts were confirmed or not."""
        counts: dict[str, list[int]] = {}
        for _, detector, verdict in self._verdicts.values():
            pair = counts.setdefault(detector, [0, 0])
            if verdict == "confirmed":
                pair[0] += 1
            elif verdict == "not_anomaly":
                pair[1] += 1
        return {d: Precision(c, n) for d, (c, n) in sorted(counts.items())}


def _reason(feedback: Feedback) -> str:
    assert feedback.expires_at is not None
    what = "silenced" if feedback.verdict == "silence" else feedback.verdict
    text = f"{what} by {feedback.author} until {feedback.expires_at:%Y-%m-%d %H:%M}Z"
    return f"{text}: {feedback.comment}" if feedback.comment else text


def decode_feedback(data: bytes) -> Feedback | Rejection:
    """One feedback record from its JSON, or why it cannot be used."""
    if not data.strip():
        return Rejection("empty_payload", "the record's value is empty")
    try:
        return Feedback.model_validate_json(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        return Rejection("feedback_schema", f"{where}: {first['msg']}")


def feedback_of_batch(batch: RawBatch) -> Iterable[Feedback | DeadLetter]:
    """The feedback records of a batch; anything unusable becomes a dead letter."""
    return [_one(message) for message in batch.messages if message.value is not None]


def _one(message: RawMessage) -> Feedback | DeadLetter:
    assert message.value is not None
    found = decode_feedback(message.value)
    if isinstance(found, Rejection):
        return to_dead_letter(message, found)
    return found


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """A duration written as `90s`, `30m`, `24h`, `7d`, `1w` or `1h30m`."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not parts or _DURATION.sub("", compact).strip():
        raise ValueError(
            f"cannot read {text!r} as a duration; write it like 30m, 24h or 7d"
        )
    return timedelta(seconds=sum(float(n) * _UNIT_S[u] for n, u in parts))
