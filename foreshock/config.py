"""Configuration: one typed tree, from defaults, a TOML file and the environment.

Environment variables override the file: ``FORESHOCK_WINDOW__LENGTH_S=30``
sets `window.length_s`; ``KAFKA_BOOTSTRAP_SERVERS`` names the broker, as in
most Kafka tooling. Every value is checked when the configuration is loaded,
so a mistake is reported at start-up with the setting's name.
"""

from __future__ import annotations

import difflib
import importlib
import json
import logging
import os
import re
import socket
import tomllib
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from connectors.otlp import format_for_topic
from connectors.otlp.settings import OtlpSettings
from connectors.rum import RumSettings
from foreshock.decode import CHANGE_FORMAT, InputLimits, format_names
from foreshock.errors import UserError
from foreshock.windows import EPOCH, WindowPolicy, WindowSpec
from models import check_detector

if TYPE_CHECKING:
    from connectors.webhook import WebhookConfig

# Alerting wants a score that stays high while a KPI stays wrong, so the
# flows run the ensemble without the repeat suppression that suits a
# benchmark counting only the first detection of each anomaly.
DEFAULT_DETECTOR = "ensemble:refractory=0"
DEFAULT_THRESHOLD = 0.7

__all__ = ["Settings", "load_settings", "unknown_setting"]

