"""The suppression book: scopes, expiry, labels and precision per detector."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from foreshock.decode import Rejection
from foreshock.feedback import (
    Feedback,
    Precision,
    Scope,
    SuppressionBook,
    decode_feedback,
    parse_duration,
)
from foreshock.layers import Layer

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
API, DB = Layer.API, Layer.DATABASE


def _verdict(
    verdict: str,
    target: str,
    scope: Scope,
    at: datetime = T0,
    hours: float | None = 1,
    detector: str | None = None,
) -> Feedback:
    return Feedback.new(
        verdict,  # type: ignore[arg-type]
        [scope],
        "alice",
        at,
        target_id=target,
        expires_at=None if hours is None else at + hours * HOUR,
        detector=detector,
    )


def test_a_scope_matches_what_it_names_and_anything_it_leaves_out() -> None:
    service = Scope(service="orders")
    series = Scope(service="orders", layer=API, kpi="error_rate")

    assert service.matches(API, "orders", "latency_p95_ms")
    assert service.matches(DB, "orders", "query_p95_ms")
    assert not service.matches(API, "payments", "error_rate")
    assert series.matches(API, "orders", "error_rate")
    assert not series.matches(API, "orders", "latency_p95_ms")
    assert not series.matches(DB, "orders", "error_rate")


def test_a_verdict_holds_from_when_it_was_given_until_it_expires() -> None:
    book = SuppressionBook()
    book.add(_verdict("not_anomaly", "a1", Scope(service="orders", kpi="error_rate")))

    def at(minutes: float) -> str | None:
        when = T0 + timedelta(minutes=minutes)
        return book.suppressed(API, "orders", "error_rate", when)

    assert at(-1) is None
    assert at(0) == "not_anomaly by alice until 2025-03-04 11:00Z"
    assert at(59.9) == "not_anomaly by alice until 2025-03-04 11:00Z"
    assert at(60) is None
    assert book.suppressed(API, "orders", "latency_p95_ms", T0) is None


def test_a_silence_covers_its_scope_between_its_start_and_end() -> None:
    book = SuppressionBook()
    silence = Feedback.new(
        "silence",
        [Scope(service="shop-db", layer=DB)],
        "bob",
        T0,
        starts_at=T0 + HOUR,
        expires_at=T0 + 3 * HOUR,
        comment="index rebuild",
    )

    book.add(silence)

    reason = "silenced by bob until 2025-03-04 13:00Z: index rebuild"
    assert book.suppressed(DB, "shop-db", "query_p95_ms", T0) is None
    assert book.suppressed(DB, "shop-db", "query_p95_ms", T0 + HOUR) == reason
    assert book.suppressed(DB, "shop-db", "queries_per_s", T0 + 2 * HOUR) == reason
    assert book.suppressed(API, "shop-db", "error_rate", T0 + 2 * HOUR) is None
    assert book.suppressed(DB, "shop-db", "query_p95_ms", T0 + 3 * HOUR) is None


def test_confirmed_labels_without_suppressing() -> None:
    book = SuppressionBook()

    book.add(_verdict("confirmed", "i1", Scope(service="web"), hours=None))

    assert book.suppressed(Layer.FRONTEND, "web", "page_load_p95_ms", T0) is None
    assert book.label("i1") == "confirmed"
    assert book.label("i2") is None


def test_precision_counts_each_target_once_with_its_latest_verdict() -> None:
    book = SuppressionBook(default_detector="ensemble")
    web = Scope(service="web")
    for feedback in [
        _verdict("confirmed", "a1", web, detector="hst"),
        _verdict("not_anomaly", "a2", web, detector="hst"),
        _verdict("confirmed", "a3", web, detector="hst"),
        _verdict("expected", "a4", web, detector="hst"),
        # a2 judged again later: the on-call changed their mind.
        _verdict("confirmed", "a2", web, T0 + HOUR, detector="hst"),
        # An incident names no detector: it counts for the flow's own.
        _verdict("not_anomaly", "i1", web),
        _verdict("confirmed", "i2", web, hours=None),
        _verdict("not_anomaly", "i3", web),
    ]:
        book.add(feedback)

    precision = book.precision()

    # hst: a1, a2, a3 confirmed; a4 "expected" counts neither way.
    # ensemble: i2 confirmed; i1 and i3 not anomalies: 1 / 3.
    assert precision == {
        "ensemble": Precision(confirmed=1, not_anomaly=2),
        "hst": Precision(confirmed=3, not_anomaly=0),
    }
    assert precision["hst"].value == 1.0
    assert precision["ensemble"].value == pytest.approx(1 / 3)
    assert Precision(0, 0).value is None


def test_the_same_feedback_twice_counts_once() -> None:
    book = SuppressionBook()
    verdict = _verdict("not_anomaly", "a1", Scope(service="web"), detector="hst")

    book.add(verdict)
    book.add(verdict)

    assert book.precision() == {"hst": Precision(confirmed=0, not_anomaly=1)}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"verdict": "not_anomaly", "target_id": "a1"}, "needs expires_at"),
        (
            {"verdict": "silence", "target_id": "a1", "expires_at": T0 + HOUR},
            "a silence has no target",
        ),
        ({"verdict": "expected", "expires_at": T0 + HOUR}, "needs the id it judges"),
        (
            {"verdict": "not_anomaly", "target_id": "a1", "expires_at": T0},
            "is not after the start",
        ),
        (
            {"verdict": "confirmed", "target_id": "a1", "scopes": []},
            "at least one scope",
        ),
    ],
)
def test_inconsistent_feedback_is_refused(
    fields: dict[str, object], message: str
) -> None:
    document = {
        "id": "f1",
        "scopes": [{"service": "web"}],
        "author": "alice",
        "created_at": T0,
        **fields,
    }

    with pytest.raises(ValidationError, match=message):
        Feedback.model_validate(document)


def test_bad_feedback_bytes_are_rejected_with_the_field_at_fault() -> None:
    found = decode_feedback(b'{"id": "f1", "verdict": "maybe"}')

    assert isinstance(found, Rejection)
    assert found.reason == "feedback_schema"
    assert found.detail.startswith("verdict: Input should be ")
    assert decode_feedback(b"  ") == Rejection(
        "empty_payload", "the record's value is empty"
    )


def test_durations() -> None:
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("2d") == timedelta(days=2)
    with pytest.raises(ValueError, match="cannot read 'soon' as a duration"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="cannot read '24 hours'"):
        parse_duration("24 hours")
