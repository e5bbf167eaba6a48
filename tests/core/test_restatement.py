"""Events of a restatable kind restate their closed window, within a horizon."""

import pickle
from datetime import UTC, datetime, timedelta

from foreshock.layers import Layer
from foreshock.records import KpiRecord
from foreshock.schema import AppCrash, AppLaunch, Event, HttpRequest, Payload
from foreshock.windows import Late, WindowPolicy, WindowSpec, WindowStore

T0 = datetime(2025, 3, 4, tzinfo=UTC)
# Hourly windows without lateness; a closed window may be restated for 3 h.
SPEC = WindowSpec(3600, 0, T0)
POLICY = WindowPolicy(restate_within_s=3 * 3600)


def _event(minutes: float, payload: Payload, layer: Layer = Layer.MOBILE) -> Event:
    at = T0 + timedelta(minutes=minutes)
    return Event(time=at, layer=layer, service="app", payload=payload)


def _launch(minutes: float, version: str = "1.0") -> Event:
    return _event(minutes, AppLaunch(app_version=version))


def _crash(minutes: float, version: str = "1.0") -> Event:
    return _event(minutes, AppCrash(app_version=version))


def _store_with_launches(hours: int) -> WindowStore:
    """Four launches of 1.0 in each of the first `hours` hours, all closed."""
    store = WindowStore(spec=SPEC, policy=POLICY)
    for minute in range(0, hours * 60, 15):
        assert store.add(_launch(minute)) is None
    store.close_ready()
    return store


def _rates(records: list[KpiRecord]) -> list[tuple[int, str, float | None, bool]]:
    return [
        (r.window_start.hour, r.kpi, r.value, r.restated)
        for r in records
        if r.kpi.startswith("crash_rate")
    ]


def test_a_crash_within_the_horizon_restates_its_window() -> None:
    # The latest event is at 03:45; a crash of 01:10 is 2 h 35 min old.
    store = _store_with_launches(4)

    assert store.add(_crash(70)) is None

    assert _rates(store.close_ready()) == [
        (1, "crash_rate", 1 / 4, True),
        (1, "crash_rate@1.0", 1 / 4, True),
    ]


def test_a_crash_older_than_the_horizon_is_late() -> None:
    # A crash of 00:30 is 3 h 15 min older than the latest event, 03:45.
    store = _store_with_launches(4)

    late = store.add(_crash(30))

    assert isinstance(late, Late)
    assert late.window_start == T0
    assert store.close_ready() == []


def test_a_late_event_of_another_kind_stays_late() -> None:
    store = _store_with_launches(4)

    late = store.add(_event(70, HttpRequest(status=200), Layer.API))

    assert isinstance(late, Late)
    assert store.close_ready() == []


def test_restatement_can_be_turned_off() -> None:
    store = WindowStore(spec=SPEC, policy=WindowPolicy(restate_within_s=None))
    for minute in range(0, 240, 15):
        store.add(_launch(minute))

    assert isinstance(store.add(_crash(170)), Late)


def test_a_restored_store_still_restates() -> None:
    store = _store_with_launches(4)
    restored = WindowStore(spec=SPEC, policy=POLICY)
    restored.restore(pickle.loads(pickle.dumps(store.state())))

    assert restored.add(_crash(130)) is None

    assert _rates(restored.close_ready()) == [
        (2, "crash_rate", 1 / 4, True),
        (2, "crash_rate@1.0", 1 / 4, True),
    ]


def test_versions_beyond_the_cap_share_one_series() -> None:
    # 22 versions launch in one window: the first 20 are counted apart, the
    # last two as "other", which also gets the crash of version 22.
    store = WindowStore(spec=SPEC, policy=POLICY)
    for v in range(1, 23):
        store.add(_launch(v, f"{v}.0"))
    store.add(_crash(30, "22.0"))

    records = store.close_all()

    rates = {r.kpi: r.value for r in records if r.kpi.startswith("crash_rate@")}
    assert len(rates) == 21
    assert rates["crash_rate@1.0"] == 0.0
    assert rates["crash_rate@20.0"] == 0.0
    assert rates["crash_rate@other"] == 1 / 2
