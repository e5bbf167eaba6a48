"""OTLP metrics as Foreshock `metric_sample` events.

- Gauges, and sums that are not monotonic (an up-down counter's level), are
  gauge samples named after the metric.
- Monotonic sums are counters. Delta points are increases as they are;
  cumulative points become increases by `connectors.otlp.series`. A counter
  sample carries the running total of the increases Foreshock has accounted
  for its (layer, service, metric, labels), so that the window store, which
  takes the difference of consecutive counter samples, adds exactly those
  increases; the first sample of such a total is a 0 that it takes as its
  baseline.
- Histograms (explicit-bucket and exponential) and summaries become
  `<metric>.count` (a counter), `<metric>.mean` (sum / count over the
  interval) and one gauge `<metric>.p<q>` per configured percentile. A
  percentile's label `estimate` says how far the buckets pin it down (see
  `connectors.otlp.histograms`): "interpolated", "bucket_bound" or
  "overflow" (then the value is the histogram's max, an upper bound, and the
  label `above` gives the largest finite bound). A percentile in the overflow
  bucket of a histogram without a recorded max has no number, and no sample.
  Cumulative histograms are differenced like sums; their min and max cover
  the whole series, so they bound nothing for the interval and are unused.
- A delta point is timed at the middle of its interval, a cumulative one at
  its time (see `_when`).
- Client metrics (`db.client.*`, `http.client.*`) whose points name a
  database or a third party count at that target, as client spans do.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    DataPointFlags,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    SummaryDataPoint,
)

from connectors.otlp.events import Collected
from connectors.otlp.histograms import (
    Percentile,
    explicit_buckets,
    exponential_buckets,
    percentiles,
)
from connectors.otlp.placement import Attributes, Place, Placer, attributes_of
from connectors.otlp.series import CumulativeSeries, Increase
from connectors.otlp.settings import OtlpSettings
from connectors.otlp.targets import Targets

__all__ = ["MetricDecoder"]

_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_NO_VALUE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_CLIENT_PREFIXES = ("db.client.", "http.client.")

Labels = dict[str, str]
Point = (
    NumberDataPoint
    | HistogramDataPoint
    | ExponentialHistogramDataPoint
    | SummaryDataPoint
)


@dataclass(frozen=True, slots=True)
class _Context:
    """What every point of one metric shares."""

    place: Place
    resource_key: Hashable
    name: str
    unit: str | None


class _Totals:
    """Running totals of counter increases, per window-store series."""

    def __init__(self, max_series: int) -> None:
        self._max_series = max_series
        self._totals: OrderedDict[Hashable, float] = OrderedDict()

    def samples(self, series: Hashable, increase: float) -> list[float]:
        """The counter values that make the window store add `increase`."""
        total = self._totals.get(series)
        values = [] if total is not None else [0.0]
        total = (total or 0.0) + increase
        values.append(total)
        self._totals[series] = total
        self._totals.move_to_end(series)
        while len(self._totals) > self._max_series:
            self._totals.popitem(last=False)
        return values


class MetricDecoder:
    """Turns export requests into events; keeps the state of cumulative series."""

    def __init__(
        self, settings: OtlpSettings, placer: Placer, targets: Targets
    ) -> None:
        self._settings = settings
        self._placer = placer
        self._targets = targets
        max_age_ns = round(settings.new_series_max_age_s * 1e9)
        self._series = CumulativeSeries(max_age_ns, settings.max_series)
        self._totals = _Totals(settings.max_series)

    def decode(self, request: ExportMetricsServiceRequest, out: Collected) -> None:
        for resource_metrics in request.resource_metrics:
            resource = attributes_of(resource_metrics.resource.attributes)
            resource_key = tuple(sorted(resource.items()))
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    self._metric(resource, resource_key, metric, out)

    def _metric(
        self,
        resource: Attributes,
        resource_key: Hashable,
        metric: Metric,
        out: Collected,
    ) -> None:
        place = self._placer.place(resource, {"metric.name": metric.name})
        if place is None:
            out.reject("missing_service", f"metric {metric.name!r}: {_NO_SERVICE}")
            return
        if place.excluded:
            out.reject("excluded_by_rule", f"metric {metric.name!r} of {place.service}")
            return
        self._targets.learn(place.service)
        context = _Context(place, resource_key, metric.name, metric.unit or None)

        kind = metric.WhichOneof("data")
        if kind == "gauge":
            for point in metric.gauge.data_points:
                self._gauge_point(context, point, out)
        elif kind == "sum":
            for point in metric.sum.data_points:
                self._sum_point(context, metric, point, out)
        elif kind == "histogram":
            temporality = metric.histogram.aggregation_temporality
            for h in metric.histogram.data_points:
                self._histogram_point(context, temporality, h, out)
        elif kind == "exponential_histogram":
            temporality = metric.exponential_histogram.aggregation_temporality
            for e in metric.exponential_histogram.data_points:
                self._exponential_point(context, temporality, e, out)
        elif kind == "summary":
            for s in metric.summary.data_points:
                self._summary_point(context, s, out)
        else:
            out.reject("invalid_point", f"metric {metric.name!r} has no data")

    def _gauge_point(self, c: _Context, point: NumberDataPoint, out: Collected) -> None:
        if point.flags & _NO_VALUE:
            return
        labels, place = self._labels_and_place(c, point.attributes)
        self._gauge(out, place, point.time_unix_nano, c.name, _number(point), c, labels)

    def _sum_point(
        self, c: _Context, metric: Metric, point: NumberDataPoint, out: Collected
    ) -> None:
        if point.flags & _NO_VALUE:
            return
        if not metric.sum.is_monotonic:
            self._gauge_point(c, point, out)
            return
        temporality = metric.sum.aggregation_temporality
        value = _number(point)
        labels, place = self._labels_and_place(c, point.attributes)
        if temporality == _DELTA:
            if not value >= 0:
                out.reject("invalid_point", f"{c.name}: a monotonic delta of {value!r}")
                return
            increase: float | None = value
        elif temporality == _CUMULATIVE:
            key = (c.resource_key, c.name, tuple(sorted(labels.items())))
            found = self._series.increase(
                key, point.start_time_unix_nano, point.time_unix_nano, (value,)
            )
            increase = None if found is None else found.counts[0]
        else:
            out.reject("invalid_point", f"{c.name}: {_NO_TEMPORALITY}")
            return
        if increase is not None:
            when = _when(point, temporality)
            self._counter(out, place, when, c.name, increase, c, labels)

    def _histogram_point(
        self,
        c: _Context,
        temporality: int,
        point: HistogramDataPoint,
        out: Collected,
    ) -> None:
        if point.flags & _NO_VALUE:
            return
        bounds = list(point.explicit_bounds)
        if point.bucket_counts and len(point.bucket_counts) != len(bounds) + 1:
            out.reject(
                "invalid_point",
                f"{c.name}: {len(point.bucket_counts)} bucket counts for "
                f"{len(bounds)} bounds",
            )
            return
        labels, place = self._labels_and_place(c, point.attributes)
        counts = (point.count, *point.bucket_counts)
        total = point.sum if point.HasField("sum") else float("nan")
        increase = self._interval(c, labels, temporality, point, counts, total, out)
        if increase is None:
            return
        delta = temporality == _DELTA
        lowest = point.min if delta and point.HasField("min") else None
        highest = point.max if delta and point.HasField("max") else None
        buckets = (
            explicit_buckets(bounds, [int(n) for n in increase.counts[1:]])
            if point.bucket_counts
            else []
        )
        found = percentiles(buckets, self._settings.percentiles, lowest, highest)
        when = _when(point, temporality)
        self._distribution(out, place, when, c, labels, increase, found)

    def _exponential_point(
        self,
        c: _Context,
        temporality: int,
        point: ExponentialHistogramDataPoint,
        out: Collected,
    ) -> None:
        if point.flags & _NO_VALUE:
            return
        labels, place = self._labels_and_place(c, point.attributes)
        positive, negative = point.positive, point.negative
        counts = (
            point.count,
            point.zero_count,
            *positive.bucket_counts,
            *negative.bucket_counts,
        )
        total = point.sum if point.HasField("sum") else float("nan")
        # Differencing needs the same bucket layout: a new layout is a new series.
        layout = (point.scale, positive.offset, negative.offset)
        increase = self._interval(
            c, labels, temporality, point, counts, total, out, layout
        )
        if increase is None:
            return
        split = 2 + len(positive.bucket_counts)
        ints = [int(n) for n in increase.counts]
        buckets = exponential_buckets(
            point.scale,
            ints[1],
            point.zero_threshold,
            (positive.offset, ints[2:split]),
            (negative.offset, ints[split:]),
        )
        delta = temporality == _DELTA
        lowest = point.min if delta and point.HasField("min") else None
        highest = point.max if delta and point.HasField("max") else None
        found = percentiles(buckets, self._settings.percentiles, lowest, highest)
        when = _when(point, temporality)
        self._distribution(out, place, when, c, labels, increase, found)

    def _summary_point(
        self, c: _Context, point: SummaryDataPoint, out: Collected
    ) -> None:
        if point.flags & _NO_VALUE:
            return
        labels, place = self._labels_and_place(c, point.attributes)
        reported = {round(v.quantile * 100, 6): v.value for v in point.quantile_values}
        found = [
            Percentile(q, reported[q], reported[q], reported[q], "reported")
            for q in self._settings.percentiles
            if q in reported
        ]
        # A summary's count and sum are cumulative (the data model has no
        # delta summaries).
        increase = self._interval(
            c, labels, _CUMULATIVE, point, (point.count,), point.sum, out
        )
        time_ns = point.time_unix_nano
        if increase is None:
            self._percentiles(out, place, time_ns, c, labels, found)
            return
        self._distribution(out, place, time_ns, c, labels, increase, found)

    def _interval(
        self,
        c: _Context,
        labels: Labels,
        temporality: int,
        point: Point,
        counts: Sequence[float],
        total: float,
        out: Collected,
        layout: Hashable = None,
    ) -> Increase | None:
        if temporality == _DELTA:
            return Increase(tuple(counts), total)
        if temporality != _CUMULATIVE:
            out.reject("invalid_point", f"{c.name}: {_NO_TEMPORALITY}")
            return None
        key = (c.resource_key, c.name, tuple(sorted(labels.items())), layout)
        return self._series.increase(
            key, point.start_time_unix_nano, point.time_unix_nano, counts, total
        )

    def _distribution(
        self,
        out: Collected,
        place: Place,
        time_ns: int,
        c: _Context,
        labels: Labels,
        increase: Increase,
        found: list[Percentile],
    ) -> None:
        count = increase.counts[0]
        self._counter(out, place, time_ns, f"{c.name}.count", count, c, labels)
        if count > 0 and increase.total == increase.total:
            mean = increase.total / count
            self._gauge(out, place, time_ns, f"{c.name}.mean", mean, c, labels)
        self._percentiles(out, place, time_ns, c, labels, found)

    def _percentiles(
        self,
        out: Collected,
        place: Place,
        time_ns: int,
        c: _Context,
        labels: Labels,
        found: list[Percentile],
    ) -> None:
        for p in found:
            value = p.reported
            if value is None:
                continue
            tagged = {**labels, "estimate": p.resolution}
            if p.resolution == "overflow":
                tagged["above"] = f"{p.lower:g}"
            name = f"{c.name}.p{p.q:g}"
            self._gauge(out, place, time_ns, name, value, c, tagged)

    def _gauge(
        self,
        out: Collected,
        place: Place,
        time_ns: int,
        name: str,
        value: float,
        c: _Context,
        labels: Labels,
    ) -> None:
        sample = {
            "name": name,
            "type": "gauge",
            "value": value,
            "unit": c.unit,
            "labels": labels,
        }
        out.sample(time_ns, place.layer, place.service, place.attributes, sample)

    def _counter(
        self,
        out: Collected,
        place: Place,
        time_ns: int,
        name: str,
        increase: float,
        c: _Context,
        labels: Labels,
    ) -> None:
        series = (place.layer, place.service, name, tuple(sorted(labels.items())))
        for total in self._totals.samples(series, increase):
            sample = {
                "name": name,
                "type": "counter",
                "value": total,
                "unit": c.unit,
                "labels": labels,
            }
            out.sample(time_ns, place.layer, place.service, place.attributes, sample)

    def _labels_and_place(
        self, c: _Context, pairs: Sequence[object]
    ) -> tuple[Labels, Place]:
        attributes = attributes_of(pairs)  # type: ignore[arg-type]
        labels = {key: str(value) for key, value in attributes.items()}
        if not c.name.startswith(_CLIENT_PREFIXES):
            return labels, c.place
        target = self._targets.of(attributes)
        if target is None or target.kind == "internal":
            return labels, c.place
        return labels, Place(target.service, target.layer, c.place.attributes)


def _when(point: Point, temporality: int) -> int:
    # A delta point describes (start, time]: timed at its middle, it lands in
    # the window it describes when export intervals match windows, as the
    # spans of the same requests do. A cumulative increase lands with its
    # later point, as native counter samples do.
    start, end = point.start_time_unix_nano, point.time_unix_nano
    if temporality == _DELTA and 0 < start <= end:
        return start + (end - start) // 2
    return end


def _number(point: NumberDataPoint) -> float:
    if point.WhichOneof("value") == "as_int":
        return float(point.as_int)
    return point.as_double


_NO_SERVICE = "the resource has no service.name and no workload or host name"
_NO_TEMPORALITY = "aggregation temporality is unspecified, which OTLP forbids"
