"""Sequence novelty, checked by hand."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from models._sequence import SYMBOLS, SequenceNovelty, symbol
from models._tail import SlidingTail
from models.longtail import LongTailConfig, LongTailDetector

# Large enough that the handful of keys below do not share a counter.
_TABLE = 1 << 16
A, B, C, D = 0, 1, 2, 3


def _learned(symbols: list[int], **kwargs: int) -> SequenceNovelty:
    settings = {"order": 1, "counters": _TABLE, "min_context": 1, "span": 3}
    sequence = SequenceNovelty(**{**settings, **kwargs})
    for s in symbols:
        sequence.add(s)
    return sequence


def test_symbol_is_the_band_among_recent_values_times_the_step() -> None:
    # 10 bands of 5 steps: below the lowest, 8 quantile bands, above the highest.
    assert SYMBOLS == 50
    assert symbol(0.0, -1) == 0 * 5 + 1
    assert symbol(0.05, 0) == 2 * 5 + 2
    assert symbol(0.5, 3) == 5 * 5 + 4
    assert symbol(0.99, -4) == 8 * 5 + 0
    assert symbol(1.0, 0) == 9 * 5 + 2


def test_rank_counts_ties_half_and_is_even_for_an_empty_window() -> None:
    window = SlidingTail(10)
    assert window.rank(3.0) == 0.5
    for x in (1.0, 2.0, 3.0, 4.0):
        window.add(x)

    assert [window.rank(x) for x in (0.0, 2.0, 2.5, 5.0)] == [0.0, 0.375, 0.5, 1.0]


def test_a_familiar_successor_is_not_novel_and_a_new_one_is() -> None:
    sequence = _learned([A, B, C, A, B, C])

    # C was followed once, by A.
    assert not sequence.novel(A)
    assert sequence.novel(B)
    assert sequence.novel(D)


def test_a_context_seen_too_rarely_does_not_judge() -> None:
    once = _learned([A, B, C, A, B, C], min_context=2)
    twice = _learned([A, B, C, A, B, C, A, B, C], min_context=2)

    # C was followed once in the first, twice in the second.
    assert not once.novel(B)
    assert twice.novel(B)
    assert not twice.novel(A)


def test_any_order_that_saw_the_successor_makes_it_familiar() -> None:
    # Order 1 saw B follow A; order 2 never saw B follow (D, A).
    sequence = _learned([C, A, B, D, A], order=2)

    assert not sequence.novel(B)
    # Order 1 never saw C after A; order 2 never saw (D, A) followed by
    # anything, so it does not judge: novel.
    assert sequence.novel(C)


def test_recent_novel_counts_the_span_with_the_current_symbol() -> None:
    # From C: A familiar; then B after A is familiar, D after B is new,
    # C after D has no context yet (D never followed by anything).
    sequence = _learned([A, B, C, A, B, D, C])

    # Span 3: the last two learned (D new, C unjudged) and the current one,
    # C then A (A followed C once: familiar) or C then D (new).
    assert sequence.recent_novel(A) == 1
    assert sequence.recent_novel(D) == 2


def test_counts_saturate_and_the_state_stays_at_the_table_size() -> None:
    sequence = SequenceNovelty(order=2, counters=4096, min_context=2, span=10)
    for i in range(3000):
        sequence.add((A, B)[i % 2])

    assert not sequence.novel(A)
    assert sequence.novel(C)
    assert len(pickle.dumps(sequence)) < 4096 + 300


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"order must be 1\.\.8"):
        SequenceNovelty(order=0, counters=64, min_context=1, span=3)


def _decades(score: float) -> float:
    # Inverse of the detector's calibration 1 - 2^(-d / 3).
    return -3.0 * math.log2(1.0 - score)


def test_a_new_order_of_familiar_values_is_raised_only_where_it_happens() -> None:
    start = datetime(2025, 3, 4, tzinfo=UTC)
    cycle = [10.0, 14.0, 11.0, 17.0, 12.0, 19.0, 13.0, 15.0]
    values = cycle * 120 + cycle[::-1] * 2 + cycle * 4
    swap = len(cycle) * 120
    # No damping of any kind, so that scores differ by the sequence only.
    quiet = LongTailConfig(refractory=0, burst=0, routine=False)
    on = LongTailDetector(config=quiet)
    off = LongTailDetector(config=replace(quiet, sequence_span=0))

    added = []
    for i, x in enumerate(values):
        t = start + i * timedelta(minutes=5)
        scores = [d.score_one(x, t).value for d in (on, off)]
        added.append(_decades(scores[0]) - _decades(scores[1]))
        on.learn_one(x, t)
        off.learn_one(x, t)

    # Familiar cycles add nothing; the reversed cycles add whole steps of
    # half a decade (one per novel symbol from the third on).
    assert max(added[swap - 400 : swap]) == pytest.approx(0.0, abs=1e-9)
    raised = [a for a in added[swap : swap + 16] if a > 1e-9]
    assert raised
    assert all(round(a / 0.5, 6).is_integer() for a in raised)
