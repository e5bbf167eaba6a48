"""Step novelty, the power-law tail and held runs, checked by hand."""

from __future__ import annotations

import math

import pytest

from models import make_detector
from models._context import TransitionNovelty
from models._tail import SlidingTail
from models.longtail import LongTailConfig, LongTailDetector, held_residual


def test_levels_are_signed_whole_decades_held_to_the_cap() -> None:
    steps = TransitionNovelty(cap=2, order=1)

    assert steps.level(3.7, 0.1) == 2
    assert steps.level(0.2, 1.9) == -1
    assert steps.level(0.5, 0.5) == 0
    assert steps.level(0.0, 9.0) == -2


def test_novelty_is_the_smoothed_share_of_a_step_after_its_context() -> None:
    steps = TransitionNovelty(cap=2, order=1)

    # Nothing seen: every one of the 5 levels has 0.5 / 2.5.
    assert steps.decades(0) == pytest.approx(math.log10(5))
    for _ in range(4):
        steps.add(0)
    # After four quiet steps from quiet: 4.5 / 6.5 and 0.5 / 6.5.
    assert steps.decades(0) == pytest.approx(-math.log10(4.5 / 6.5))
    assert steps.decades(2) == pytest.approx(math.log10(13))

    steps.add(2)

    # Nothing has followed a level-2 step yet.
    assert steps.decades(0) == pytest.approx(math.log10(5))


def test_second_order_context_is_the_last_two_levels() -> None:
    steps = TransitionNovelty(cap=1, order=2)
    for level in (1, -1, 0, 1):
        steps.add(level)

    # Context (0, 1) was followed once by -1: 1.5 / (1 + 1.5).
    assert steps.decades(-1) == pytest.approx(-math.log10(1.5 / 2.5))
    assert steps.decades(1) == pytest.approx(-math.log10(0.5 / 2.5))


def test_a_full_count_halves_its_row_instead_of_overflowing() -> None:
    steps = TransitionNovelty(cap=1, order=1)
    for _ in range(65_536):
        steps.add(0)

    # 65,535 quiet steps halved to 32,767, then one more: 32,768 of 32,768.
    assert steps.decades(1) == pytest.approx(math.log10((32_768 + 1.5) / 0.5))


def _one_to_ten(heavy_upper: bool) -> SlidingTail:
    tail = SlidingTail(10, heavy_upper)
    for x in range(1, 11):
        tail.add(float(x))
    return tail


def test_heavy_upper_tail_decays_as_a_power_law_beyond_the_maximum() -> None:
    light, heavy = _one_to_ten(False), _one_to_ten(True)

    # Beyond 10: exponential with length 10 - 9 = 1 gives 12 / ln 10 decades.
    # Pareto on the excess over the median 6: base 8 - 6 = 2, Hill index
    # 2 / (ln(3/2) + ln(4/2)) = 2 / ln 3, top excess 4, so
    # (2 / ln 3) * log10(16 / 4) decades, the smaller of the two.
    assert light.upper_decades(22.0, 1e-9) == pytest.approx(
        math.log10(11) + 12 / math.log(10)
    )
    assert heavy.upper_decades(22.0, 1e-9) == pytest.approx(
        math.log10(11) + 2 / math.log(3) * math.log10(4)
    )


def test_heavy_upper_tail_leaves_ranks_and_the_lower_tail_alone() -> None:
    light, heavy = _one_to_ten(False), _one_to_ten(True)

    # Two of ten at or above 9: -log10(3 / 11).
    assert heavy.upper_decades(9.0, 1e-9) == pytest.approx(-math.log10(3 / 11))
    assert heavy.lower_decades(-5.0, 1e-9) == light.lower_decades(-5.0, 1e-9)


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ([2.0, 0.5, 1.0], 0.5),
        ([-2.0, -0.5, -1.0], -0.5),
        ([3.0, -1.0, 2.0], 0.0),
        ([0.0, 1.0, 1.0], 0.0),
    ],
)
def test_held_residual_is_how_far_a_whole_run_stayed_out(
    run: list[float], expected: float
) -> None:
    assert held_residual(run) == expected


def test_each_new_part_can_be_turned_off_for_ablation() -> None:
    detector = make_detector(
        "longtail:explain=0,sustain=0,novelty_margin=0,heavy_tail=false"
    )

    assert isinstance(detector, LongTailDetector)
    assert detector.config == LongTailConfig(
        explain=0.0, sustain=0, novelty_margin=0.0, heavy_tail=False
    )
