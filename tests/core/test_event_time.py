"""Event time under real conditions: sliding windows far from their alignment,
idle shards, clocks that lie and backlogs replayed after downtime."""

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.messages import RawBatch, RawMessage
from flows.steps import WindowLogic
from foreshock.config import WindowSettings
from foreshock.correlation import CorrelationConfig, Correlator, ShardProgress
from foreshock.decode import InputLimits
from foreshock.layers import Layer
from foreshock.records import Anomaly, Incident, KpiRecord, KpiScore, LateEvent
from foreshock.schema import EVENT_ADAPTER, Event
from foreshock.windows import EPOCH, Late, WindowPolicy, WindowSpec, WindowStore
from tests.cases import CASES, events, native

ALIGN_2000 = datetime(2000, 1, 1, tzinfo=UTC)
CASE_ALIGN = datetime(2025, 3, 4, tzinfo=UTC)
T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


def _expected(case: str) -> dict[str, object]:
    return json.loads((CASES / "expected.json").read_text())[case]  # type: ignore[no-any-return]


def _micros(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def _event(at: datetime, service: str = "checkout-api") -> Event:
    return EVENT_ADAPTER.validate_python(
        {
            "time": at,
            "layer": "api",
            "service": service,
            "payload": {"kind": "http_request", "status": 200, "duration_ms": 50.0},
        }
    )


def _message(
    offset: int, at: datetime, service: str, received: datetime | None
) -> RawMessage:
    doc = {
        "time": at.isoformat(),
        "layer": "api",
        "service": service,
        "payload": {"kind": "http_request", "status": 200, "duration_ms": 50.0},
    }
    received_ms = None if received is None else _micros(received) // 1000
    return RawMessage(
        "telemetry", 0, offset, service.encode(), json.dumps(doc).encode(), received_ms
    )


def _requests(records: list[KpiRecord]) -> dict[str, tuple[float | None, str]]:
    return {
        f"{r.service} {r.window_start:%H:%M:%S.%f}": (
            None if r.value is None else round(r.value * r_len(r), 6),
            r.state,
        )
        for r in records
        if r.kpi == "requests_per_s"
    }


def r_len(record: KpiRecord) -> float:
    return (record.window_end - record.window_start).total_seconds()


# --- sliding windows (C23) --------------------------------------------------


def _variant(name: str) -> list[Event]:
    # The case's requests carry no status; the native schema wants one.
    return [
        EVENT_ADAPTER.validate_python(native({**case, "status": 200}))
        for case in events("C23")
        if case["variant"] == name
    ]


C23_SPECS = {
    # 10-minute windows every 3 minutes; 1.6 s windows every 0.7 s.
    "A": WindowSpec(600, 30, ALIGN_2000, slide_s=180),
    "B": WindowSpec(1.6, 30, ALIGN_2000, slide_s=0.7),
}


@pytest.mark.parametrize("variant", ["A", "B"])
def test_each_event_counts_in_every_sliding_window_that_holds_it_c23(
    variant: str,
) -> None:
    spec = C23_SPECS[variant]
    expected = _expected("C23")[f"variant_{variant}"]
    assert isinstance(expected, dict)

    per_event = []
    for event in _variant(variant):
        store = WindowStore(spec)
        assert store.add(event) is None
        records = store.close_all()
        per_event.append(sum(r.events for r in records if r.kpi == "requests_per_s"))

    assert per_event == expected["windows_per_event"]


@pytest.mark.parametrize("variant", ["A", "B"])
def test_a_sliding_variant_in_one_store_has_nothing_late_c23(variant: str) -> None:
    spec = C23_SPECS[variant]
    expected = _expected("C23")[f"variant_{variant}"]
    assert isinstance(expected, dict)
    store = WindowStore(spec)

    refused = [store.add(event) for event in _variant(variant)]
    records = store.close_ready() + store.close_all()

    assert refused.count(None) == len(refused) == 12
    assert expected["late_or_dropped"] == 0
    counted = sum(r.events for r in records if r.kpi == "requests_per_s")
    assert counted == sum(expected["windows_per_event"])


@pytest.mark.parametrize("size", [1, 5, 24])
def test_sliding_windows_do_not_depend_on_batching(size: int) -> None:
    # Both variants in one shard, in 2-minute sliding windows every 30 s.
    spec = WindowSpec(120, 30, ALIGN_2000, slide_s=30)
    messages = [
        RawMessage("t", 0, i, None, json.dumps(native({**c, "status": 200})).encode())
        for i, c in enumerate(events("C23"))
    ]

    def run(size: int) -> list[object]:
        logic = WindowLogic(WindowStore(spec), clock=lambda: 0)
        out: list[object] = []
        for i in range(0, len(messages), size):
            out += logic.on_item(RawBatch("t:0", tuple(messages[i : i + size])))[0]
        # Progress reports to the correlator follow the batches; the
        # records do not.
        out += logic.on_eof()[0]
        return [x for x in out if not isinstance(x, ShardProgress)]

    one_by_one = run(1)

    assert run(size) == one_by_one
    assert [x for x in one_by_one if isinstance(x, LateEvent)] == []


def test_far_alignment_windows_are_exact_c23_variant_a() -> None:
    # 2000-01-01 to 2025-03-04 is 9,194 days (7 leap days), so 10:00 is
    # minute 13,239,960 after the alignment: a multiple of 3, a window start.
    spec = C23_SPECS["A"]
    store = WindowStore(spec)

    store.add(_event(T0))
    starts = sorted({r.window_start for r in store.close_all()})

    assert [f"{s:%H:%M}" for s in starts] == ["09:51", "09:54", "09:57", "10:00"]
    assert spec.index(T0) == 13_239_960 // 3


def test_far_alignment_windows_are_exact_c23_variant_b() -> None:
    # 10:30:00 is 794,399,400 s after 2000-01-01: 7,943,994,000 tenths, which
    # is 5 tenths past a multiple of 7, so the last window starts 0.5 s
    # earlier, at index 1,134,856,285, and the one before 0.7 s before that.
    spec = C23_SPECS["B"]
    at = datetime(2025, 3, 4, 10, 30, tzinfo=UTC)
    store = WindowStore(spec)

    store.add(_event(at))
    windows = sorted({(r.window_start, r.window_end) for r in store.close_all()})

    assert spec.index(at) == 1_134_856_285
    assert [(f"{s:%M:%S.%f}", f"{e:%M:%S.%f}") for s, e in windows] == [
        ("29:58.800000", "30:00.400000"),
        ("29:59.500000", "30:01.100000"),
    ]


def test_tumbling_is_a_slide_equal_to_the_length() -> None:
    spec = WindowSpec(60, 30, CASE_ALIGN, slide_s=60)

    assert spec.tumbling
    assert list(spec.indexes(T0 + timedelta(seconds=59))) == [600]


def test_a_slide_longer_than_the_window_is_refused() -> None:
    with pytest.raises(ValueError, match="at most the length"):
        WindowSpec(60, 30, CASE_ALIGN, slide_s=61)


def test_a_late_event_still_counts_in_the_sliding_windows_still_open() -> None:
    # Windows of 2 min every minute, no lateness: at 10:03:00 the windows
    # ending by then (starting 10:01 and before) close; 10:02:30 sits in
    # 10:01 (closed) and 10:02 (open).
    store = WindowStore(WindowSpec(120, 0, CASE_ALIGN, slide_s=60))
    store.add(_event(T0 + timedelta(seconds=10)))
    store.add(_event(T0 + timedelta(minutes=3)))

    refused = store.add(_event(T0 + timedelta(seconds=150)))
    records = store.close_ready() + store.close_all()

    assert isinstance(refused, Late) and f"{refused.window_start:%H:%M}" == "10:01"
    counted = {k[-15:-10]: v for k, v in _requests(records).items()}
    assert counted == {
        "09:59": (1, "ok"),
        "10:00": (1, "ok"),
        "10:01": (None, "no_data"),
        "10:02": (2, "ok"),
        "10:03": (1, "ok"),
    }


# --- idle timeout -------------------------------------------------------------


class _Clock:
    def __init__(self, at: datetime) -> None:
        self.now = _micros(at)

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * 1_000_000)


