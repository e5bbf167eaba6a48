"""How new the step from the last surprise level to the current one is.

A series whose spikes come every day or two produces surprising values
routinely; what is new for it is a step it has rarely or never taken, such as
a spike straight after a dip, or a jump two decades higher than any before.
Each judged value is reduced to a *level*: its signed surprise in whole
decades (negative below the baseline), held to `-cap..cap`. A table counts how
often each level followed each context of the previous `order` levels, and a
value's novelty is `-log10` of the smoothed share of its level after its
context, a first-order Markov chain over a handful of symbols.

The table has `(2 * cap + 1) ** (order + 1)` 16-bit counts: 162 bytes for
cap 4 and order 1, 1,458 bytes for order 2. When one count is
about to overflow, its context's row is halved, so old habits fade slowly
and the state never grows.
"""

from __future__ import annotations

import math
from array import array

__all__ = ["TransitionNovelty"]

_COUNT_MAX = 65_535
# Laplace-style smoothing: an unseen step after a context seen n times has
# probability 0.5 / (n + 0.5 * levels).
_PRIOR = 0.5


class TransitionNovelty:
    """Counts of level transitions in a fixed-size table of 16-bit counts."""

    __slots__ = ("_context", "_counts", "_levels", "cap", "order")

    def __init__(self, cap: int, order: int) -> None:
        if cap < 1 or order < 1:
            raise ValueError(f"cap and order must be >= 1, got {cap!r}, {order!r}")
        self.cap = cap
        self.order = order
        self._levels = 2 * cap + 1
        self._counts = array("H", [0]) * (self._levels ** (order + 1))
        # The context as one index: the last `order` levels in base `levels`,
        # starting from a quiet past (level 0 throughout).
        self._context = 0
        for _ in range(order):
            self._context = self._context * self._levels + cap

    def level(self, up_decades: float, down_decades: float) -> int:
        """The signed whole decades of a surprise, held to `-cap..cap`."""
        if up_decades >= down_decades:
            return min(int(up_decades), self.cap)
        return -min(int(down_decades), self.cap)

    def decades(self, level: int) -> float:
        """-log10 of the smoothed share of `level` after the current context."""
        row = self._row()
        seen = sum(self._counts[row : row + self._levels])
        count = self._counts[row + level + self.cap]
        return -math.log10((count + _PRIOR) / (seen + _PRIOR * self._levels))

    def add(self, level: int) -> None:
        """Count `level` after the current context and make it part of it."""
        row = self._row()
        cell = row + level + self.cap
        if self._counts[cell] == _COUNT_MAX:
            for i in range(row, row + self._levels):
                self._counts[i] //= 2
        self._counts[cell] += 1
        span = self._levels ** (self.order - 1)
        self._context = (self._context % span) * self._levels + level + self.cap

    def _row(self) -> int:
        return self._context * self._levels
