"""The layers of a digital stack, from what users touch to what they never see."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DEEP_STACK", "USER_FACING", "Layer"]


class Layer(StrEnum):
    FRONTEND = "frontend"
    MOBILE = "mobile"
    SYNTHETIC = "synthetic"
    API = "api"
    BACKEND = "backend"
    DATABASE = "database"
    INFRASTRUCTURE = "infrastructure"
    THIRD_PARTY = "third_party"


# What customers feel: a degradation here is an incident, not a warning.
USER_FACING = frozenset({Layer.FRONTEND, Layer.MOBILE, Layer.SYNTHETIC})
DEEP_STACK = frozenset(Layer) - USER_FACING