log = logging.getLogger(__name__)


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
    # Input topic -> format of its records (`foreshock.decode` lists them);
    # a topic not named here carries native events.
    formats: dict[str, str] = Field(default_factory=dict)
    # Missing input and output topics are created at start with the
    # broker's defaults; false where topics are managed elsewhere: a missing
    # one then stops the job at start, named.
    create_topics: bool = True
    # A record value larger than this is a dead letter ("too_large") before
    # any decoder reads it; 0 leaves only the broker's own bound.
    max_message_bytes: int = Field(default=4_194_304, ge=0)
    # How much of a refused record's value its dead letter carries, so that
    # the letter fits in a Kafka message whatever it refuses; beyond it the
    # letter keeps the first bytes and the whole's size and SHA-256. 0 keeps
    # the value whole.
    dead_letter_bytes: int = Field(default=262_144, ge=0)

    def client_config(self) -> dict[str, str]:
        """What every Kafka client of the job is given: the brokers and
        `client`."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.client}

    @model_validator(mode="after")
    def _known_formats(self) -> KafkaSettings:
        known = [*format_names(), CHANGE_FORMAT]
        for topic, name in self.formats.items():
            if name not in known:
                raise ValueError(
                    f"kafka.formats[{topic!r}] is {name!r}, not a known format; "
                    f"use one of {', '.join(known)}"
                )
            if topic not in self.input_topics:
                raise ValueError(
                    f"kafka.formats names topic {topic!r}, which is not in "
                    f"kafka.input_topics {self.input_topics!r}; add it there"
                )
        return self


class TopicSettings(_Section):
    kpis: str = "kpis"
    anomalies: str = "anomalies"
    incidents: str = "incidents"
    early_warnings: str = "early-warnings"
    dead_letters: str = "dead-letters"
    late_events: str = "late-events"
    data_quality: str = "data-quality"
    # Verdicts and silences from on-call engineers (`foreshock feedback`).
    feedback: str = "feedback"


class OutputSettings(_Section):
    """How records are written to their topics.

    `cloudevents`, the default, wraps each record in a CloudEvents 1.0
    structured-mode event; `cloudevents-binary` puts the attributes in `ce_*`
    Kafka headers instead (the CloudEvents Kafka binding); `native` is each
    record's own JSON with a `foreshock-record` header naming its type.
    """

    format: Literal["native", "cloudevents", "cloudevents-binary"] = "cloudevents"
    # The CloudEvents `source`: which deployment and flow produced the event.
    source: str = Field(default="foreshock/foreshock", min_length=1)
    # `dataschema` is `<schema_base>/<kind>.schema.json`; point it at wherever
    # the files of `schemas/` are published.
    schema_base: str = Field(default="urn:foreshock:schemas", min_length=1)


class WindowSettings(_Section):
    """Event-time windows and what guards them; `foreshock.windows` explains.

    `slide_s` left out makes tumbling windows; a shorter slide makes sliding
    ones. For every bound below, 0 turns it off.

    - `idle_timeout_s`: a shard whose events stopped advancing for this long
      lets processing time close its windows (`closed_by="idle_timeout"`).
    - `backfill_after_s`: a window that ends this long before the reference
      time when it closes is marked `backfill` and pages nobody; the
      reference is processing time or, with `backfill_clock = "receive"`,
      the latest Kafka receive time (for replays that keep timestamps).
      900 (15 minutes) by default, so that a backlog read after downtime
      pages nobody; replays of recorded data that should page as if live
      set 0 (or keep timestamps and use the receive clock).
    - `max_clock_ahead_s` / `max_clock_behind_s`: an event this far ahead of
      (behind) its Kafka receive time is quarantined as clock skew. Ahead,
      the allowed lateness by default (at least a second): an event further
      ahead would by itself move the watermark far enough to make honest
      events that arrive on time late, and blind its shard until real time
      catches up with it.
    - `max_services` per shard and `max_series_per_service` (metric names
      and counter label sets): beyond them, events are dead letters with
      reason "series_cap".
    - `restatable_kinds` / `restate_within_s`: an event of these kinds
      whose window has closed, but no older than this, restates the window
      (app crashes uploaded at the next launch) instead of being late.
    """

    length_s: float = Field(default=60.0, gt=0)
    slide_s: float | None = Field(default=None, gt=0)
    allowed_lateness_s: float = Field(default=30.0, ge=0)
    align_to: datetime = EPOCH
    forget_after_windows: int = Field(default=60, ge=1)
    idle_timeout_s: float = Field(default=300.0, ge=0)
    backfill_after_s: float = Field(default=900.0, ge=0)
    backfill_clock: Literal["processing", "receive"] = "processing"
    max_clock_ahead_s: float | None = Field(default=None, ge=0)
    max_clock_behind_s: float = Field(default=0.0, ge=0)
    max_services: int = Field(default=20_000, ge=0)
    max_series_per_service: int = Field(default=1_000, ge=0)
    restatable_kinds: list[Literal["app_crash"]] = ["app_crash"]
    restate_within_s: float = Field(default=86_400.0, ge=0)

    @model_validator(mode="after")
    def _valid_spec(self) -> WindowSettings:
        # The spec checks length against slide: reported at load time.
        try:
            self.spec()
        except ValueError as error:
            raise ValueError(f"window: {error}") from error
        return self

    def spec(self) -> WindowSpec:
        return WindowSpec(
            self.length_s, self.allowed_lateness_s, self.align_to, self.slide_s
        )

    def policy(self) -> WindowPolicy:
        return WindowPolicy(
            idle_timeout_s=self.idle_timeout_s or None,
            backfill_after_s=self.backfill_after_s or None,
            backfill_clock=self.backfill_clock,
            max_services=self.max_services or None,
            max_series_per_service=self.max_series_per_service or None,
            restatable_kinds=frozenset(self.restatable_kinds),
            restate_within_s=self.restate_within_s or None,
        )

    def _ahead_bound(self) -> float:
        if self.max_clock_ahead_s is not None:
            return self.max_clock_ahead_s
        return max(self.allowed_lateness_s, 1.0)

    def input_limits(self, max_message_bytes: int) -> InputLimits:
        return InputLimits(
            max_message_bytes=max_message_bytes or None,
            max_ahead_s=self._ahead_bound() or None,
            max_behind_s=self.max_clock_behind_s or None,
        )


class DetectionSettings(_Section):
    """Which detector watches each KPI series (`models.make_detector` names
    them), and the score from which a window is anomalous.

    `by_kpi` gives the series of some KPIs another detector than
    `detector`: `{ query_time_p95_ms = "river:HalfSpaceTrees" }`.
    """

    detector: str = DEFAULT_DETECTOR
    by_kpi: dict[str, str] = Field(default_factory=dict)
    threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0, le=1)

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, name: str) -> str:
        # Tried once here, so that a wrong name stops the job at start-up
        # rather than when the first window closes.
        check_detector(name)
        return name

    @field_validator("by_kpi")
    @classmethod
    def _known_detectors(cls, names: dict[str, str]) -> dict[str, str]:
        for kpi, name in names.items():
            try:
                check_detector(name)
            except ValueError as error:
                raise ValueError(f"by_kpi.{kpi}: {error}") from None
        return names


class ExtensionSettings(_Section):
    """Python modules imported before the rest of the settings are read.

    A module registers what it adds when imported: a format with
    `foreshock.decode.register_format`, a detector with
    `models.register_detector`. They must be importable (installed, or on
    PYTHONPATH) in every process of the job.
    """

    modules: list[str] = Field(default_factory=list)


class CorrelationSettings(_Section):
    topology: Path | None = None
    lookback_s: float = Field(default=900.0, gt=0)
    resolve_after_windows: int = Field(default=5, ge=1)
    resolve_excess_share: float = Field(default=0.25, ge=0)
    cooldown_s: float = Field(default=1800.0, ge=0)
    confirm_windows: int = Field(default=1, ge=1)
    warn_confirm_windows: int = Field(default=2, ge=1)
    warn_witnesses: int = Field(default=2, ge=0)
    warn_noisy_blips: int = Field(default=3, ge=0)
    warn_noisy_lookback_s: float = Field(default=10_800.0, gt=0)
    warn_min_utilisation_change: float = Field(default=0.05, ge=0)
    standing_growth: float = Field(default=0.5, ge=0)
    standing_windows: int = Field(default=2, ge=1)
    episode_gap_s: float = Field(default=180.0, gt=0)
    page_while_warming_up: bool = True
    silence_windows: int = Field(default=2, ge=1)
    change_grace_s: float = Field(default=300.0, ge=0)
    change_lookback_s: float = Field(default=1800.0, ge=0)
    change_regression_ratio: float = Field(default=1.5, gt=1)
    infer_calls: bool = False
    settle_windows: int = Field(default=0, ge=0)


class AlertmanagerSettings(_Section):
    """Where incidents and early warnings go as alerts; none go without `url`.

    connectors/alertmanager.py says what each setting does, and
    deploy/alertmanager.yml is a matching Alertmanager configuration.
    """

    url: str | None = None
    runbook_url: str | None = None
    report_url: str | None = None
    resend_interval_s: float = Field(default=60.0, gt=0)
    hold_s: float = Field(default=300.0, gt=0)
    warning_hold_s: float = Field(default=1800.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)
    attempts: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> AlertmanagerSettings:
        # The connector checks its own settings; asking it here reports a
        # mistake when the configuration is loaded, not at the first alert.
        if self.url is not None:
            from connectors.alertmanager import AlertmanagerConfig

            AlertmanagerConfig(**self.model_dump())
        return self


class WebhookSettings(_Section):
    """Where incidents and early warnings go as chat messages; none without `url`.

    The payload is Slack-compatible; connectors/webhook.py says what each
    setting does. `url` holds the webhook's secret, so it is kept out of
    reprs and logs.
    """

    url: SecretStr | None = None
    link: str | None = None
    statuses: tuple[Literal["open", "updated", "resolved"], ...] = (
        "open",
        "resolved",
    )
    early_warnings: bool = True
    timeout_s: float = Field(default=5.0, gt=0)
    attempts: int = Field(default=4, ge=1)
    backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> WebhookSettings:
        # As for Alertmanager: a mistake is reported when the file is loaded.
        self.config()
        return self

    def config(self) -> WebhookConfig | None:
        """The notifier's configuration, or None when no `url` is set."""
        from connectors.webhook import WebhookConfig

        if self.url is None:
            return None
        fields = self.model_dump(exclude={"url"})
        return WebhookConfig(self.url.get_secret_value(), **fields)


