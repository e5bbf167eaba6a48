"""Data points per second of the OTLP metrics decoder, against parsing alone.

The input is a seeded series of export requests as a Collector's kafka
exporter writes them every minute: one service per request (20 services in
turn), each with cumulative counters, gauges and delta histograms of 12
buckets over five attribute sets, 40 data points per request. Consecutive
requests of a service continue its series, so the decoder works in its
steady state (increases, not baselines).

- proto baseline: `ExportMetricsServiceRequest.FromString` of each message.
- json baseline: `orjson.loads` of each message.
- json parse: `orjson.loads` plus `json_format.ParseDict` into the official
  type, which the decoder needs before it can read anything.
- decoder: `connectors.otlp.OtlpDecoder` with default settings, from bytes
  to events and rejections.

Each is timed `--repeat` times over the whole input, with a fresh decoder;
the best run counts, as the one least disturbed by other work on the
machine.

Usage: `python -m foreshock.benchmarks.otlp_decode --json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np
import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from connectors.otlp import OtlpDecoder

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


def _best_rate(run: Callable[[], object], items: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return items / best


def measure(count: int, repeat: int, seed: int) -> dict[str, object]:
    """Points per second of each way to read the same messages."""
    made = requests(count, seed)
    points = sum(_points(r) for r in made)
    protos = [r.SerializeToString() for r in made]
    jsons = [json.dumps(json_format.MessageToDict(r)).encode() for r in made]

    def proto_parse() -> None:
        for data in protos:
            ExportMetricsServiceRequest.FromString(data)

    def json_loads() -> None:
        for data in jsons:
            orjson.loads(data)

    def json_parse() -> None:
        for data in jsons:
            json_format.ParseDict(orjson.loads(data), ExportMetricsServiceRequest())

    def decode(encoding: str, messages: list[bytes]) -> Callable[[], None]:
        def run() -> None:
            decoder = OtlpDecoder()
            for data in messages:
                decoder.decode(data, "metrics", encoding)  # type: ignore[arg-type]

        return run

    rates = {
        "proto_baseline": _best_rate(proto_parse, points, repeat),
        "proto_decoder": _best_rate(decode("proto", protos), points, repeat),
        "json_baseline": _best_rate(json_loads, points, repeat),
        "json_parse": _best_rate(json_parse, points, repeat),
        "json_decoder": _best_rate(decode("json", jsons), points, repeat),
    }
    return {
        "messages": count,
        "points": points,
        **{f"{name}_points_per_s": round(rate) for name, rate in rates.items()},
        "proto_ratio": round(rates["proto_decoder"] / rates["proto_baseline"], 4),
        "json_ratio": round(rates["json_decoder"] / rates["json_baseline"], 4),
        "python": platform.python_version(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark and report its figures."""
    parser = argparse.ArgumentParser(
        prog="python -m foreshock.benchmarks.otlp_decode",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)

    result = measure(args.messages, args.repeat, args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
