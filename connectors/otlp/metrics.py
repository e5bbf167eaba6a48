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

Speed: a message is read metric by metric, and what a metric's points
share is worked out once for the metric (its place, validity of its name,
the protobuf members to read), so that a point costs its own fields only.
Placements are remembered per (resource, metric name), labels per distinct
set of point attributes.
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

from connectors.otlp.events import Collected, MetricPoint
from connectors.otlp.histograms import (
    Percentile,
    explicit_buckets,
    exponential_buckets,
    percentiles,
)
from connectors.otlp.labels import LabelKey, LabelReader, Labels
from connectors.otlp.placement import Attributes, Place, Placer, attributes_of
from connectors.otlp.series import CumulativeSeries, Increase
from connectors.otlp.settings import OtlpSettings
from connectors.otlp.targets import Targets

__all__ = ["MetricDecoder"]

_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_NO_VALUE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_CLIENT_PREFIXES = ("db.client.", "http.client.")
# Distinct placements and label sets remembered before starting afresh.
_MEMORY = 50_000
_KIND = "metric_sample"
# The schema's bound on service and metric names (`foreshock.schema`).
_MAX_NAME = 200

Point = (
    NumberDataPoint
    | HistogramDataPoint
    | ExponentialHistogramDataPoint
    | SummaryDataPoint
)


@dataclass(slots=True)
class _Context:
    """What every point of one metric shares.

    `client` says the metric may count at the target its points name (see
    the module docstring), so each point needs a place of its own. `fast`
    says neither is the case and the metric's names are within the schema's
    bounds, so a point with a time needs no other check to become a sample.
    """

    place: Place
    resource_key: str
    name: str
    unit: str | None
    client: bool
    fast: bool


class _Totals:
    """Running totals of counter increases, per window-store series."""

    def __init__(self, max_series: int) -> None:
        self._max_series = max_series
        self._totals: OrderedDict[Hashable, float] = OrderedDict()

    def add(self, series: Hashable, increase: float) -> tuple[float, bool]:
        """The new total of `series`, and whether the series is new.

        A new series needs a sample of 0 first: the window store takes a
        counter's first sample as its baseline.
        """
        totals = self._totals
        before = totals.get(series)
        total = increase if before is None else before + increase
        totals[series] = total
        totals.move_to_end(series)
        if len(totals) > self._max_series:
            totals.popitem(last=False)
        return total, before is None


