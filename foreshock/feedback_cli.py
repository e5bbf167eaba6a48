"""`foreshock feedback` and `foreshock silence`: say back what an alert was.

Both publish a `Feedback` record to the feedback topic, keyed by what it is
about. A verdict's scope is taken from its target (found on the target's own
topic) unless given; a silence's scope is always given.
"""

from __future__ import annotations

import difflib
import getpass
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from connectors.kafka import ensure_topics, produce_all
from connectors.messages import OutMessage
from foreshock.config import Settings
from foreshock.errors import UserError
from foreshock.feedback import Feedback, Scope, TargetKind, Verdict, parse_duration
from foreshock.incidents_cli import latest_by_id, parse_time, read_topic
from foreshock.layers import Layer
from foreshock.records import Anomaly, EarlyWarning, Evidence, Incident
from foreshock.topology import Topology

__all__ = [
    "Target",
    "TargetNotFoundError",
    "describe",
    "feedback_command",
    "find_target",
    "publish",
    "say",
    "silence",
    "silence_command",
]


@dataclass(frozen=True, slots=True)
class Target:
    """What a verdict is about: its id and kind, the series, the detector."""

    id: str
    kind: TargetKind
    scopes: list[Scope]
    detector: str | None = None


class TargetNotFoundError(UserError, LookupError):
    """The anomaly, incident or early warning named is not on its topic."""


def find_target(settings: Settings, kind: TargetKind, target_id: str) -> Target:
    """Look the target up on its topic; its series become the verdict's scope."""
    topics = settings.topics
    if kind == "anomaly":
        found = read_topic(settings, topics.anomalies, Anomaly)
        anomaly = next((a for a in found if a.id == target_id), None)
        if anomaly is not None:
            scope = Scope(service=anomaly.service, layer=anomaly.layer, kpi=anomaly.kpi)
            return Target(target_id, kind, [scope], anomaly.detector)
        topic = topics.anomalies
    elif kind == "incident":
        incidents = latest_by_id(read_topic(settings, topics.incidents, Incident))
        incident = next((i for i in incidents if i.id == target_id), None)
        if incident is not None:
            return Target(target_id, kind, _scopes(incident.user_facing))
        topic = topics.incidents
    else:
        warnings = read_topic(settings, topics.early_warnings, EarlyWarning)
        latest = {w.id: w for w in warnings}
        if target_id in latest:
            return Target(target_id, kind, _scopes(latest[target_id].evidence))
        topic = topics.early_warnings
    raise TargetNotFoundError(
        f"no {kind.replace('_', ' ')} {target_id!r} on topic {topic!r}; check the "
        "id, or give --service (and --layer, --kpi) to scope the verdict yourself"
    )


def _scopes(evidence: list[Evidence]) -> list[Scope]:
    seen = {(e.service, e.layer, e.kpi): None for e in evidence}
    return [Scope(service=s, layer=layer, kpi=kpi) for s, layer, kpi in seen]


def say(
    settings: Settings,
    kind: TargetKind,
    target_id: str,
    verdict: Verdict,
    lasting: timedelta,
    given: Scope | None = None,
    author: str | None = None,
    comment: str = "",
    now: datetime | None = None,
) -> Feedback:
    """Publish a verdict on an anomaly, incident or early warning."""
    moment = now or datetime.now(UTC)
    if given is not None:
        target = Target(target_id, kind, [given])
    else:
        target = find_target(settings, kind, target_id)
    feedback = Feedback.new(
        verdict,
        target.scopes,
        author or _user(),
        moment,
        target_id=target.id,
        target_kind=kind,
        detector=target.detector,
        comment=comment,
        expires_at=None if verdict == "confirmed" else moment + lasting,
    )
    publish(settings, feedback, key=target.id)
    return feedback


def silence(
    settings: Settings,
    scope: Scope,
    until: datetime,
    reason: str,
    starts_at: datetime | None = None,
    author: str | None = None,
    now: datetime | None = None,
) -> Feedback:
    """Publish a silence of a service, or of one layer or KPI of it."""
    feedback = Feedback.new(
        "silence",
        [scope],
        author or _user(),
        now or datetime.now(UTC),
        starts_at=starts_at,
        expires_at=until,
        comment=reason,
    )
    publish(settings, feedback, key=scope.service)
    return feedback


def publish(settings: Settings, feedback: Feedback, key: str) -> None:
    """Write one feedback record to the feedback topic and wait for Kafka."""
    k = settings.kafka
    message = OutMessage(
        settings.topics.feedback,
        key.encode(),
        feedback.model_dump_json().encode(),
        (("foreshock-record", b"Feedback/1"),),
    )
    client = k.client_config()
    ensure_topics(client, [settings.topics.feedback], create=k.create_topics)
    produce_all(k.bootstrap_servers, [message], config=k.client)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def describe(feedback: Feedback, topic: str) -> str:
    """One line saying what was published, for the terminal."""
    what: str = feedback.verdict
    if feedback.target_id is not None:
        kind = (feedback.target_kind or "target").replace("_", " ")
        what += f" on {kind} {feedback.target_id}"
    scopes = ", ".join(s.describe() for s in feedback.scopes)
    until = ""
    if feedback.expires_at is not None:
        until = f" until {feedback.expires_at:%Y-%m-%d %H:%M}Z"
    return f"published {what} to {topic}: {scopes}{until}"


# -- the commands --------------------------------------------------------------


def feedback_command(
    settings: Settings,
    kind: TargetKind,
    target_id: str,
    verdict: Verdict,
    lasting: str,
    scope: tuple[str | None, str | None, str | None],
    author: str | None,
    comment: str,
) -> int:
    """`foreshock feedback`: publish one verdict, print what it covers."""
    service, layer, kpi = scope
    given = _scope(service, layer, kpi) if service else None
    feedback = say(
        settings,
        kind,
        target_id,
        verdict,
        parse_duration(lasting),
        given,
        author,
        comment,
    )
    print(describe(feedback, settings.topics.feedback))
    _remind(settings)
    return 0


def silence_command(
    settings: Settings,
    scope: tuple[str, str | None, str | None],
    until: str,
    reason: str,
    start: str | None,
    author: str | None,
) -> int:
    """`foreshock silence`: publish one silence, print what it covers."""
    now = datetime.now(UTC)
    end = parse_time(until, now, future=True)
    begin = None if start is None else parse_time(start, now, future=True)
    covered = _scope(*scope)
    feedback = silence(settings, covered, end, reason, begin, author, now=now)
    print(describe(feedback, settings.topics.feedback))
    _unknown_service(settings, covered.service)
    _remind(settings)
    return 0


def _unknown_service(settings: Settings, service: str) -> None:
    """Say so when the configured call graph does not know `service`: a
    silence of a mistyped name silences nothing."""
    path = settings.correlation.topology
    if path is None:
        return
    known = Topology.load(path).services()
    if service in known:
        return
    close = difflib.get_close_matches(service, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    print(
        f"note: {service!r} is not a service of the call graph in "
        f"correlation.topology ({path}){hint}",
        file=sys.stderr,
    )


def _scope(service: str | None, layer: str | None, kpi: str | None) -> Scope:
    if not service:
        raise ValueError("name the service the scope covers (--service)")
    return Scope(service=service, layer=Layer(layer) if layer else None, kpi=kpi)


def _remind(settings: Settings) -> None:
    if not settings.feedback.enabled:
        print(
            "note: feedback.enabled is off in this configuration; `foreshock run` "
            "applies feedback only when it is on",
            file=sys.stderr,
        )
