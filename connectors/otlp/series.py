"""What happened between two points of a cumulative OTLP series.

A cumulative point says how much was counted since `start_time_unix_nano`.
The increase of an interval is the difference of consecutive points, with
three exceptions that would otherwise invent or lose counts:

- The first point of a series is a baseline when the series started long
  before it (its value mostly happened before Foreshock was looking); when
  it started recently, everything since the start counts.
- A new start time after the previous point is a restart: the value counts
  whole, since the new start. A count that went down under the same start
  time is a restart the producer did not report; the value counts whole too.
- A point no newer than the last one seen is a repeat and counts nothing.

So an increase is never negative and never more than the series reports.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

__all__ = ["CumulativeSeries", "Increase"]


@dataclass(frozen=True, slots=True)
class Increase:
    """What a series counted over one interval.

    `counts` are the monotonic parts (a sum's value; a histogram's count and
    bucket counts); `total` is a histogram's sum of observed values, which
    may go either way.
    """

    counts: tuple[float, ...]
    total: float


@dataclass(slots=True)
class _Last:
    start_ns: int
    time_ns: int
    counts: tuple[float, ...]
    total: float


class CumulativeSeries:
    """The last point of each cumulative series, least recently seen dropped first."""

    def __init__(self, new_series_max_age_ns: int, max_series: int) -> None:
        self._max_age_ns = new_series_max_age_ns
        self._max_series = max_series
        self._last: OrderedDict[Hashable, _Last] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def increase(
        self,
        series: Hashable,
        start_ns: int,
        time_ns: int,
        counts: Sequence[float],
        total: float = 0.0,
    ) -> Increase | None:
        """The increase since the last point of `series`, None if unknown."""
        point = _Last(start_ns, time_ns, tuple(counts), total)
        last = self._last.get(series)
        if last is not None and time_ns <= last.time_ns:
            return None
        self._remember(series, point)

        if last is None:
            return self._first(point)
        if start_ns != last.start_ns:
            # A restart counts from its own start; a start moved anywhere else
            # says nothing reliable about the interval.
            return _whole(point) if start_ns >= last.time_ns else None
        if len(point.counts) != len(last.counts):
            # The buckets changed under the same start: no difference exists.
            return None
        if any(
            now < before for now, before in zip(point.counts, last.counts, strict=True)
        ):
            return _whole(point)
        counts = tuple(
            now - before for now, before in zip(point.counts, last.counts, strict=True)
        )
        return Increase(counts, point.total - last.total)

    def increase_of(
        self, series: Hashable, start_ns: int, time_ns: int, value: float
    ) -> float | None:
        """`increase` for a series of one count (a sum), without the tuples.

        A sum's series never changes its number of counts, and it has no
        total, so only the rules that apply to one number are left.
        """
        last = self._last.get(series)
        if last is None:
            self._remember(series, _Last(start_ns, time_ns, (value,), 0.0))
            if start_ns <= 0 or start_ns > time_ns:
                return None
            return value if time_ns - start_ns <= self._max_age_ns else None
        if time_ns <= last.time_ns:
            return None

        # Updated in place: the series is known, so nothing is forgotten.
        self._last.move_to_end(series)
        last_start, last_time, before = last.start_ns, last.time_ns, last.counts[0]
        last.start_ns, last.time_ns, last.counts = start_ns, time_ns, (value,)
        if start_ns != last_start:
            return value if start_ns >= last_time else None
        return value if value < before else value - before

    def _first(self, point: _Last) -> Increase | None:
        if point.start_ns <= 0 or point.start_ns > point.time_ns:
            return None
        if point.time_ns - point.start_ns > self._max_age_ns:
            return None
        return _whole(point)

    def _remember(self, series: Hashable, point: _Last) -> None:
        self._last[series] = point
        self._last.move_to_end(series)
        while len(self._last) > self._max_series:
            self._last.popitem(last=False)


def _whole(point: _Last) -> Increase:
    return Increase(point.counts, point.total)
