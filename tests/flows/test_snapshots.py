"""Steps keep their state in snapshots only when something will read them."""

from datetime import UTC, datetime, timedelta

from flows.pipeline import FlowConfig, _correlate_builder, _detect_builder
from foreshock.correlation import CorrelationConfig, _Episode
from foreshock.layers import Layer
from foreshock.records import KpiRecord


def _record() -> KpiRecord:
    start = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    return KpiRecord(
        layer=Layer.API,
        service="api",
        kpi="latency_p95_ms",
        dimension="speed",
        direction="up",
        unit="ms",
        window_start=start,
        window_end=start + timedelta(minutes=1),
        value=120.0,
        state="ok",
    )


def test_without_recovery_a_snapshot_is_empty_and_with_it_restores() -> None:
    kept = _detect_builder(FlowConfig())(None)
    skipped = _detect_builder(FlowConfig(snapshots=False))(None)
    for logic in (kept, skipped):
        logic.on_item(_record())

    assert skipped.snapshot() == b""
    restored = _detect_builder(FlowConfig())(kept.snapshot())
    assert restored.detector is not None
    assert restored.detector.score_one(
        120.0, _record().window_start + timedelta(minutes=1)
    ) == kept.detector.score_one(120.0, _record().window_start + timedelta(minutes=1))
    assert _correlate_builder(FlowConfig(snapshots=False))(None).snapshot() == b""


def test_a_resumed_correlator_judges_by_the_settings_of_the_run_that_resumed_it() -> (
    None
):
    before = _correlate_builder(FlowConfig())(None)
    changed = FlowConfig(correlation=CorrelationConfig(cooldown_s=60.0))

    resumed = _correlate_builder(changed)(before.snapshot())

    assert resumed.correlator.config.cooldown_s == 60.0


def test_state_of_an_earlier_version_resumes_with_defaults_for_what_it_lacked() -> None:
    start = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    episode = _Episode(start, start, [(start, 2.0)])
    # As a version before `excess` was kept would have pickled it.
    rebuild, args, (_, kept) = episode.__reduce_ex__(5)[:3]
    del kept["excess"]
    older = rebuild(*args)

    older.__setstate__((None, kept))

    assert (older.onset, older.last, older.excess) == (start, start, [])