class MetricDecoder:
    """Turns export requests into samples; keeps the state of cumulative series."""

    def __init__(
        self, settings: OtlpSettings, placer: Placer, targets: Targets
    ) -> None:
        self._settings = settings
        self._placer = placer
        self._targets = targets
        max_age_ns = round(settings.new_series_max_age_s * 1e9)
        self._series = CumulativeSeries(max_age_ns, settings.max_series)
        self._totals = _Totals(settings.max_series)
        self._labels = LabelReader(_MEMORY)
        self._places: dict[tuple[str, str], Place | None] = {}

    def decode(self, request: ExportMetricsServiceRequest, out: Collected) -> None:
        for resource_metrics in request.resource_metrics:
            resource = attributes_of(resource_metrics.resource.attributes)
            # A string, whose hash is kept, since it is in every series key.
            resource_key = repr(tuple(sorted(resource.items())))
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    self._metric(resource, resource_key, metric, out)

    def _metric(
        self,
        resource: Attributes,
        resource_key: str,
        metric: Metric,
        out: Collected,
    ) -> None:
        name = metric.name
        place = self._place(resource, resource_key, name)
        if place is None:
            out.reject("missing_service", f"metric {name!r}: {_NO_SERVICE}")
            return
        if place.excluded:
            out.reject("excluded_by_rule", f"metric {name!r} of {place.service}")
            return
        self._targets.learn(place.service)
        client = name.startswith(_CLIENT_PREFIXES)
        fast = not client and _fits(name) and _fits(place.service)
        unit = metric.unit or None
        context = _Context(place, resource_key, name, unit, client, fast)

        kind = metric.WhichOneof("data")
        if kind == "gauge":
            self._gauge_points(context, metric.gauge.data_points, out)
        elif kind == "sum":
            data = metric.sum
            if data.is_monotonic:
                temporality = data.aggregation_temporality
                self._sum_points(context, temporality, data.data_points, out)
            else:
                self._gauge_points(context, data.data_points, out)
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
            out.reject("invalid_point", f"metric {name!r} has no data")

    def _place(
        self, resource: Attributes, resource_key: str, name: str
    ) -> Place | None:
        # Rules read the resource and the metric name only, so a placement
        # holds for every point of the metric and every later message.
        key = (resource_key, name)
        if key in self._places:
            return self._places[key]
        if len(self._places) >= _MEMORY:
            self._places.clear()
        place = self._places[key] = self._placer.place(resource, {"metric.name": name})
        return place

    def _gauge_points(
        self, c: _Context, points: Sequence[NumberDataPoint], out: Collected
    ) -> None:
        # Runs once per point, so it keeps to local names, and appends a
        # sample itself when the metric's names are valid (see `_Context`).
        read, name, unit, place = self._labels.read, c.name, c.unit, c.place
        layer, service, kept = place.layer, place.service, place.attributes
        samples, attributes = out.samples, out.attributes
        for point in points[:]:
            if point.flags & _NO_VALUE:
                continue
            # The member of the value that is not set reads as zero: reading
            # both costs less than asking which is set. A -0.0 stays -0.0.
            value = point.as_double
            if not value and point.as_int:
                value = float(point.as_int)
            labels = read(point.attributes)[0]
            fields = MetricPoint(name, "gauge", value, unit, labels)
            time_ns = point.time_unix_nano
            if c.fast and time_ns > 0:
                samples.append((time_ns // 1000, layer, service, _KIND, fields))
                attributes.append(kept)
            else:
                out.metric(time_ns, self._point_place(c, point), fields)

    def _sum_points(
        self,
        c: _Context,
        temporality: int,
        points: Sequence[NumberDataPoint],
        out: Collected,
    ) -> None:
        # Runs once per point, as `_gauge_points` does.
        read, name = self._labels.read, c.name
        series_of, add = self._series.increase_of, self._totals.add
        samples, attributes = out.samples, out.attributes
        for point in points[:]:
            if point.flags & _NO_VALUE:
                continue
            value = point.as_double
            if not value and point.as_int:
                value = float(point.as_int)
            labels, label_key = read(point.attributes)
            if temporality == _CUMULATIVE:
                key = (c.resource_key, name, label_key)
                when = point.time_unix_nano
                increase = series_of(key, point.start_time_unix_nano, when, value)
                if increase is None:
                    continue
            elif temporality == _DELTA:
                if not value >= 0:
                    detail = f"{name}: a monotonic delta of {value!r}"
                    out.reject("invalid_point", detail)
                    continue
                increase, when = value, _when(point, temporality)
            else:
                out.reject("invalid_point", f"{name}: {_NO_TEMPORALITY}")
                continue

            place = self._point_place(c, point) if c.client else c.place
            layer, service = place.layer, place.service
            total, new = add((layer, service, name, label_key), increase)
            if new:
                self._baseline(out, place, when, name, c, labels)
            fields = MetricPoint(name, "counter", total, c.unit, labels)
            if c.fast and when > 0:
                samples.append((when // 1000, layer, service, _KIND, fields))
                attributes.append(place.attributes)
            else:
                out.metric(when, place, fields)

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
        bucket_counts = list(point.bucket_counts)
        if bucket_counts and len(bucket_counts) != len(bounds) + 1:
            out.reject(
                "invalid_point",
                f"{c.name}: {len(bucket_counts)} bucket counts for "
                f"{len(bounds)} bounds",
            )
            return
        labels, label_key = self._labels.read(point.attributes)
        place = self._point_place(c, point)
        counts = (point.count, *bucket_counts)
        total = point.sum if point.HasField("sum") else float("nan")
        increase = self._interval(c, label_key, temporality, point, counts, total, out)
        if increase is None:
            return
        delta = temporality == _DELTA
        lowest = point.min if delta and point.HasField("min") else None
        highest = point.max if delta and point.HasField("max") else None
        buckets = (
            explicit_buckets(bounds, [int(n) for n in increase.counts[1:]])
            if bucket_counts
            else []
        )
        found = percentiles(buckets, self._settings.percentiles, lowest, highest)
        when = _when(point, temporality)
        self._distribution(out, place, when, c, labels, label_key, increase, found)

    def _exponential_point(
        self,
        c: _Context,
        temporality: int,
        point: ExponentialHistogramDataPoint,
        out: Collected,
    ) -> None:
        if point.flags & _NO_VALUE:
            return
        labels, label_key = self._labels.read(point.attributes)
        place = self._point_place(c, point)
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
            c, label_key, temporality, point, counts, total, out, layout
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
        self._distribution(out, place, when, c, labels, label_key, increase, found)

    def _summary_point(
        self, c: _Context, point: SummaryDataPoint, out: Collected
    ) -> None:
        if point.flags & _NO_VALUE:
            return
        labels, label_key = self._labels.read(point.attributes)
        place = self._point_place(c, point)
        reported = {round(v.quantile * 100, 6): v.value for v in point.quantile_values}
        found = [
            Percentile(q, reported[q], reported[q], reported[q], "reported")
            for q in self._settings.percentiles
            if q in reported
        ]
        # A summary's count and sum are cumulative (the data model has no
        # delta summaries).
        increase = self._interval(
            c, label_key, _CUMULATIVE, point, (point.count,), point.sum, out
        )
        time_ns = point.time_unix_nano
        if increase is None:
            self._percentiles(out, place, time_ns, c, labels, found)
            return
        self._distribution(out, place, time_ns, c, labels, label_key, increase, found)

    def _interval(
        self,
        c: _Context,
        label_key: LabelKey,
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
        key = (c.resource_key, c.name, label_key, layout)
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
        label_key: LabelKey,
        increase: Increase,
        found: list[Percentile],
    ) -> None:
        count = increase.counts[0]
        name = f"{c.name}.count"
        self._counter(out, place, time_ns, name, count, c, labels, label_key)
        if count > 0 and increase.total == increase.total:
            mean = increase.total / count
            point = MetricPoint(f"{c.name}.mean", "gauge", mean, c.unit, labels)
            out.metric(time_ns, place, point)
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
            fields = MetricPoint(name, "gauge", value, c.unit, tagged)
            out.metric(time_ns, place, fields)

    def _counter(
        self,
        out: Collected,
        place: Place,
        time_ns: int,
        name: str,
        increase: float,
        c: _Context,
        labels: Labels,
        label_key: LabelKey,
    ) -> None:
        series = (place.layer, place.service, name, label_key)
        total, new = self._totals.add(series, increase)
        if new:
            self._baseline(out, place, time_ns, name, c, labels)
        out.metric(time_ns, place, MetricPoint(name, "counter", total, c.unit, labels))

    def _baseline(
        self,
        out: Collected,
        place: Place,
        time_ns: int,
        name: str,
        c: _Context,
        labels: Labels,
    ) -> None:
        # The window store takes a counter series' first sample as its
        # baseline, so a new running total starts with a 0.
        out.metric(time_ns, place, MetricPoint(name, "counter", 0.0, c.unit, labels))

    def _point_place(self, c: _Context, point: Point) -> Place:
        if not c.client:
            return c.place
        target = self._targets.of(attributes_of(point.attributes))
        if target is None or target.kind == "internal":
            return c.place
        return Place(target.service, target.layer, c.place.attributes)


def _when(point: Point, temporality: int) -> int:
    # A delta point describes (start, time]: timed at its middle, it lands in
    # the window it describes when export intervals match windows, as the
    # spans of the same requests do. A cumulative increase lands with its
    # later point, as native counter samples do.
    start, end = point.start_time_unix_nano, point.time_unix_nano
    if temporality == _DELTA and 0 < start <= end:
        return start + (end - start) // 2
    return end


def _fits(name: str) -> bool:
    return 0 < len(name) <= _MAX_NAME


_NO_SERVICE = "the resource has no service.name and no workload or host name"
_NO_TEMPORALITY = "aggregation temporality is unspecified, which OTLP forbids"
