"""Data points per second of the OTLP metrics decoder, against parsing alone.

The input is a seeded series of export requests as a Collector's kafka
exporter writes them every minute: one service per request (20 services in
turn), each with cumulative counters, gauges and delta histograms of 12
buckets over five attribute sets, 40 data points per request. Consecutive
requests of a service continue its series, so the decoder works in its
steady state (increases, not baselines). Two workloads are read: "numbers",
the counters and gauges alone (30 points a request), and "mixed", with the
histograms too (a histogram point makes about six samples).

Ways to read the same messages, each timed once per run:

- proto_parse: `ExportMetricsServiceRequest.FromString`.
- proto_samples: `OtlpDecoder.scan`, bytes to window samples and
  rejections, what the window step takes.
- proto_events: `OtlpDecoder.decode`, bytes to `Event` objects.
- proto_window: the window step of the main flow (`flows.steps.WindowLogic`
  with the registered `otlp_proto_metrics` decoder, default windows) over
  batches of 100 messages: decoding, windows and their KPIs, what one
  partition of an OTLP topic costs. proto_window_events: the same step
  given the decoder as a plain function, so that it adds events one by one.
- json_loads: `orjson.loads`.
- json_parse: `orjson.loads` plus `json_format.ParseDict` into the official
  type, which the decoder needs before it can read anything.
- json_samples and json_events: as for protobuf, from OTLP/JSON.

A run times every way once, in turn, with a fresh decoder, so that the
ratios of one run compare ways under the same load. The machine is shared,
so each figure is given as the median of the runs and their range, by wall
clock and by the process's CPU time (which other work on the machine
disturbs less).

Usage: `python -m foreshock.benchmarks.otlp_decode --json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from connectors.messages import RawBatch, RawMessage
from connectors.otlp import Encoding, OtlpDecoder
from flows.steps import WindowLogic
from foreshock.decode import decoder_for
from foreshock.windows import WindowStore

__all__ = ["main", "measure", "requests"]

_NS = 1_000_000_000
_START_NS = 1741082400 * _NS
_SERVICES = 20
_ROUTES = ("/cart", "/checkout", "/search", "/product", "/login")
_BOUNDS = (5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0)


def requests(count: int, seed: int = 7) -> list[ExportMetricsServiceRequest]:
    """`count` export requests, each a minute after the last of its service."""
    rng = np.random.default_rng(seed)
    totals = np.zeros((_SERVICES, 4, len(_ROUTES)))
    out = []
    for i in range(count):
        service = i % _SERVICES
        time_ns = _START_NS + (i // _SERVICES + 1) * 60 * _NS
        totals[service] += rng.integers(0, 500, size=totals[service].shape)
        out.append(_request(rng, service, time_ns, totals[service]))
    return out


def _request(
    rng: np.random.Generator, service: int, time_ns: int, totals: np.ndarray
) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.extend(
        [_pair("service.name", f"svc-{service}-api"), _pair("host.name", "node-1")]
    )
    metrics = resource_metrics.scope_metrics.add().metrics
    for k in range(4):
        metric = metrics.add(name=f"app.requests.{k}", unit="{request}")
        metric.sum.aggregation_temporality = pb.AGGREGATION_TEMPORALITY_CUMULATIVE
        metric.sum.is_monotonic = True
        for r, route in enumerate(_ROUTES):
            point = metric.sum.data_points.add(
                start_time_unix_nano=_START_NS, time_unix_nano=time_ns
            )
            point.as_int = int(totals[k, r])
            point.attributes.append(_pair("http.route", route))
    for k in range(2):
        metric = metrics.add(name=f"app.queue.{k}", unit="{item}")
        for route in _ROUTES:
            point = metric.gauge.data_points.add(time_unix_nano=time_ns)
            point.as_double = float(rng.normal(50, 5))
            point.attributes.append(_pair("http.route", route))
    for k in range(2):
        metric = metrics.add(name=f"app.duration.{k}", unit="ms")
        metric.histogram.aggregation_temporality = pb.AGGREGATION_TEMPORALITY_DELTA
        for route in _ROUTES:
            counts = rng.integers(0, 200, size=len(_BOUNDS) + 1)
            metric.histogram.data_points.add(
                start_time_unix_nano=time_ns - 60 * _NS,
                time_unix_nano=time_ns,
                count=int(counts.sum()),
                sum=float(counts.sum() * 80.0),
                bucket_counts=[int(n) for n in counts],
                explicit_bounds=_BOUNDS,
                attributes=[_pair("http.route", route)],
            )
    return request


def _pair(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _points(request: ExportMetricsServiceRequest) -> int:
    total = 0
    for resource_metrics in request.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    total += len(getattr(metric, kind).data_points)
    return total


def _numbers_only(request: ExportMetricsServiceRequest) -> ExportMetricsServiceRequest:
    """A copy of `request` without its histograms."""
    copy = ExportMetricsServiceRequest()
    copy.CopyFrom(request)
    for resource_metrics in copy.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            kept = [m for m in scope.metrics if m.WhichOneof("data") in _NUMBERS]
            del scope.metrics[:]
            scope.metrics.extend(kept)
    return copy


_NUMBERS = ("gauge", "sum")
_FORMAT = "otlp_proto_metrics"
_SHARD = "otlp_metrics:0"
# Messages per batch of the window step, as a Kafka source hands them over.
_BATCH = 100
_CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "cpu": time.process_time,
}


def _ways(protos: list[bytes], jsons: list[bytes]) -> dict[str, Callable[[], None]]:
    """Every way to read the messages, by name, each a run over all of them."""

    def proto_parse() -> None:
        for data in protos:
            ExportMetricsServiceRequest.FromString(data)

    def json_loads() -> None:
        for data in jsons:
            orjson.loads(data)

    def json_parse() -> None:
        for data in jsons:
            json_format.ParseDict(orjson.loads(data), ExportMetricsServiceRequest())

    def decoder(encoding: Encoding, samples: bool) -> Callable[[], None]:
        messages = protos if encoding == "proto" else jsons

        def run() -> None:
            decoder = OtlpDecoder()
            read = decoder.scan if samples else decoder.decode
            for data in messages:
                read(data, "metrics", encoding)

        return run

    def window(samples: bool) -> Callable[[], None]:
        batches = [
            RawBatch(
                "otlp_metrics:0", tuple(map(_raw, protos[i : i + _BATCH])), _FORMAT
            )
            for i in range(0, len(protos), _BATCH)
        ]

        def run() -> None:
            scanning = decoder_for(_FORMAT)
            # A plain function takes the window step's event-by-event path.
            chosen = scanning if samples else lambda data: scanning(data)
            step = WindowLogic(WindowStore(), {_FORMAT: chosen})
            for batch in batches:
                step.on_item(batch)
            step.on_eof()

        return run

    return {
        "proto_parse": proto_parse,
        "proto_samples": decoder("proto", samples=True),
        "proto_events": decoder("proto", samples=False),
        "proto_window": window(samples=True),
        "proto_window_events": window(samples=False),
        "json_loads": json_loads,
        "json_parse": json_parse,
        "json_samples": decoder("json", samples=True),
        "json_events": decoder("json", samples=False),
    }


def _raw(data: bytes) -> RawMessage:
    return RawMessage("otlp_metrics", 0, 0, None, data)


def _time(run: Callable[[], None]) -> dict[str, float]:
    started = {name: clock() for name, clock in _CLOCKS.items()}
    run()
    return {name: clock() - started[name] for name, clock in _CLOCKS.items()}


def _summary(values: list[float], digits: int) -> dict[str, float]:
    return {
        "median": round(float(np.median(values)), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def _workload(made: list[ExportMetricsServiceRequest], runs: int) -> dict[str, object]:
    """Rates and ratios to parsing, per clock, over `runs` runs."""
    points = sum(_points(r) for r in made)
    protos = [r.SerializeToString() for r in made]
    jsons = [json.dumps(json_format.MessageToDict(r)).encode() for r in made]
    ways = _ways(protos, jsons)
    seconds: dict[str, dict[str, list[float]]] = {c: {} for c in _CLOCKS}
    for _ in range(runs):
        for name, run in ways.items():
            for clock, spent in _time(run).items():
                seconds[clock].setdefault(name, []).append(spent)

    out: dict[str, object] = {"points": points}
    for clock, by_way in seconds.items():
        rates = {w: _summary([points / t for t in ts], 0) for w, ts in by_way.items()}
        ratios = {
            f"{w}_to_{base}": _summary(
                [b / t for b, t in zip(by_way[base], by_way[w], strict=True)], 4
            )
            for w, base in _RATIOS
        }
        out[clock] = {"points_per_s": rates, "ratios": ratios}
    return out


# Each decoder against the parse its input cannot do without.
_RATIOS = (
    ("proto_samples", "proto_parse"),
    ("proto_events", "proto_parse"),
    ("proto_window", "proto_parse"),
    ("json_samples", "json_parse"),
    ("json_samples", "json_loads"),
)


def measure(count: int, runs: int, seed: int) -> dict[str, object]:
    """Points per second of each way to read the same messages, per workload."""
    made = requests(count, seed)
    return {
        "messages": count,
        "runs": runs,
        "numbers": _workload([_numbers_only(r) for r in made], runs),
        "mixed": _workload(made, runs),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark and report its figures."""
    parser = argparse.ArgumentParser(
        prog="python -m foreshock.benchmarks.otlp_decode",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)

    result = measure(args.messages, args.runs, args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0


def _print(result: dict[str, Any]) -> None:
    print(f"{result['messages']} messages, {result['runs']} runs, {result['machine']}")
    for workload in ("numbers", "mixed"):
        figures = result[workload]
        print(f"\n{workload}: {figures['points']} points; median [min-max]")
        for clock in _CLOCKS:
            print(f"  {clock} clock")
            for name, rate in figures[clock]["points_per_s"].items():
                print(f"    {name:>22} {_range(rate, ',.0f')} points/s")
            for name, ratio in figures[clock]["ratios"].items():
                print(f"    {name:>22} {_range(ratio, '.4f')}")


def _range(figure: dict[str, float], spec: str) -> str:
    low, high = format(figure["min"], spec), format(figure["max"], spec)
    return f"{format(figure['median'], spec)} [{low}-{high}]"


if __name__ == "__main__":
    raise SystemExit(main())
