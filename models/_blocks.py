"""Long-memory tail probabilities from block maxima.

Keeping every value of a long history is too costly per series, yet a spike
is only rare if nothing like it happened for a long time. The largest (and
smallest) value of each block of `block` consecutive values keeps what the
tails need: the share of blocks whose maximum reaches `x` estimates how often
a block holds a value that high, and, values being roughly independent within
a block, the per-value tail probability follows as `1 - (1 - share)^(1/block)`.
Beyond the highest block maximum the tail decays exponentially, with the mean
excess of the top block maxima as its length, as for a Gumbel-type tail.
`blocks` maxima of `block` values each remember `blocks * block` values.
With `heavy_upper` the maxima's tail beyond the highest one may also decay
as a power law (see `SlidingTail`).
"""

from __future__ import annotations

import math
from array import array

from models._tail import SlidingTail, float32_range

__all__ = ["BlockTail"]

# Below this many closed blocks the estimate is not trusted (returns None).
_MIN_BLOCKS = 8


class BlockTail:
    """Rings of the maxima and negated minima of recent blocks.

    Only the rings are kept; a sorted copy is made when a value is judged
    against them, which happens for the few values already rare in the short
    window. That saves 1.6 KB a view against keeping both sorted.
    """

    __slots__ = (
        "_count",
        "_heavy_upper",
        "_high",
        "_low",
        "_maxima",
        "_minima",
        "_next",
        "block",
        "blocks",
    )

    def __init__(self, block: int, blocks: int, heavy_upper: bool = False) -> None:
        self.block = block
        self.blocks = blocks
        self._heavy_upper = heavy_upper
        self._maxima = array("f")
        self._minima = array("f")
        self._next = 0
        self._count = 0
        self._high = -math.inf
        self._low = math.inf

    def ready(self) -> bool:
        """Whether enough blocks have closed to judge a value."""
        return len(self._maxima) >= _MIN_BLOCKS

    def add(self, x: float) -> None:
        """Count `x` in the current block, closing it when full."""
        self._high = max(self._high, x)
        self._low = min(self._low, x)
        self._count += 1
        if self._count == self.block:
            self._close(self._high, -self._low)
            self._count = 0
            self._high = -math.inf
            self._low = math.inf

    def _close(self, high: float, negated_low: float) -> None:
        high, negated_low = float32_range(high), float32_range(negated_low)
        if len(self._maxima) < self.blocks:
            self._maxima.append(high)
            self._minima.append(negated_low)
            return
        self._maxima[self._next] = high
        self._minima[self._next] = negated_low
        self._next = (self._next + 1) % self.blocks

    def upper_decades(self, x: float, floor: float) -> float:
        """-log10 of the per-value probability of a value >= `x`."""
        maxima = SlidingTail.of(self._maxima, self._heavy_upper)
        return self._decades(maxima.upper_decades(x, floor))

    def lower_decades(self, x: float, floor: float) -> float:
        """-log10 of the per-value probability of a value <= `x`."""
        return self._decades(SlidingTail.of(self._minima).upper_decades(-x, floor))

    def clip(self, x: float, floor: float) -> float:
        """`x` held to one tail length beyond the highest and lowest blocks."""
        if not self.ready():
            return x
        high = SlidingTail.of(self._maxima).upper_edge(floor)
        low = -SlidingTail.of(self._minima).upper_edge(floor)
        return min(max(x, low), high)

    def _decades(self, block_decades: float) -> float:
        share = math.pow(10.0, -block_decades)
        if share >= 1.0:
            return 0.0
        if share < 1e-6:
            # 1 - (1 - s)^(1/b) is s / b to first order; exact form underflows.
            return block_decades + math.log10(self.block)
        per_value = -math.expm1(math.log1p(-share) / self.block)
        return -math.log10(per_value)