def _logic(
    policy: WindowPolicy, clock: _Clock, limits: InputLimits | None = None
) -> WindowLogic:
    spec = WindowSpec(60, 30, CASE_ALIGN)
    return WindowLogic(WindowStore(spec, policy=policy), limits=limits, clock=clock)


def test_an_idle_shard_closes_its_windows_by_processing_time() -> None:
    clock = _Clock(T0 + timedelta(seconds=40))
    logic = _logic(WindowPolicy(idle_timeout_s=120), clock)
    messages = [
        _message(i, T0 + timedelta(seconds=10 * i), "checkout-api", None)
        for i in range(5)
    ]

    out, _ = logic.on_item(RawBatch("telemetry:0", tuple(messages)))
    # The shard advanced at 10:00:40 to 10:00:40 event time. Window 10:00
    # needs the watermark at 10:01:00, 50 s of event time away, but the
    # timeout holds it for 120 s: 10:02:40 processing time, when event time
    # is taken to be 10:02:40 and the watermark 10:02:10, past 10:01 too.
    first = logic.notify_at()
    clock.advance(119)
    early, _ = logic.on_notify()
    clock.advance(1)
    closed, _ = logic.on_notify()

    # Nothing closed: the correlator only hears that nothing has.
    nothing_closed = ShardProgress("telemetry:0", EPOCH, {})
    assert list(out) == [nothing_closed] and list(early) == []
    assert first == T0 + timedelta(minutes=2, seconds=40)
    records = [r for r in closed if isinstance(r, KpiRecord)]
    assert _requests(records) == {
        "checkout-api 10:00:00.000000": (5, "ok"),
        "checkout-api 10:01:00.000000": (None, "no_data"),
    }
    assert {r.closed_by for r in records} == {"idle_timeout"}
    # Idle now: no window of another shard waits for this one.
    [progress] = [x for x in closed if isinstance(x, ShardProgress)]
    assert progress.closed_through is None
    # It counts the records of each window it closed, so the correlator
    # knows when all their scores are in.
    assert progress.records == Counter(r.window_end for r in records)
    assert set(progress.records) == {T0 + timedelta(minutes=m) for m in (1, 2)}
    # Window 10:02 closes once the watermark reaches 10:03:00: event time
    # 10:03:30, 170 s of processing time after the last advance.
    assert logic.notify_at() == T0 + timedelta(minutes=3, seconds=30)


