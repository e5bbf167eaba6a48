"""Block-maxima tails and the same-time-of-day memory, checked by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from models import make_detector
from models._blocks import BlockTail
from models._seasonal import SeasonalMemory
from models.longtail import LongTailConfig, LongTailDetector

DAY = timedelta(days=1)
START = datetime(2025, 3, 4, tzinfo=UTC)


def _blocks_of_pairs() -> BlockTail:
    tail = BlockTail(block=2, blocks=10)
    for x in range(1, 17):
        tail.add(float(x))
    # Block maxima 2, 4, ..., 16 and minima 1, 3, ..., 15.
    return tail


def test_block_tail_turns_a_block_share_into_a_per_value_probability() -> None:
    tail = _blocks_of_pairs()

    # One of 8 maxima reaches 15: share (1 + 1) / (8 + 1) = 2/9 per block
    # of two values, so per value 1 - sqrt(1 - 2/9) = 0.1180829.
    expected = -math.log10(1 - math.sqrt(7 / 9))

    assert tail.upper_decades(15.0, 1e-9) == pytest.approx(expected)
    assert tail.lower_decades(2.0, 1e-9) == pytest.approx(expected)
    assert tail.upper_decades(1.0, 1e-9) == 0.0


def test_block_tail_extends_beyond_the_highest_block_exponentially() -> None:
    tail = _blocks_of_pairs()

    # Top block maximum 16, tail length 16 - 14 = 2: per block
    # log10(9) + (100 - 16) / 2 / ln 10 decades, per value log10(2) more.
    expected = math.log10(9) + 42 / math.log(10) + math.log10(2)

    assert tail.upper_decades(100.0, 1e-9) == pytest.approx(expected)
    assert tail.clip(100.0, 1e-9) == 18.0
    assert tail.clip(-100.0, 1e-9) == -1.0


def test_block_tail_is_not_ready_before_eight_blocks() -> None:
    tail = BlockTail(block=2, blocks=10)
    for x in range(14):
        tail.add(float(x))

    assert not tail.ready()
    assert tail.clip(1e9, 1e-9) == 1e9


def test_seasonal_memory_returns_residual_to_nearest_value_near_that_time() -> None:
    memory = SeasonalMemory(slot_seconds=300, days=3, timezone="UTC")
    ten = START + timedelta(hours=10)
    memory.add(10.0, ten)
    memory.add(20.0, ten + timedelta(minutes=5))

    assert memory.residual(12.0, ten + DAY) == 2.0
    assert memory.residual(19.0, ten + DAY + timedelta(minutes=10)) == -1.0
    assert memory.residual(12.0, ten + DAY + timedelta(minutes=15)) is None
    assert memory.residual(12.0, ten) is None
    assert memory.residual(12.0, ten + 4 * DAY) is None


def test_seasonal_memory_follows_local_time_across_daylight_saving() -> None:
    # 10:00 in Berlin is 09:00 UTC before 30 March 2025 and 08:00 UTC after.
    before = datetime(2025, 3, 29, 9, tzinfo=UTC)
    after = datetime(2025, 3, 30, 8, tzinfo=UTC)
    local = SeasonalMemory(300, 3, "Europe/Berlin")
    naive = SeasonalMemory(300, 3, "UTC")
    for memory in (local, naive):
        memory.add(50.0, before)

    assert local.residual(55.0, after) == 5.0
    assert naive.residual(55.0, after) is None


def test_seasonal_memory_rejects_slots_that_do_not_divide_a_day() -> None:
    with pytest.raises(ValueError, match="slot_seconds must divide a day"):
        SeasonalMemory(7, 3, "UTC")


def test_longtail_spec_changes_fields_and_rejects_unknown_ones() -> None:
    detector = make_detector("longtail:refractory=50,routine=false")

    assert isinstance(detector, LongTailDetector)
    assert detector.config == LongTailConfig(refractory=50, routine=False)
    with pytest.raises(ValueError, match="LongTailConfig has no field 'nope'"):
        make_detector("longtail:nope=1")


def _nightly_batch(days: int) -> list[tuple[datetime, float]]:
    """Five-minute values near 10, and 100 from 03:00 to 05:00 every day."""
    points = []
    for i in range(days * 288):
        t = START + i * timedelta(minutes=5)
        points.append((t, 100.0 if 3 <= t.hour < 5 else 10.0 + (i % 3)))
    return points


def test_a_missing_nightly_batch_breaks_the_routine() -> None:
    routine = LongTailDetector()
    plain = LongTailDetector(config=LongTailConfig(routine=False))
    for detector in (routine, plain):
        for t, x in _nightly_batch(6):
            detector.score_one(x, t)
            detector.learn_one(x, t)
    four_am = START + 6 * DAY + timedelta(hours=4)

    assert routine.score_one(11.0, four_am).value >= 0.5
    assert plain.score_one(11.0, four_am).value < 0.5
