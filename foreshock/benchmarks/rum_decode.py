"""Beacons per second of the RUM decoder, against parsing the same bytes alone.

The input is a seeded mix of beacons as browsers send them: mostly real
users with Navigation Timing marks and Web Vitals on product, search and
checkout pages of a few hosts, plus crawlers and headless browsers, synthetic
checks, and pages with an impossible measurement (a mark of 0, a negative
TTFB, a hidden tab).

- baseline: `orjson.loads` of every beacon, nothing else. A decoder that
  parses JSON cannot beat it.
- decoder: `connectors.rum.BeaconDecoder` with default settings, from bytes
  to events and rejections.

Each is timed `--repeat` times over the whole input; the best run counts,
as the one least disturbed by other work on the machine.

Usage: `python -m foreshock.benchmarks.rum_decode --json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from connectors.rum import BeaconDecoder

__all__ = ["beacons", "main", "measure"]

_T0_MS = 1_741_082_400_000
_BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/122.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/17.3 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:123.0) Gecko/20100101 Firefox/123.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/122.0 Mobile Safari/537.36",
)
_BOTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/122.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)
_SYNTHETIC = _BROWSERS[0] + " SyntheticAgent/1.4"
_PATHS = ("/product/{id}", "/search", "/cart", "/checkout/payment", "/")
_HOSTS = ("shop.example.com", "m.shop.example.com")


def beacons(count: int, seed: int = 7) -> list[bytes]:
    """`count` beacons as a collecting endpoint would write them."""
    rng = np.random.default_rng(seed)
    return [_beacon(rng, i) for i in range(count)]


def _beacon(rng: np.random.Generator, i: int) -> bytes:
    start = _T0_MS + i * 20
    ttfb, dcl, load = sorted(rng.lognormal([5.5, 7.0, 7.4], 0.4))
    draw = rng.random()
    ua = _BROWSERS[i % len(_BROWSERS)]
    if draw < 0.05:
        ua = _BOTS[i % len(_BOTS)]
    elif draw < 0.08:
        ua = _SYNTHETIC
    path = _PATHS[i % len(_PATHS)].format(id=int(rng.integers(1, 5000)))
    doc: dict[str, Any] = {
        "type": "rum_beacon",
        "beacon_id": f"b-{i}",
        "received_at": start + 4000,
        "url": f"https://{_HOSTS[i % 2]}{path}?utm_source=mail",
        "ua": ua,
        "visibility_at_start": "hidden" if 0.08 <= draw < 0.09 else "visible",
        "nav": {
            "navigationStart": start,
            "fetchStart": start + 2,
            "responseStart": start + round(ttfb),
            "domContentLoadedEventEnd": start + round(dcl),
            "loadEventEnd": 0 if 0.09 <= draw < 0.10 else start + round(load),
        },
        "vitals": {
            "LCP": round(float(rng.lognormal(7.7, 0.3))),
            "INP": round(float(rng.lognormal(4.8, 0.5))),
            "CLS": round(float(rng.exponential(0.05)), 3),
        },
    }
    return orjson.dumps(doc)


def _best_rate(run: Callable[[], object], items: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return items / best


def measure(count: int, repeat: int, seed: int) -> dict[str, object]:
    """Both rates on the same beacons, and what the decoder made of them."""
    data = beacons(count, seed)
    decode = BeaconDecoder()

    baseline = _best_rate(lambda: [orjson.loads(b) for b in data], count, repeat)
    rate = _best_rate(lambda: [decode(b) for b in data], count, repeat)

    decoded = [decode(b) for b in data]
    return {
        "beacons": count,
        "events": sum(len(events) for events, _ in decoded),
        "rejections": sum(len(rejections) for _, rejections in decoded),
        "beacons_per_s": round(rate),
        "baseline_orjson_per_s": round(baseline),
        "ratio": round(rate / baseline, 3),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="foreshock bench rum", description="RUM beacon decoding speed"
    )
    parser.add_argument("--beacons", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="one JSON line")
    args = parser.parse_args(argv)

    result = measure(args.beacons, args.repeat, args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:>22}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
