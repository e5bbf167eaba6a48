"""Online anomaly detectors for one KPI series each.

`make_detector` builds a detector by name: one of ours (`ensemble`, which
the flows run, `longtail`, the best of ours on NAB, `robust_z`), with
fields of its configuration changed (`ensemble:refractory=0`), any
anomaly detector of River (`river:HalfSpaceTrees,window_size=100`, see
`models.river_adapter`), or one a plugin added with `register_detector`.
`default_detector` builds the long-tail detector, which the NAB benchmark
scores by default; the flows take theirs from `detection.detector`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from difflib import get_close_matches
from functools import cache
from typing import Any, TypeVar

from models.base import Detector, DetectorState, Score
from models.ensemble import EnsembleConfig, EnsembleDetector
from models.longtail import LongTailConfig, LongTailDetector
from models.robust import RobustZDetector

__all__ = [
    "Detector",
    "DetectorState",
    "Score",
    "check_detector",
    "default_detector",
    "detector_names",
    "make_detector",
    "register_detector",
]

log = logging.getLogger(__name__)

_DIRECTIONS = ("up", "down", "both")
_Config = TypeVar("_Config", EnsembleConfig, LongTailConfig)

_VARIANTS: dict[str, Callable[[str], Detector]] = {
    "robust_z": lambda direction: RobustZDetector(direction=direction),
    "ensemble": lambda direction: EnsembleDetector(direction),
    "longtail": lambda direction: LongTailDetector(direction),
}
_DEFAULT = "longtail"


def register_detector(name: str, factory: Callable[[str], Detector]) -> None:
    """Make `name` a detector: `factory(direction)` builds one for a series.

    `direction` is "up", "down" or "both", the side of the KPI that hurts
    (see `default_detector`). A plugin calls this when it is imported (the
    configuration's `extensions.modules`), and `detection.detector = name`
    then selects it.
    """
    if ":" in name or name in _VARIANTS:
        raise ValueError(
            f"detector name {name!r} is taken or has a ':'; choose another name"
        )
    _VARIANTS[name] = factory


def default_detector(direction: str = "both") -> Detector:
    """The long-tail detector for a KPI whose bad side is `direction`.

    `direction` is "up" when only high values are bad (latency, error rate),
    "down" when only low ones are (throughput, availability), "both" otherwise.
    """
    return make_detector(_DEFAULT, direction)


def make_detector(name: str = _DEFAULT, direction: str = "both") -> Detector:
    """A detector named `name` for a KPI whose bad side is `direction`.

    `ensemble:field=value,...` builds the ensemble detector with those
    fields of `EnsembleConfig` changed, `longtail:field=value,...` the
    long-tail detector with fields of `LongTailConfig` changed, and
    `river:Model,argument=value,...` River's `anomaly.Model` with those
    arguments. Raises ValueError, saying what is known, for anything else.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    kind, colon, spec = name.partition(":")
    if colon and kind == "ensemble":
        return EnsembleDetector(direction, _config_from(EnsembleConfig, spec))
    if colon and kind == "longtail":
        return LongTailDetector(direction, _config_from(LongTailConfig, spec))
    if colon and kind == "river":
        # River takes most of a second to import: only when asked for.
        from models.river_adapter import RiverDetector

        return RiverDetector(spec, direction)
    if name not in _VARIANTS:
        raise ValueError(
            f"unknown detector {name!r}; choose from {', '.join(detector_names())}, "
            "'ensemble:<field>=<value>,...', 'longtail:<field>=<value>,...' or "
            "'river:<Model>,<argument>=<value>,...'"
        )
    return _VARIANTS[name](direction)


# A flow makes a detector per series from one name: the name is read once.
# The configurations are frozen, so every detector can share one.
@cache
def _config_from(kind: type[_Config], spec: str) -> _Config:
    defaults = kind()
    changes: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        key, _, text = item.partition("=")
        if not hasattr(defaults, key):
            config = type(defaults).__name__
            close = get_close_matches(key, [f.name for f in fields(defaults)], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{config} has no field {key!r} (in {spec!r}){hint}")
        field_type = type(getattr(defaults, key))
        changes[key] = (
            text.lower() == "true" if field_type is bool else field_type(text)
        )
    return replace(defaults, **changes)


# The longest a detector is fed before its spike: past any warm-up River's
# defaults ask for (a half-space tree's window of 250, and 30 more).
_CHECK_VALUES = 400


def check_detector(name: str) -> None:
    """Build the detector `name` and run it over a short series, so that a
    name or argument it cannot work with fails here, once, and not at a
    flow's first window. Raises ValueError saying what failed.

    The series is calm, with a seven-minute wobble, until the detector is
    ready (some learn for hundreds of values first), then one spike.
    """
    detector = make_detector(name)
    start = datetime(2000, 1, 1, tzinfo=UTC)
    ready = False
    try:
        for i in range(_CHECK_VALUES):
            t = start + timedelta(minutes=i)
            spike = ready or i == _CHECK_VALUES - 1
            x = 500.0 if spike else 10.0 + (i % 7) / 10
            ready = detector.score_one(x, t).state == "ready"
            detector.learn_one(x, t)
            if spike:
                break
    except Exception as error:
        log.debug("detector %s failed its check", name, exc_info=error)
        raise ValueError(
            f"detector {name!r} fails on a test series: {type(error).__name__}: {error}"
        ) from None


def detector_names() -> list[str]:
    """The plain names `make_detector` accepts (besides those with fields)."""
    return sorted(_VARIANTS)
