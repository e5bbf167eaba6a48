"""Configuration: one typed tree, from defaults, a TOML file and the environment.

Environment variables override the file: ``FORESHOCK_WINDOW__LENGTH_S=30``
sets `window.length_s`; ``KAFKA_BOOTSTRAP_SERVERS`` names the broker, as in
most Kafka tooling. Every value is checked when the configuration is loaded,
so a mistake is reported at start-up with the setting's name.
"""

from __future__ import annotations

import os
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from foreshock.windows import EPOCH, WindowSpec

# Alerting wants a score that stays high while a KPI stays wrong, so the
# flows run the ensemble without the repeat suppression that suits a
# benchmark counting only the first detection of each anomaly.
DEFAULT_DETECTOR = "ensemble:refractory=0"
DEFAULT_THRESHOLD = 0.7

__all__ = ["Settings", "load_settings"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "localhost:9092"
    input_topics: list[str] = Field(default_factory=lambda: ["telemetry"])
    group_id: str = "foreshock"
    starting_offset: Literal["earliest", "latest"] = "earliest"
    batch_size: int = Field(default=10_000, ge=1)
    # Passed to confluent-kafka verbatim (security.protocol, sasl.*, ssl.*).
    client: dict[str, str] = Field(default_factory=dict)


class TopicSettings(_Section):
    kpis: str = "kpis"
    anomalies: str = "anomalies"
    incidents: str = "incidents"
    early_warnings: str = "early-warnings"
    dead_letters: str = "dead-letters"
    late_events: str = "late-events"


class WindowSettings(_Section):
    length_s: float = Field(default=60.0, gt=0)
    allowed_lateness_s: float = Field(default=30.0, ge=0)
    align_to: datetime = EPOCH
    forget_after_windows: int = Field(default=60, ge=1)

    def spec(self) -> WindowSpec:
        return WindowSpec(self.length_s, self.allowed_lateness_s, self.align_to)


class DetectionSettings(_Section):
    detector: str = DEFAULT_DETECTOR
    threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0, le=1)


class CorrelationSettings(_Section):
    topology: Path | None = None
    lookback_s: float = Field(default=900.0, gt=0)
    resolve_after_windows: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=1800.0, ge=0)
    confirm_windows: int = Field(default=1, ge=1)


class Settings(BaseSettings):
    """Everything a Foreshock job can be told."""

    model_config = SettingsConfigDict(
        env_prefix="FORESHOCK_", env_nested_delimiter="__", extra="forbid"
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    window: WindowSettings = Field(default_factory=WindowSettings)
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    correlation: CorrelationSettings = Field(default_factory=CorrelationSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, which is passed in as init data.
        return env_settings, init_settings


def load_settings(path: Path | None = None) -> Settings:
    """Defaults, then the TOML file at `path` if given, then the environment."""
    data: dict[str, object] = {}
    if path is not None:
        with path.open("rb") as f:
            data = tomllib.load(f)
    settings = Settings(**data)  # type: ignore[arg-type]
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        settings.kafka.bootstrap_servers = bootstrap
    return settings