class ReportSettings(_Section):
    """Incident reports: one self-contained HTML page per incident.

    With `dir` set, `foreshock run` writes `<dir>/<incident id>.html` each
    time an incident opens, changes or resolves. `base_url` is where that
    folder is served; pages and `foreshock incidents` link to it. The pages
    plot the last `history_s` of each KPI series.
    """

    dir: Path | None = None
    base_url: str | None = Field(default=None, pattern=r"^(https?|file)://")
    history_s: float = Field(default=7200.0, gt=0)


class FeedbackSettings(_Section):
    """Verdicts and silences from on-call engineers (`foreshock.feedback`).

    With `enabled`, `foreshock run` reads `topics.feedback` (which must exist)
    from its start, so that a restart keeps every verdict still in force, and
    a suppressed series neither pages nor warns.
    """

    enabled: bool = False


class MetricsSettings(_Section):
    """Foreshock's own Prometheus metrics (see `foreshock.telemetry`).

    `foreshock run` serves them at `http://address:port/metrics` unless
    `enabled` is false.
    """

    enabled: bool = True
    address: str = "0.0.0.0"
    port: int = Field(default=9479, ge=0, le=65535)


class RecoverySettings(_Section):
    """Snapshots of the flow's state, so that a crash loses nothing.

    With `dir` set, `foreshock run` snapshots every step's state and every
    Kafka partition's next offset into `partitions` SQLite files in `dir`
    each `snapshot_interval_s`, and on start resumes from the latest
    snapshot that every file holds (`foreshock.recovery` says how). Output
    of the interval after that snapshot is published again, with the same
    keys and content. `partitions` is fixed once the store exists: pick the
    most processes the flow will ever run on. `backup_interval_s` keeps
    superseded snapshots that long, for a backup of `dir` taken meanwhile.
    `snapshot_interval_s` is also the epoch length without recovery.

    In a cluster, each process has a `dir` of its own (a volume per pod)
    and keeps there the files whose number, modulo the number of processes,
    is its `process_id`; with `shared`, every process uses one `dir`
    (processes on one host) and makes its own files beside the others'.
    """

    dir: Path | None = None
    shared: bool = False
    partitions: int = Field(default=1, ge=1)
    snapshot_interval_s: float = Field(default=10.0, gt=0)
    backup_interval_s: float = Field(default=0.0, ge=0)


