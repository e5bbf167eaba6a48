"""`foreshock incidents`: the listing of open and recently resolved incidents."""

from __future__ import annotations

from datetime import UTC, datetime

from foreshock.incidents_cli import list_incidents, parse_time
from foreshock.records import Incident

NOW = datetime(2022, 8, 23, 18, 0, tzinfo=UTC)


def _utc(hour: int, minute: int) -> datetime:
    return datetime(2022, 8, 23, hour, minute, tzinfo=UTC)


def _resolved(name: str, opened: datetime, resolved: datetime) -> Incident:
    return Incident(
        id=name,
        status="resolved",
        title=f"{name} degraded",
        opened_at=opened,
        updated_at=resolved,
        resolved_at=resolved,
        user_facing=[],
        root_causes=[],
        chain=[],
        lead_time_s=None,
        early_warnings=[],
    )


def test_a_since_with_an_offset_is_said_and_applied_in_utc() -> None:
    # 16:00 at +02:00 is 14:00 UTC: an incident resolved at 14:30Z is after
    # it, one resolved at 13:30Z (15:30 at +02:00) before it.
    since = parse_time("2022-08-23T16:00+02:00", NOW)
    incidents = [
        _resolved("early", _utc(13, 0), _utc(13, 30)),
        _resolved("late", _utc(14, 10), _utc(14, 30)),
    ]

    listing = list_incidents(incidents, since)

    assert listing == (
        "0 open, 1 resolved since 2022-08-23 14:00Z (1 resolved before; widen "
        "--since to see them)\n"
        "\n"
        "RESOLVED  late  late degraded\n"
        "          opened 2022-08-23 14:10Z, resolved 14:30Z after 20 min\n"
    )


def test_a_since_in_utc_is_said_as_given() -> None:
    since = parse_time("2022-08-23T16:00Z", NOW)

    assert list_incidents([], since) == "0 open, 0 resolved since 2022-08-23 16:00Z\n"