def test_without_a_timeout_an_idle_shard_waits_for_events() -> None:
    clock = _Clock(T0)
    logic = _logic(WindowPolicy(), clock)

    logic.on_item(RawBatch("t:0", (_message(0, T0, "checkout-api", None),)))

    assert logic.notify_at() is None


def test_an_event_after_an_idle_close_is_late_not_merged() -> None:
    clock = _Clock(T0)
    logic = _logic(WindowPolicy(idle_timeout_s=60), clock)
    logic.on_item(RawBatch("t:0", (_message(0, T0, "checkout-api", None),)))
    clock.advance(600)
    logic.on_notify()

    out, _ = logic.on_item(
        RawBatch("t:0", (_message(1, T0 + timedelta(seconds=5), "checkout-api", None),))
    )

    late = [x for x in out if isinstance(x, LateEvent)]
    assert [(x.reason, f"{x.window_start:%H:%M}") for x in late] == [("late", "10:00")]


def test_a_resumed_shard_counts_its_idle_time_from_the_restart() -> None:
    # Snapshotted at 10:00 with the shard just advanced; the job resumes at
    # 11:00. The hour it was down must not close windows before the backlog
    # in the source is read: the timeout counts from the restart.
    clock = _Clock(T0)
    first = _logic(WindowPolicy(idle_timeout_s=120), clock)
    first.on_item(RawBatch("t:0", (_message(0, T0, "checkout-api", None),)))
    store = WindowStore(WindowSpec(60, 30, CASE_ALIGN), policy=first.store.policy)
    store.restore(first.store.state())
    clock.advance(3600)

    second = WindowLogic(store, clock=clock)

    assert second.notify_at() == T0 + timedelta(hours=1, seconds=120)


