"""How new the recent sequence of a series' values is.

Views of single values miss a series that takes a shape it never took before
with values it has often seen: a level held where it usually only passes, a
rise where it usually falls, a daily pattern broken in its middle. Here each
value becomes a *symbol*: its band among the series' own recent values
(below the lowest, a few quantile bands, above the highest) combined with
how surprising its step from the forecast was, in signed whole decades, so
"high after a jump up" differs from "high after a drop". A table counts
which symbol followed each context of the last one, two, ... `order`
symbols. A symbol is *novel* when, at every order whose context was seen at
least `min_context` times, it never followed that context; contexts seen too
rarely do not judge, so a young series is not novel throughout.

One novel symbol is common (about one value in 200 on NAB); several within a
few values are not, and mark a stretch whose shape is new. `recent_novel`
counts them over the last `span` values.

The counts live in a fixed table of `counters` 2-bit counters (four to a
byte) indexed by a multiplicative hash of (order, context, symbol), with a
context's own count kept under a reserved symbol. Novelty only asks whether
a key was ever seen and whether a context was seen `min_context` times, so
counts saturate at 3 and `min_context` is at most 3. Colliding keys share a
counter: a key may look familiar that never happened, never the reverse,
and the state never grows.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right

__all__ = ["SYMBOLS", "SequenceNovelty", "symbol"]

# Quantile bands of the value among recent values: 7 edges give 8 bands
# inside the recent range, finer in its tails, and the values below the
# lowest and above the highest get one band each, 10 in all.
_BAND_EDGES = (0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98)
_BANDS = len(_BAND_EDGES) + 3
# Step sizes in signed whole decades, held to -2..2.
_STEP_CAP = 2
_STEPS = 2 * _STEP_CAP + 1
SYMBOLS = _BANDS * _STEPS
_COUNT_MAX = 3
_PER_BYTE = 4
# Knuth's multiplicative hash constant (2^32 / golden ratio).
_HASH = 2_654_435_761
_ORDER_MAX = 8


def symbol(rank: float, step: int) -> int:
    """The symbol of a value at `rank` in [0, 1] among recent values whose
    step from the forecast was surprising by `step` signed whole decades.

    A rank of 0 or 1 means beyond the lowest or highest recent value.
    """
    if rank <= 0.0:
        band = 0
    elif rank >= 1.0:
        band = _BANDS - 1
    else:
        band = 1 + bisect_right(_BAND_EDGES, rank)
    return band * _STEPS + min(max(step, -_STEP_CAP), _STEP_CAP) + _STEP_CAP


class SequenceNovelty:
    """Hashed counts of which symbol followed which recent context."""

    __slots__ = (
        "_counts",
        "_history",
        "_novel",
        "counters",
        "min_context",
        "order",
        "span",
    )

    def __init__(self, order: int, counters: int, min_context: int, span: int) -> None:
        if not 1 <= order <= _ORDER_MAX or counters < 1 or span < 1:
            raise ValueError(
                f"order must be 1..{_ORDER_MAX}, counters and span >= 1; got "
                f"{order!r}, {counters!r}, {span!r}"
            )
        if not 1 <= min_context <= _COUNT_MAX:
            raise ValueError(
                f"min_context must be 1..{_COUNT_MAX}, got {min_context!r}"
            )
        self.order = order
        self.min_context = min_context
        self.span = span
        self.counters = counters
        self._counts = array("B", [0]) * -(-counters // _PER_BYTE)
        # The last `order` symbols, newest last.
        self._history: list[int] = []
        # Bit i set: the value learned i + 1 values ago was novel.
        self._novel = 0

    def novel(self, s: int) -> bool:
        """Whether `s` never followed its context at any order that judges."""
        judged = False
        for order, context in self._contexts():
            if self._count(self._slot(order, context, SYMBOLS)) < self.min_context:
                continue
            if self._count(self._slot(order, context, s)):
                return False
            judged = True
        return judged

    def recent_novel(self, s: int) -> int:
        """Novel symbols among the last `span - 1` learned values and `s`."""
        earlier = self._novel & ((1 << (self.span - 1)) - 1)
        return bin(earlier).count("1") + self.novel(s)

    def add(self, s: int) -> None:
        """Count `s` after each of its contexts and make it the newest."""
        novel = self.novel(s)
        for order, context in self._contexts():
            for key in (s, SYMBOLS):
                self._increment(self._slot(order, context, key))
        self._history.append(s)
        del self._history[: -self.order]
        self._novel = ((self._novel << 1) | novel) & ((1 << self.span) - 1)

    def _contexts(self) -> list[tuple[int, int]]:
        """(order, context) for each order that has enough history.

        A context is its symbols as one number in base `SYMBOLS`, offset by
        `SYMBOLS ** order` so that contexts of different orders differ.
        """
        contexts = []
        context = 0
        for k in range(1, min(self.order, len(self._history)) + 1):
            context = context * SYMBOLS + self._history[-k]
            contexts.append((k, context + SYMBOLS**k))
        return contexts

    def _slot(self, order: int, context: int, s: int) -> int:
        # The context's own count is kept under the reserved symbol SYMBOLS.
        key = (context * (SYMBOLS + 1) + s) * _ORDER_MAX + order
        return ((key * _HASH) & 0xFFFFFFFF) % self.counters

    def _count(self, slot: int) -> int:
        byte, quarter = divmod(slot, _PER_BYTE)
        return (self._counts[byte] >> (2 * quarter)) & _COUNT_MAX

    def _increment(self, slot: int) -> None:
        if self._count(slot) < _COUNT_MAX:
            byte, quarter = divmod(slot, _PER_BYTE)
            self._counts[byte] += 1 << (2 * quarter)
