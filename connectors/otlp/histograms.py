"""Percentiles from bucket counts, and how far the buckets let one trust them.

A histogram keeps counts per bucket, not values, so a percentile is found by
rank (`ceil(q/100 * count)`, the nearest-rank rule the KPIs use) and placed
inside its bucket by linear interpolation. Two cases need saying:

- `bucket_bound`: the percentile's bucket holds at least half of all
  observations. Interpolation spreads them evenly across the bucket, which
  the data does not say; the percentile is only known to be at most the
  bucket's upper edge. A histogram with 990 of 1,000 requests in (0, 0.1] s
  puts p50 at 0.0505 s and p99 at 0.1 s by interpolation, while their mean
  is 0.012 s.
- `overflow`: the rank falls in the last bucket, (largest bound, +inf).
  Nothing but the histogram's `max`, when recorded, bounds it from above;
  the largest finite bound is only a lower bound and is never reported as
  the percentile.

`Percentile.reported` is the number a KPI takes: the interpolated estimate,
or in the overflow bucket the recorded maximum (an upper bound, so that a
tail that left the buckets shows as a rise rather than a flat line).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

__all__ = [
    "Bucket",
    "Percentile",
    "Resolution",
    "explicit_buckets",
    "exponential_buckets",
    "percentiles",
]

Resolution = Literal["interpolated", "bucket_bound", "overflow", "reported"]


@dataclass(slots=True)
class Bucket:
    """Observations in (lower, upper]; `upper` None is +inf.

    Not frozen: a histogram point makes one per bucket, and a frozen
    dataclass takes several times as long to make.
    """

    lower: float
    upper: float | None
    count: int


class Percentile(NamedTuple):
    """The `q`-th percentile of a histogram, as far as its buckets tell.

    `estimate` is the linear interpolation inside the bucket (None in the
    overflow bucket); the percentile lies in (`lower`, `upper`], where
    `upper` is None when nothing bounds it. A named tuple, as each histogram
    point makes several and a tuple is the quickest to make.
    """

    q: float
    estimate: float | None
    lower: float
    upper: float | None
    resolution: Resolution

    @property
    def reported(self) -> float | None:
        if self.resolution == "overflow":
            return self.upper
        return self.estimate


def explicit_buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[Bucket]:
    """The buckets of an OTLP explicit-bucket histogram.

    The first bucket is (-inf, bounds[0]]; for durations and sizes its lower
    edge is taken as 0 when bounds[0] is positive.
    """
    if len(counts) != len(bounds) + 1:
        raise ValueError(
            f"a histogram with {len(bounds)} bounds has {len(bounds) + 1} "
            f"bucket counts, got {len(counts)}"
        )
    edges = [0.0 if bounds and bounds[0] > 0 else -math.inf, *bounds]
    out = [Bucket(edges[i], bounds[i], counts[i]) for i in range(len(bounds))]
    out.append(Bucket(edges[-1], None, counts[-1]))
    return out


def exponential_buckets(
    scale: int,
    zero_count: int,
    zero_threshold: float,
    positive: tuple[int, Sequence[int]],
    negative: tuple[int, Sequence[int]],
) -> list[Bucket]:
    """The buckets of an OTLP exponential histogram, lowest values first.

    Bucket `index` holds (base**index, base**(index + 1)] with base =
    2**(2**-scale); negative buckets mirror them below zero. `positive` and
    `negative` are (offset, counts).
    """
    step = math.exp2(-scale)

    def edge(index: int) -> float:
        return math.exp2(index * step)

    out: list[Bucket] = []
    offset, counts = negative
    for i in reversed(range(len(counts))):
        index = offset + i
        out.append(Bucket(-edge(index + 1), -edge(index), counts[i]))
    if zero_count:
        out.append(Bucket(-zero_threshold, zero_threshold, zero_count))
    offset, counts = positive
    for i, count in enumerate(counts):
        out.append(Bucket(edge(offset + i), edge(offset + i + 1), count))
    return out


def percentiles(
    buckets: Sequence[Bucket],
    qs: Sequence[float],
    minimum: float | None = None,
    maximum: float | None = None,
) -> list[Percentile]:
    """The percentiles `qs` (in percent) of a histogram with these buckets."""
    total = sum(b.count for b in buckets)
    if total <= 0:
        return []
    return [_percentile(buckets, total, q, minimum, maximum) for q in qs]


def _percentile(
    buckets: Sequence[Bucket],
    total: int,
    q: float,
    minimum: float | None,
    maximum: float | None,
) -> Percentile:
    rank = max(1, math.ceil(q / 100.0 * total))
    below = 0
    for bucket in buckets:
        if bucket.count and below + bucket.count >= rank:
            break
        below += bucket.count

    if bucket.upper is None:
        return Percentile(q, None, bucket.lower, maximum, "overflow")

    if math.isinf(bucket.lower):
        estimate = bucket.upper
    else:
        share = (rank - below) / bucket.count
        estimate = bucket.lower + (bucket.upper - bucket.lower) * share
    estimate = _clamp(estimate, minimum, maximum)
    crowded = 2 * bucket.count >= total
    resolution: Resolution = "bucket_bound" if crowded else "interpolated"
    return Percentile(q, estimate, bucket.lower, bucket.upper, resolution)


def _clamp(value: float, minimum: float | None, maximum: float | None) -> float:
    # Recorded extremes are exact; an interpolation beyond them is wrong.
    if maximum is not None and value > maximum:
        return maximum
    if minimum is not None and value < minimum:
        return minimum
    return value