# --- clock skew -----------------------------------------------------------------


def _honest_and_skewed() -> list[RawMessage]:
    """Three minutes of honest events, with a host two hours ahead among them.

    Honest events arrive 2 s after their time; `skewed-host` stamps its
    events 2 h ahead of when the broker receives them.
    """
    out: list[RawMessage] = []
    for i in range(18):
        at = T0 + timedelta(seconds=10 * i)
        out.append(_message(len(out), at, "checkout-api", at + timedelta(seconds=2)))
        if i % 6 == 3:
            received = at + timedelta(seconds=1)
            ahead = received + timedelta(hours=2)
            out.append(_message(len(out), ahead, "skewed-host", received))
    return out


def test_a_host_two_hours_ahead_is_quarantined_and_honest_events_stay_on_time() -> None:
    logic = _logic(WindowPolicy(), _Clock(T0), InputLimits(max_ahead_s=600))
    messages = _honest_and_skewed()

    out, _ = logic.on_item(RawBatch("t:0", tuple(messages)))
    out = list(out) + list(logic.on_eof()[0])

    late = [x for x in out if isinstance(x, LateEvent)]
    assert [(x.reason, x.service, x.offset) for x in late] == [
        ("clock_skew", "skewed-host", 4),
        ("clock_skew", "skewed-host", 11),
        ("clock_skew", "skewed-host", 18),
    ]
    assert logic.quarantined == 3
    assert [x.event_time - x.received_at for x in late] == [timedelta(hours=2)] * 3  # type: ignore[operator]
    records = [x for x in out if isinstance(x, KpiRecord)]
    assert _requests(records) == {
        "checkout-api 10:00:00.000000": (6, "ok"),
        "checkout-api 10:01:00.000000": (6, "ok"),
        "checkout-api 10:02:00.000000": (6, "ok"),
    }


def test_without_the_bound_one_skewed_host_makes_honest_events_late() -> None:
    logic = _logic(WindowPolicy(), _Clock(T0), InputLimits())

    out, _ = logic.on_item(RawBatch("t:0", tuple(_honest_and_skewed())))

    late = [x for x in out if isinstance(x, LateEvent)]
    # Everything honest after the first skewed event (offset 4) is late.
    assert len(late) == 14
    assert {x.reason for x in late} == {"late"}


def test_by_default_an_event_ahead_by_more_than_the_lateness_is_quarantined() -> None:
    # Ten minutes ahead is within an hours-wide bound, yet it alone would
    # move the watermark ten minutes on and make every honest event late.
    settings = WindowSettings()
    logic = _logic(WindowPolicy(), _Clock(T0), settings.input_limits(0))
    messages = []
    for i in range(18):
        at = T0 + timedelta(seconds=10 * i)
        messages.append(_message(len(messages), at, "checkout-api", at))
        if i == 3:
            ahead = at + timedelta(seconds=settings.allowed_lateness_s + 1)
            messages.append(_message(len(messages), ahead, "fast-clock", at))

    out, _ = logic.on_item(RawBatch("t:0", tuple(messages)))

    late = [x for x in out if isinstance(x, LateEvent)]
    assert [(x.reason, x.service) for x in late] == [("clock_skew", "fast-clock")]


def test_events_far_behind_their_receipt_are_quarantined_when_bounded() -> None:
    logic = _logic(WindowPolicy(), _Clock(T0), InputLimits(max_behind_s=3600))
    received = T0 + timedelta(days=3)
    messages = (
        _message(0, T0, "stale-device", received),
        _message(1, received, "checkout-api", received),
    )

    out, _ = logic.on_item(RawBatch("t:0", messages))

    late = [x for x in out if isinstance(x, LateEvent)]
    assert [(x.reason, x.service) for x in late] == [("clock_skew", "stale-device")]