class ClusterSettings(_Section):
    """The processes that run one flow together, each owning Kafka partitions.

    `addresses` lists `host:port` of every process, the same list for all;
    this process is `addresses[process_id]`. Left out, `process_id` is the
    number that ends the host name (`foreshock-2` is 2), as in a Kubernetes
    StatefulSet, read by `this_process` when `foreshock run` starts: the
    other commands (replay, incidents, topology) are no process of the
    cluster, and read the same file on any host. No `addresses`: one process.
    """

    addresses: list[str] = Field(default_factory=list)
    process_id: int | None = Field(default=None, ge=0)
    workers_per_process: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _own_address(self) -> ClusterSettings:
        if self.addresses and (self.process_id or 0) >= len(self.addresses):
            raise ValueError(
                f"cluster.process_id is {self.process_id}, but cluster.addresses "
                f"names only {len(self.addresses)} processes; list every process"
            )
        return self

    def this_process(self) -> ClusterSettings:
        """These settings with `process_id` known, for a process that runs
        the flow: as set, or else from the host name."""
        if not self.addresses or self.process_id is not None:
            return self
        hostname = socket.gethostname()
        process_id = _ordinal_of_host(hostname)
        if process_id >= len(self.addresses):
            raise UserError(
                f"the host name {hostname!r} makes cluster.process_id {process_id}, "
                f"but cluster.addresses names only {len(self.addresses)} "
                "processes; list every process, or set cluster.process_id"
            )
        return self.model_copy(update={"process_id": process_id})


def _ordinal_of_host(hostname: str) -> int:
    found = re.search(r"-(\d+)$", hostname.split(".")[0])
    if found is None:
        raise UserError(
            f"cluster.process_id is not set and the host name {hostname!r} does "
            "not end in '-<number>'; set cluster.process_id"
        )
    return int(found.group(1))


