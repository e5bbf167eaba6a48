"""What a series did at the same time of day on recent days.

A daily batch job, a nightly backup or the evening peak repeats at about the
same local time every day; a value like one seen at that time on one of the
last few days is explained by the series' routine, however rare it is among
all values. `SeasonalMemory` keeps the last value of each time-of-day slot for
the last `days` days and returns the residual of a new value against the
nearest of them (its slot and the two beside it, to allow for jitter).
"""

from __future__ import annotations

import math
from array import array
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["SeasonalMemory"]

_DAY_SECONDS = 86_400


class SeasonalMemory:
    """A ring of `days` days of per-slot values, keyed by local day number."""

    __slots__ = ("_day_of_row", "_slots", "_values", "_zone", "days", "slot_seconds")

    def __init__(self, slot_seconds: int, days: int, timezone: str) -> None:
        if _DAY_SECONDS % slot_seconds:
            raise ValueError(
                f"slot_seconds must divide a day (86400 s), got {slot_seconds!r}"
            )
        self.slot_seconds = slot_seconds
        self.days = days
        self._zone = ZoneInfo(timezone)
        self._slots = _DAY_SECONDS // slot_seconds
        self._values = array("f", [math.nan]) * (days * self._slots)
        # The local day number each ring row holds, so stale rows are ignored.
        self._day_of_row = array("q", [-1]) * days

    def residual(self, x: float, t: datetime) -> float | None:
        """`x` minus the nearest value seen near this time on recent days."""
        day, slot = self._position(t)
        best: float | None = None
        for back in range(1, self.days + 1):
            row = (day - back) % self.days
            if self._day_of_row[row] != day - back:
                continue
            for s in range(max(slot - 1, 0), min(slot + 2, self._slots)):
                ref = self._values[row * self._slots + s]
                if not math.isnan(ref) and (best is None or abs(x - ref) < abs(best)):
                    best = x - ref
        return best

    def add(self, x: float, t: datetime) -> None:
        """Remember `x` as the latest value of its slot today."""
        day, slot = self._position(t)
        row = day % self.days
        if self._day_of_row[row] != day:
            self._day_of_row[row] = day
            start = row * self._slots
            self._values[start : start + self._slots] = (
                array("f", [math.nan]) * self._slots
            )
        # 32-bit storage: held inside its finite range, as in the tails.
        self._values[row * self._slots + slot] = min(max(x, -3.0e38), 3.0e38)

    def _position(self, t: datetime) -> tuple[int, int]:
        offset = t.astimezone(self._zone).utcoffset() or timedelta(0)
        local = int(t.timestamp() + offset.total_seconds())
        day, second = divmod(local, _DAY_SECONDS)
        return day, second // self.slot_seconds