# --- backfill (C22) -------------------------------------------------------------


def _c22_messages(with_receive_time: bool) -> list[RawMessage]:
    out = []
    for offset, case in enumerate(events("C22")):
        received = datetime.fromisoformat(case["received_at"])
        value = json.dumps(native(case)).encode()
        received_ms = _micros(received) // 1000 if with_receive_time else None
        out.append(RawMessage("telemetry", 0, offset, b"k", value, received_ms))
    return out


def _c22_windows(logic: WindowLogic, messages: list[RawMessage]) -> list[KpiRecord]:
    out: list[object] = []
    for i in range(0, len(messages), 100):
        out += logic.on_item(RawBatch("t:0", tuple(messages[i : i + 100])))[0]
    out += logic.on_eof()[0]
    return [x for x in out if isinstance(x, KpiRecord) and x.kpi == "requests_per_s"]


def test_a_backlog_marks_windows_older_than_15_minutes_by_receive_time_c22() -> None:
    # Window 09:k closes when an event of 09:(k+1):30 arrives: event number
    # 20(k+1)+10, received 25 ms apart from 10:00:00.025. Up to k = 44 that
    # is more than 15 minutes after the window's end; from 09:45 on, less.
    policy = WindowPolicy(backfill_after_s=900, backfill_clock="receive")
    logic = _logic(policy, _Clock(T0))

    records = _c22_windows(logic, _c22_messages(with_receive_time=True))

    marked = {f"{r.window_start:%H:%M}" for r in records if r.backfill}
    assert len(records) == 60
    assert marked == {f"09:{m:02d}" for m in range(45)}


def test_a_backlog_by_processing_time_is_all_backfill_c22() -> None:
    # Processing time 10:16: every window of 09:00-09:59 ended over 15
    # minutes before it, whichever way the input was batched.
    policy = WindowPolicy(backfill_after_s=900)
    logic = _logic(policy, _Clock(datetime(2025, 3, 4, 10, 16, tzinfo=UTC)))

    records = _c22_windows(logic, _c22_messages(with_receive_time=False))

    assert len(records) == 60
    assert all(r.backfill for r in records)
    assert {round(r.value * 60, 9) for r in records if r.value is not None} == {20}


def test_backfill_anomalies_never_page() -> None:
    def score(minute: int, backfill: bool) -> KpiScore:
        start = T0 + timedelta(minutes=minute)
        record = KpiRecord(
            layer=Layer.FRONTEND,
            service="web",
            kpi="page_load_p75_ms",
            dimension="speed",
            direction="up",
            unit="ms",
            window_start=start,
            window_end=start + timedelta(minutes=1),
            value=9000.0,
            state="ok",
            backfill=backfill,
        )
        return KpiScore(
            kpi=record,
            detector="test",
            score=0.99,
            expected=1000.0,
            side=1,
            detector_state="ready",
            anomalous=True,
        )

    def incidents(backfill: bool) -> list[Incident]:
        correlator = Correlator(config=CorrelationConfig(confirm_windows=1))
        out = [o for m in range(4) for o in correlator.observe(score(m, backfill))]
        out += correlator.flush()
        return [o for o in out if isinstance(o, Incident)]

    assert incidents(backfill=True) == []
    assert len(incidents(backfill=False)) >= 1
    assert Anomaly.from_score(score(0, backfill=True)).backfill


# --- documentation ---------------------------------------------------------------


def test_the_readme_states_the_window_defaults() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Event time under real conditions") :]
    rows = [line.split("|")[1:3] for line in section.splitlines()[6:11]]
    defaults = WindowSettings()

    for names, documented in rows:
        settings = [n.strip(" `") for n in names.split(",")]
        values = [v.strip() for v in documented.split(",")]
        for name, value in zip(settings, values, strict=True):
            actual = getattr(defaults, name)
            assert value == ("unset" if actual is None else f"{actual:g}"), name
