"""Online anomaly detectors for one KPI series each.

`default_detector` builds what the flows use; `make_detector` builds any
named variant (the benchmarks compare them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
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
    "default_detector",
    "detector_names",
    "make_detector",
]

_DIRECTIONS = ("up", "down", "both")
_Config = TypeVar("_Config", EnsembleConfig, LongTailConfig)

_VARIANTS: dict[str, Callable[[str], Detector]] = {
    "robust_z": lambda direction: RobustZDetector(direction=direction),
    "ensemble": lambda direction: EnsembleDetector(direction),
    "longtail": lambda direction: LongTailDetector(direction),
}
_DEFAULT = "longtail"


def default_detector(direction: str = "both") -> Detector:
    """The detector the flows use for a KPI whose bad side is `direction`.

    `direction` is "up" when only high values are bad (latency, error rate),
    "down" when only low ones are (throughput, availability), "both" otherwise.
    """
    return make_detector(_DEFAULT, direction)


def make_detector(name: str = "default", direction: str = "both") -> Detector:
    """A detector of the variant `name` ("default" for the flows' one).

    `ensemble:field=value,...` builds the ensemble detector with those
    fields of `EnsembleConfig` changed, `longtail:field=value,...` the
    long-tail detector with fields of `LongTailConfig` changed, for
    ablation runs.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    if name.startswith("ensemble:"):
        spec = name.partition(":")[2]
        return EnsembleDetector(direction, _config_from(EnsembleConfig, spec))
    if name.startswith("longtail:"):
        spec = name.partition(":")[2]
        return LongTailDetector(direction, _config_from(LongTailConfig, spec))
    variant = _DEFAULT if name == "default" else name
    if variant not in _VARIANTS:
        raise ValueError(f"unknown detector {name!r}; choose from {detector_names()}")
    return _VARIANTS[variant](direction)


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
            raise ValueError(f"{config} has no field {key!r} (in {spec!r})")
        field_type = type(getattr(defaults, key))
        changes[key] = (
            text.lower() == "true" if field_type is bool else field_type(text)
        )
    return replace(defaults, **changes)


def detector_names() -> list[str]:
    """The names `make_detector` accepts, besides "default"."""
    return sorted(_VARIANTS)
