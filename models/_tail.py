"""Empirical tail probabilities over a sliding window of recent values.

A value's upper tail probability is the share of the window at or above it.
Beyond the window's maximum the tail is extended exponentially, with the
mean excess of the window's top values over its median as the decay length,
so a value twice as far out gets a much smaller probability rather than the
same floor. Being rank based, the estimate needs no scaling and one absurd
value moves it by one rank only.

Counts, volumes and latencies often have power-law upper tails: a spike
three times the highest one seen is much more likely than an exponential
tail says. With `heavy_upper`, the upper extension is also fitted as a
Pareto tail to the top values' excess over the median (Hill's estimator of
its index) and the smaller surprise of the two is kept, so a heavy-tailed
series is not judged by a light-tailed model while a light-tailed one keeps
its exponential decay.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right, insort

__all__ = ["SlidingTail", "float32_range", "warmup_score"]

# Fraction of the window taken as "top values" for the tail extension.
_TOP_SHARE = 0.1
# 32-bit storage halves the state; ranks need no more precision. Values are
# held inside its finite range so that none turns into infinity.
_FLOAT32_MAX = 3.0e38


def float32_range(x: float) -> float:
    """`x` held inside the finite range of a 32-bit float."""
    return min(max(x, -_FLOAT32_MAX), _FLOAT32_MAX)


class SlidingTail:
    """Sorted copy and ring of the last `size` values."""

    __slots__ = ("_next", "_ring", "_sorted", "heavy_upper", "size")

    def __init__(self, size: int, heavy_upper: bool = False) -> None:
        self.size = size
        self.heavy_upper = heavy_upper
        self._ring = array("f")
        self._sorted = array("f")
        self._next = 0

    @classmethod
    def of(cls, values: array[float], heavy_upper: bool = False) -> SlidingTail:
        """A window over `values` as they are, to judge against, not to add to."""
        tail = cls(len(values), heavy_upper)
        tail._ring = values
        tail._sorted = array("f", sorted(values))
        return tail

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, x: float) -> None:
        """Put `x` in the window, dropping the oldest value when full."""
        # Round first, so the sorted copy holds exactly what the ring holds.
        x = array("f", [float32_range(x)])[0]
        if len(self._ring) < self.size:
            self._ring.append(x)
        else:
            old = self._ring[self._next]
            self._ring[self._next] = x
            self._next = (self._next + 1) % self.size
            del self._sorted[bisect_left(self._sorted, old)]
        insort(self._sorted, x)

    def quantile(self, q: float) -> float:
        """The `q` quantile by nearest rank; 0.0 for an empty window."""
        if not self._sorted:
            return 0.0
        return self._sorted[min(len(self._sorted) - 1, int(q * len(self._sorted)))]

    def rank(self, x: float) -> float:
        """The share of the window below `x`, ties counted half; 0.5 if empty."""
        n = len(self._sorted)
        if n == 0:
            return 0.5
        below = bisect_left(self._sorted, x)
        return (below + bisect_right(self._sorted, x)) / 2 / n

    def upper_decades(self, x: float, floor: float) -> float:
        """-log10 of the tail probability of values >= `x`."""
        n = len(self._sorted)
        if n == 0:
            return 0.0
        above = n - bisect_left(self._sorted, x)
        if above > 0:
            return -math.log10((above + 1) / (n + 1))
        top = self._sorted[-1]
        length = max(self._excess_length(), floor)
        beyond = (x - top) / length / math.log(10.0)
        if self.heavy_upper:
            beyond = min(beyond, self._pareto_decades(x, floor))
        return math.log10(n + 1) + beyond

    def lower_decades(self, x: float, floor: float) -> float:
        """-log10 of the tail probability of values <= `x`."""
        n = len(self._sorted)
        if n == 0:
            return 0.0
        below = bisect_right(self._sorted, x)
        if below > 0:
            return -math.log10((below + 1) / (n + 1))
        bottom = self._sorted[0]
        length = max(self._deficit_length(), floor)
        return math.log10(n + 1) + (bottom - x) / length / math.log(10.0)

    def clip(self, x: float, floor: float) -> float:
        """`x` held to one tail length beyond the window's range.

        Learning clipped values lets a run of high values widen the window
        step by step while one absurd value adds a single ordinary rank.
        """
        if len(self._sorted) < 2:
            return x
        high = self._sorted[-1] + max(self._excess_length(), floor)
        low = self._sorted[0] - max(self._deficit_length(), floor)
        return min(max(x, low), high)

    def upper_edge(self, floor: float) -> float:
        """The window's maximum plus one tail length (at least `floor`)."""
        if not self._sorted:
            return math.inf
        return self._sorted[-1] + max(self._excess_length(), floor)

    def _pareto_decades(self, x: float, floor: float) -> float:
        """Decades beyond the maximum for a Pareto tail of the excess over
        the median, its index `alpha` estimated from the top values (Hill)."""
        values = self._sorted
        median = values[len(values) // 2]
        k = max(2, int(_TOP_SHARE * len(values)))
        base = max(values[-k - 1 if k < len(values) else 0] - median, floor)
        top = max(values[-1] - median, base)
        logs = sum(math.log(max(v - median, base) / base) for v in values[-k:])
        alpha = k / max(logs, 1e-3 * k)
        return alpha * math.log10(max(x - median, top) / top)

    def _excess_length(self) -> float:
        k = max(1, int(_TOP_SHARE * len(self._sorted)))
        top = self._sorted[-k:]
        return sum(top) / k - self._sorted[-k - 1 if k < len(self._sorted) else 0]

    def _deficit_length(self) -> float:
        k = max(1, int(_TOP_SHARE * len(self._sorted)))
        bottom = self._sorted[:k]
        return self._sorted[k if k < len(self._sorted) else -1] - sum(bottom) / k


# A warm-up rule needs some history too: twenty values.
_WARMUP_MIN_SAMPLES = 20


def warmup_score(values: SlidingTail, x: float, direction: str) -> float:
    """Score from a plain rule while too little is known for tail views.

    Silent until twenty values were seen. Then a value scores by how far it
    leaves the range seen so far, in units of the series' level (or of that
    range, if wider): 0.5 one unit above the highest value, 1 two units above
    (about three times the median of a calm series); on the low side 1
    already half a unit below the lowest, since a level cannot fall by more
    than itself. `direction` is the side that counts: "up", "down" or "both".
    """
    if len(values) < _WARMUP_MIN_SAMPLES:
        return 0.0
    low, mid, high = values.quantile(0.0), values.quantile(0.5), values.quantile(1)
    unit = max(high - low, abs(mid), 1e-9)
    up = (x - high) / unit / 2.0 if direction != "down" else 0.0
    down = (low - x) / unit * 2.0 if direction != "up" else 0.0
    return min(1.0, max(0.0, up, down))
