"""The native telemetry schema: one envelope, a typed payload per kind of event.

A message on a Foreshock input topic is one JSON object::

    {"schema_version": 1, "time": "2025-03-04T10:00:00Z", "layer": "api",
     "service": "checkout-api", "event_id": "e-1", "attributes": {},
     "payload": {"kind": "http_request", "route": "/cart", "status": 200,
                 "duration_ms": 123.4}}

`time` is the event time: an ISO-8601 timestamp with an offset, or a number
of seconds (or milliseconds, when larger than 2e10) since the Unix epoch.
Measurements that may be missing are optional; a measurement that is present
but impossible (not finite, or negative) is kept out of every KPI and counted,
while the rest of the event still counts. The exported JSON Schema lives in
`schemas/event.schema.json` and a test keeps it current.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
)

from foreshock.layers import Layer

__all__ = [
    "SCHEMA_VERSION",
    "AppCrash",
    "AppLaunch",
    "ChangeEvent",
    "DbQuery",
    "Event",
    "Heartbeat",
    "HttpRequest",
    "MetricSample",
    "PageView",
    "Payload",
    "ResourceSample",
    "SyntheticCheck",
    "ThirdPartyCall",
    "event_json_schema",
]

SCHEMA_VERSION: Literal[1] = 1

# Measurements are checked one by one when they are aggregated, not here: a
# negative or non-finite duration loses that field only, never the event.
Millis = float
Ratio = float


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PageView(_Payload):
    """A page load in a real user's browser (navigation timing, Web Vitals)."""

    kind: Literal["page_view"] = "page_view"
    page: str = "/"
    ttfb_ms: Millis | None = None
    dom_content_loaded_ms: Millis | None = None
    load_ms: Millis | None = None
    lcp_ms: Millis | None = None
    inp_ms: Millis | None = None
    cls: Ratio | None = None
    js_errors: Annotated[int, Field(ge=0)] = 0
    js_execution_ms: Millis | None = None


class AppLaunch(_Payload):
    """A mobile app launch: the denominator of the crash rate."""

    kind: Literal["app_launch"] = "app_launch"
    app_version: str
    cold: bool = True
    duration_ms: Millis | None = None


class AppCrash(_Payload):
    """A mobile app crash, timed when it happened rather than when uploaded."""

    kind: Literal["app_crash"] = "app_crash"
    app_version: str
    crash_type: str | None = None


class SyntheticCheck(_Payload):
    """One run of a scripted check from one location."""

    kind: Literal["synthetic_check"] = "synthetic_check"
    check: str
    location: str
    success: bool
    duration_ms: Millis | None = None


class HttpRequest(_Payload):
    """A request served at the api or backend layer."""

    kind: Literal["http_request"] = "http_request"
    route: str | None = None
    method: str | None = None
    status: Annotated[int, Field(ge=100, le=599)]
    duration_ms: Millis | None = None


class DbQuery(_Payload):
    """A database statement, identified by its normalised fingerprint."""

    kind: Literal["db_query"] = "db_query"
    fingerprint: str | None = None
    duration_ms: Millis | None = None
    rows: Annotated[int, Field(ge=0)] | None = None
    error: bool = False


class ResourceSample(_Payload):
    """A utilisation sample of a container or host.

    Utilisations are ratios of the resource's limit (1.0 is 100 %); network
    rates are bytes per second.
    """

    kind: Literal["resource_sample"] = "resource_sample"
    resource: str
    cpu_utilisation: Ratio | None = None
    memory_utilisation: Ratio | None = None
    network_rx_bytes_per_s: Ratio | None = None
    network_tx_bytes_per_s: Ratio | None = None


class ThirdPartyCall(_Payload):
    """A call to a provider outside the business (payments, maps, auth)."""

    kind: Literal["third_party_call"] = "third_party_call"
    provider: str
    operation: str | None = None
    status: Annotated[int, Field(ge=0, le=599)] | None = None
    success: bool | None = None
    duration_ms: Millis | None = None


class MetricSample(_Payload):
    """A value that arrives already aggregated: a gauge or a monotonic counter.

    A counter's KPI is its increase per second over the window; a gauge's is
    its mean. The KPI is named after the metric.
    """

    kind: Literal["metric_sample"] = "metric_sample"
    name: Annotated[str, Field(min_length=1, max_length=200)]
    type: Literal["gauge", "counter"] = "gauge"
    value: float
    unit: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class Heartbeat(_Payload):
    """Proof of life from a service that may have had no traffic to report."""

    kind: Literal["heartbeat"] = "heartbeat"


Payload = Annotated[
    PageView
    | AppLaunch
    | AppCrash
    | SyntheticCheck
    | HttpRequest
    | DbQuery
    | ResourceSample
    | ThirdPartyCall
    | MetricSample
    | Heartbeat,
    Field(discriminator="kind"),
]

Attribute = str | int | float | bool


class Event(BaseModel):
    """One telemetry event of one service at one layer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    time: AwareDatetime
    layer: Layer
    service: Annotated[str, Field(min_length=1, max_length=200)]
    event_id: Annotated[str, Field(max_length=200)] | None = None
    attributes: dict[str, Attribute] = Field(default_factory=dict)
    payload: Payload

    @field_validator("time", mode="after")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
# A native message may also carry a batch: a JSON array of events.
EVENTS_ADAPTER: TypeAdapter[list[Event]] = TypeAdapter(list[Event])


class ChangeEvent(BaseModel):
    """A deploy, configuration change or flag flip of one service.

    Changes travel on a topic of their own. They are not telemetry and make
    no KPI: the correlator keeps them as context, holds back a service's
    anomalies for a grace period after its deploys, and offers a change just
    before trouble as its probable cause.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    time: AwareDatetime
    layer: Layer
    service: Annotated[str, Field(min_length=1, max_length=200)]
    change_type: Literal[
        "deployment", "configuration", "feature_flag", "rollback", "scaling", "other"
    ] = "deployment"
    version: Annotated[str, Field(max_length=200)] | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None
    attributes: dict[str, Attribute] = Field(default_factory=dict)

    @field_validator("time", mode="after")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


def event_json_schema() -> dict[str, object]:
    """The JSON Schema of a native event, as published in `schemas/`."""
    schema = Event.model_json_schema()
    schema["$id"] = f"https://foreshock.dev/schemas/event/v{SCHEMA_VERSION}"
    schema["title"] = "Foreshock telemetry event"
    return schema
