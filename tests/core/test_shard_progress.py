"""The correlator judges a window once every shard has closed it.

Two shards (Kafka partitions, possibly read by two processes): one carries
the database, the other the web front end. However their scores
interleave, the correlator must publish what it publishes when it gets
them window by window.
"""

from collections.abc import Iterator
from datetime import datetime, timedelta

from foreshock.correlation import CorrelationConfig, Correlator, Output, ShardProgress
from foreshock.layers import Layer
from foreshock.records import KpiScore
from tests.core.test_correlation import T0, TOPOLOGY, _score

MINUTES = 40
DB = (Layer.DATABASE, "orders-db", "query_time_p95_ms")
WEB = (Layer.FRONTEND, "web", "page_load_p75_ms")
SHARDS = {"in:0": DB, "in:1": WEB}
# The database slows down at minute 20; users feel it from minute 24.
BAD_FROM = {"in:0": 20, "in:1": 24}


def _correlator() -> Correlator:
    config = CorrelationConfig(resolve_after_windows=3, confirm_windows=1)
    correlator = Correlator(TOPOLOGY, config)
    correlator.expect_shards(SHARDS)
    return correlator


def _scores(shard: str, minute: int) -> list[KpiScore]:
    layer, service, kpi = SHARDS[shard]
    return [_score(minute, layer, service, kpi, minute >= BAD_FROM[shard])]


def _closed(shard: str, minute: int) -> ShardProgress:
    end = T0 + timedelta(minutes=minute + 1)
    return ShardProgress(shard, end, {end: 1})


def _feed(correlator: Correlator, shard: str, minutes: range) -> list[object]:
    out: list[object] = []
    for minute in minutes:
        for score in _scores(shard, minute):
            out += correlator.observe(score)
        out += correlator.observe_progress(_closed(shard, minute))
    return out


def _in_step() -> list[object]:
    correlator = _correlator()
    out: list[object] = []
    for minute in range(MINUTES):
        for shard in SHARDS:
            out += _feed(correlator, shard, range(minute, minute + 1))
    return out + correlator.flush()


def test_a_shard_running_ahead_waits_for_the_other() -> None:
    correlator = _correlator()

    ahead = _feed(correlator, "in:0", range(MINUTES))
    behind = _feed(correlator, "in:1", range(MINUTES))
    out = ahead + behind + correlator.flush()

    # Nothing is judged while the web's shard has closed no window: the
    # database's trouble from minute 20 is not warned about alone.
    assert ahead == []
    assert out == _in_step()
    assert any(getattr(o, "lead_time_s", None) == 240.0 for o in out)


def test_scores_after_their_shards_progress_still_count() -> None:
    # The progress of a window can overtake its scores (they pass through
    # the detectors first): the window waits for the count announced.
    correlator = _correlator()
    out: list[object] = []
    for minute in range(MINUTES):
        for shard in SHARDS:
            out += correlator.observe_progress(_closed(shard, minute))
        for shard in SHARDS:
            for score in _scores(shard, minute):
                out += correlator.observe(score)

    assert out + correlator.flush() == _in_step()


def test_an_idle_shard_holds_no_window_back() -> None:
    correlator = _correlator()

    out = correlator.observe_progress(ShardProgress("in:1", None))
    out += _feed(correlator, "in:0", range(MINUTES))

    # The database's trouble is judged without waiting for the web.
    warned = [o for o in out if type(o).__name__ == "EarlyWarning"]
    assert [w.onset for w in warned] == [T0 + timedelta(minutes=20)]


def _one_shard_carrying_both(idle_first: bool) -> tuple[list[object], list[object]]:
    """What the correlator publishes, and the windows it judged, in order."""
    correlator = Correlator(TOPOLOGY, CorrelationConfig(resolve_after_windows=3))
    judged: list[object] = []
    judge = correlator._handle

    def counted(window_end: datetime) -> Iterator[Output]:
        judged.append(window_end)
        return judge(window_end)

    correlator._handle = counted  # type: ignore[method-assign]
    correlator.expect_shards(["in:0"])
    out: list[object] = []
    if idle_first:
        out += correlator.observe_progress(ShardProgress("in:0", None))
    for minute in range(MINUTES):
        for shard in SHARDS:
            for score in _scores(shard, minute):
                out += correlator.observe(score)
        end = T0 + timedelta(minutes=minute + 1)
        out += correlator.observe_progress(ShardProgress("in:0", end, {end: 2}))
    return out + correlator.flush(), judged


def test_scores_of_a_shard_that_was_idle_wait_for_its_progress() -> None:
    # A shard that reported itself idle gets events again: its scores can
    # reach the correlator before the progress that counts them (scores
    # pass through the detectors first). The window is judged once, whole,
    # not once per score as each arrives.
    out, judged = _one_shard_carrying_both(idle_first=True)

    assert judged == [T0 + timedelta(minutes=m + 1) for m in range(MINUTES)]
    assert out == _one_shard_carrying_both(idle_first=False)[0]
    assert any(getattr(o, "lead_time_s", None) == 240.0 for o in out)