class Settings(BaseSettings):
    """Everything a Foreshock job can be told."""

    model_config = SettingsConfigDict(
        env_prefix="FORESHOCK_", env_nested_delimiter="__", extra="forbid"
    )

    extensions: ExtensionSettings = Field(default_factory=ExtensionSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    window: WindowSettings = Field(default_factory=WindowSettings)
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    correlation: CorrelationSettings = Field(default_factory=CorrelationSettings)
    rum: RumSettings = Field(default_factory=RumSettings)
    otlp: OtlpSettings = Field(default_factory=OtlpSettings)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    reports: ReportSettings = Field(default_factory=ReportSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)

    @model_validator(mode="after")
    def _otlp_signals(self) -> Settings:
        # The Collector writes each OTLP signal to its own topic without naming
        # the signal, so a bare "otlp_proto" topic takes it from otlp.signals.
        formats = self.kafka.formats
        for topic, name in formats.items():
            formats[topic] = format_for_topic(topic, name, self.otlp.signals)
        return self

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


# Settings that name files: a relative path in a TOML file is read from the
# file's folder, wherever the command runs.
_PATHS = (("correlation", "topology"), ("reports", "dir"), ("recovery", "dir"))


def load_settings(path: Path | None = None) -> Settings:
    """Defaults, then the TOML file at `path` if given, then the environment."""
    data: dict[str, object] = {}
    if path is not None:
        if path.is_dir():
            raise UserError(f"{path} is a folder; --config takes a TOML file")
        with path.open("rb") as f:
            data = tomllib.load(f)
        _anchor_paths(data, path.parent)
    _import_extensions(data.get("extensions"), os.environ)
    _warn_of_unknown_sections(os.environ)
    settings = Settings(**data)  # type: ignore[arg-type]
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        settings.kafka.bootstrap_servers = bootstrap
    return settings


def _import_extensions(section: object, environ: Mapping[str, str]) -> None:
    """Import the modules `extensions.modules` names, before the formats and
    detectors they register are looked up by the other sections.

    As for every setting, the environment (`FORESHOCK_EXTENSIONS__MODULES`,
    a JSON list) wins over the file.
    """
    modules = section.get("modules") if isinstance(section, dict) else None
    # Read as the settings read them: names in any case, the field itself
    # before the section whole.
    named = {key.upper(): value for key, value in environ.items()}
    try:
        if "FORESHOCK_EXTENSIONS__MODULES" in named:
            modules = json.loads(named["FORESHOCK_EXTENSIONS__MODULES"])
        elif "FORESHOCK_EXTENSIONS" in named:
            modules = json.loads(named["FORESHOCK_EXTENSIONS"]).get("modules")
    except (ValueError, AttributeError):
        return  # the settings' own validation says what is wrong with it
    if not isinstance(modules, list):
        return  # the section's own validation says what is wrong with it
    for name in modules:
        if not isinstance(name, str):
            continue
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise UserError(
                f"extensions.modules: cannot import {name!r} ({error}); install "
                "it or put its folder on PYTHONPATH"
            ) from error
        except Exception as error:
            # The plugin's own bug: `foreshock -v` shows its traceback.
            log.debug("importing %s failed", name, exc_info=error)
            raise UserError(
                f"extensions.modules: importing {name!r} failed: "
                f"{type(error).__name__}: {error}"
            ) from error


def _warn_of_unknown_sections(environ: Mapping[str, str]) -> None:
    """Say which `FORESHOCK_<SECTION>__<KEY>` variables name no section.

    The settings read only the variables of their own sections, so a
    mistyped section would otherwise be ignored without a word.
    """
    sections = list(Settings.model_fields)
    for name in sorted(environ):
        found = re.fullmatch(r"FORESHOCK_(\w+?)__(\w+)", name, re.IGNORECASE)
        if found is None or found.group(1).lower() in sections:
            continue
        section, rest = found.group(1).lower(), found.group(2)
        close = difflib.get_close_matches(section, sections, n=1)
        hint = f"; did you mean FORESHOCK_{close[0].upper()}__{rest}?" if close else ""
        log.warning(
            "environment variable %s is ignored: %r is not a settings section%s",
            name,
            section,
            hint,
        )


def unknown_setting(loc: Sequence[str | int]) -> str:
    """What to say of a setting at `loc` (`("window", "backfil_after_s")`)
    that the settings do not have, with the closest known name if one is."""
    model: type[BaseModel] | None = Settings
    for part in loc[:-1]:
        # An int indexes a list: its items are of the model already found.
        if model is not None and isinstance(part, str):
            field = model.model_fields.get(part)
            model = None if field is None else _model_in(field.annotation)
    where = ".".join(map(str, loc))
    said = f"unknown section {where}" if len(loc) == 1 else f"unknown setting {where}"
    known = list(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f"{said}; did you mean {close[0]}?" if close else said


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The settings model a field holds, alone or in a list or union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _anchor_paths(data: dict[str, object], folder: Path) -> None:
    for section, key in _PATHS:
        values = data.get(section)
        if not isinstance(values, dict):
            continue
        named = values.get(key)
        if isinstance(named, str) and not Path(named).is_absolute():
            values[key] = str(folder / named)


def redacted_url(url: str | None) -> str | None:
    """`url` fit for a log or an error: its user info (`user:password@`) masked.

    The whole user info goes, not only a password: a token is often given
    as the user name alone. The URL is not parsed as one, since a mistyped
    URL (`admin:secret@host`, with no scheme) is just what an error quotes,
    and a URL parser would read `admin` as its scheme and keep the password.
    """
    if url is None:
        return None
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" not in authority:
        return url
    host = authority.rpartition("@")[2]
    return f"{scheme}{separator}***@{host}{rest[len(authority) :]}"
