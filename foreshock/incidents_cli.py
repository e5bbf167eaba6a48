"""`foreshock incidents`: open and recent incidents, as a terminal list.

The incidents topic holds every version of every incident (opened, each
update, resolved), keyed by id. The command reads it from the start, keeps
the latest version of each incident, and lists the open ones first, newest
first, then those resolved since a given time.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from connectors.kafka import MissingTopicError, consume_all
from connectors.messages import RawMessage
from foreshock.config import Settings
from foreshock.feedback import parse_duration
from foreshock.records import Incident
from foreshock.report import report_url

__all__ = ["latest_by_id", "list_incidents", "parse_time", "read_topic", "show"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

_INDENT = " " * 10


def read_topic(settings: Settings, topic: str, model: type[M]) -> list[M]:
    """Every record of `topic` as `model`, in the order Kafka holds them.

    Values may be native JSON or CloudEvents of either mode (see the README).
    A record that is not a `model` is reported on standard error with its
    offset and left out.
    """
    k = settings.kafka
    try:
        messages = consume_all(k.bootstrap_servers, topic, config=k.client)
    except MissingTopicError as error:
        raise MissingTopicError(_missing(settings, topic)) from error
    records = []
    for message in messages:
        try:
            records.append(model.model_validate(_document(message)))
        except (ValueError, ValidationError) as error:
            print(
                f"skipped {message.topic}:{message.partition}@{message.offset}: "
                f"not a {model.__name__} ({str(error).splitlines()[0]})",
                file=sys.stderr,
            )
    return records


def _missing(settings: Settings, topic: str) -> str:
    """What to check when a topic to read is not there.

    `foreshock run` creates its output topics when it starts, so a missing
    one is most often a setting that names another topic, or another broker,
    than the run writes to.
    """
    named_by = [f"topics.{field}" for field, name in settings.topics if name == topic]
    setting = " or ".join(named_by) or "its setting"
    return (
        f"Kafka topic {topic!r} ({setting}) does not exist on "
        f"{settings.kafka.bootstrap_servers!r}; check {setting} and "
        "kafka.bootstrap_servers against those of `foreshock run`, or start "
        "`foreshock run`, which creates it"
    )


def _document(message: RawMessage) -> object:
    document = json.loads(message.value or b"null")
    # A structured CloudEvent wraps the record in `data`; in binary mode the
    # value is the record itself.
    if isinstance(document, dict) and "specversion" in document:
        return document.get("data")
    return document


def latest_by_id(incidents: Iterable[Incident]) -> list[Incident]:
    """The last version of each incident; later records replace earlier ones."""
    latest: dict[str, Incident] = {}
    for incident in incidents:
        latest[incident.id] = incident
    return list(latest.values())


def list_incidents(
    incidents: Iterable[Incident],
    since: datetime,
    only_open: bool = False,
    base_url: str | None = None,
) -> str:
    """The listing: open incidents, then those resolved since `since`."""
    current = latest_by_id(incidents)
    opened = sorted(
        (i for i in current if i.resolved_at is None),
        key=lambda i: i.opened_at,
        reverse=True,
    )
    resolved = [] if only_open else _resolved_since(current, since)
    head = f"{len(opened)} open"
    if not only_open:
        # `since` keeps the offset it was given with, but the listing says
        # every time in UTC.
        utc = since.astimezone(UTC)
        head += f", {len(resolved)} resolved since {utc:%Y-%m-%d %H:%M}Z"
    older = sum(1 for i in current if i.resolved_at is not None) - len(resolved)
    if older and not only_open:
        # Replayed data is often older than the default day: say it is there.
        head += f" ({older} resolved before; widen --since to see them)"
    blocks = [_block(i, base_url) for i in (*opened, *resolved)]
    return "\n\n".join([head, *blocks]) + "\n"


def _resolved_since(current: list[Incident], since: datetime) -> list[Incident]:
    done = [i for i in current if i.resolved_at is not None and i.resolved_at >= since]
    return sorted(done, key=lambda i: i.resolved_at or since, reverse=True)


def _block(incident: Incident, base_url: str | None) -> str:
    state = "RESOLVED" if incident.resolved_at is not None else "OPEN"
    lines = [f"{state:<9} {incident.id}  {incident.title}"]
    when = f"opened {incident.opened_at:%Y-%m-%d %H:%M}Z"
    if incident.resolved_at is not None:
        lasted = (incident.resolved_at - incident.opened_at).total_seconds()
        when += f", resolved {incident.resolved_at:%H:%M}Z after {lasted / 60:.0f} min"
    else:
        when += f", last updated {incident.updated_at:%H:%M}Z"
    lines.append(_INDENT + when)
    if incident.root_causes:
        top = incident.root_causes[0]
        layer = f"{top.layer.value}, " if top.layer is not None else ""
        cause = f"root cause #1 {top.service} ({layer}score {top.score:.2f})"
        if incident.lead_time_s is not None:
            cause += f"; lead time {incident.lead_time_s / 60:.0f} min"
        lines.append(_INDENT + cause)
    url = report_url(base_url, incident.id)
    if url is not None:
        lines.append(_INDENT + f"report {url}")
    return "\n".join(lines)


def parse_time(text: str, now: datetime, future: bool = False) -> datetime:
    """A moment as ISO 8601 (UTC if no zone is given) or a duration from `now`.

    A duration counts back from `now` ("since 2h"), or forward with `future`
    ("until 2h").
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            span = parse_duration(text)
            return now + span if future else now - span
        except ValueError:
            raise ValueError(
                f"cannot read {text!r} as a time; give an ISO 8601 time such as "
                "2025-03-04T09:00Z or a duration such as 2h"
            ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def show(settings: Settings, since: str, only_open: bool) -> int:
    """Print the listing for `foreshock incidents`."""
    moment = parse_time(since, datetime.now(UTC))
    incidents = read_topic(settings, settings.topics.incidents, Incident)
    print(
        list_incidents(incidents, moment, only_open, settings.reports.base_url),
        end="",
    )
    return 0
