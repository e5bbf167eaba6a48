"""Incidents and early warnings as Prometheus Alertmanager alerts.

`AlertPublisher` keeps Alertmanager's picture of Foreshock's open alerts
current through its v2 API (`POST /api/v2/alerts`); `AlertmanagerSink` puts
one in a bytewax flow, with a thread that re-sends open alerts.

What an on-call team gets:

- One `ForeshockIncident` alert per incident (severity "page"), one
  `ForeshockEarlyWarning` alert per user-facing service an early warning puts
  at risk (severity "warning"). Both carry `service`, the user-facing
  service, so that routes group by it and a rule can inhibit the warnings
  about a service once its users are affected (see deploy/alertmanager.yml).
- `layer` is where the anomaly was seen: the user-facing layer for an
  incident, the deep-stack layer for a warning; `root_cause` is the top
  candidate of an incident and the anomalous service of a warning.
- Annotations: `summary`, a `description` with the impact, the chain, the
  lead time and the top candidates with their evidence, and `runbook_url`
  and `report_url` from configurable templates. Only an incident carries
  `report_url`: reports (foreshock/report.py) are written for incidents
  alone, so a warning's or a data gap's link would lead nowhere.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from foreshock import telemetry
from foreshock.config import redacted_url
from foreshock.records import DataGap, EarlyWarning, Evidence, Incident

__all__ = [
    "INCIDENT_ALERT",
    "WARNING_ALERT",
    "Alert",
    "AlertPublisher",
    "AlertmanagerConfig",
    "AlertmanagerSink",
]

log = logging.getLogger(__name__)

INCIDENT_ALERT = "ForeshockIncident"
WARNING_ALERT = "ForeshockEarlyWarning"
# A telemetry gap: for whoever runs the pipeline, never a page.
DATA_GAP_ALERT = "ForeshockDataGap"
_API_PATH = "/api/v2/alerts"
_TEMPLATE_FIELDS = ("id", "kind", "alertname", "service", "root_cause", "layer")

Alertable = Incident | EarlyWarning | DataGap
Outcome = Literal["sent", "rejected", "unreachable"]


@dataclass(frozen=True)
class AlertmanagerConfig:
    """Where Alertmanager is and how alerts are kept alive there.

    Every post says until when an open alert holds (`hold_s` from the post);
    open alerts are re-sent every `resend_interval_s`, so they stay firing
    while Foreshock runs and resolve by themselves `hold_s` after it stops.
    An early warning has no end of its own: it is ended `warning_hold_s`
    after it was last published (an update publishes it again).

    The URL templates may use {id}, {kind} ("incident" or "early-warning"),
    {alertname}, {service}, {root_cause} and {layer}. `report_url` is filled
    for incidents only, the records reports are written for.
    """

    url: str
    runbook_url: str | None = None
    report_url: str | None = None
    resend_interval_s: float = 60.0
    hold_s: float = 300.0
    warning_hold_s: float = 1800.0
    timeout_s: float = 5.0
    attempts: int = 3
    retry_wait_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(
                "Alertmanager url must start with http:// or https://, "
                f"got {redacted_url(self.url)!r}"
            )
        if self.hold_s <= self.resend_interval_s:
            raise ValueError(
                f"hold_s ({self.hold_s!r}) must exceed resend_interval_s "
                f"({self.resend_interval_s!r}), or open alerts resolve between "
                "two re-sends; make it two to four times as long"
            )
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts!r}")
        for template in (self.runbook_url, self.report_url):
            _check_template(template)


def _check_template(template: str | None) -> None:
    if template is None:
        return
    try:
        template.format(**dict.fromkeys(_TEMPLATE_FIELDS, "x"))
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(
            f"URL template {redacted_url(template)!r} is not valid ({error!r}); "
            "it may use " + ", ".join("{" + f + "}" for f in _TEMPLATE_FIELDS)
        ) from None


@dataclass(frozen=True)
class Alert:
    """One alert as Alertmanager knows it: its labels are its identity."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    generator_url: str | None = None

    def payload(self, ends_at: datetime) -> dict[str, Any]:
        """The alert in the v2 API's JSON form, holding until `ends_at`."""
        body: dict[str, Any] = {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": _rfc3339(self.starts_at),
            "endsAt": _rfc3339(max(ends_at, self.starts_at)),
        }
        if self.generator_url:
            body["generatorURL"] = self.generator_url
        return body


@dataclass(slots=True)
class _Open:
    alert: Alert
    sent_at: datetime | None = None
    # Early warnings only: when the alert is ended.
    until: datetime | None = None


@dataclass(slots=True)
class _Ending:
    alert: Alert
    ends_at: datetime
    # Past this, the alert has expired in Alertmanager anyway (its last post
    # held until no later than this), so a failed resolve is not retried.
    give_up_at: datetime


@dataclass
class AlertPublisher:
    """Publishes incidents and early warnings, and keeps open alerts alive.

    Design decisions:

    - State first, then one post: `publish` and `tick` update which alerts
      are open or ending, then post everything that is due in one request.
      An alert whose post failed stays due, so the next `tick` sends it.
    - Alertmanager identifies an alert by its labels. When an update changes
      them (a new top root cause), the alert under the old labels is ended at
      once and one under the new labels starts.
    - Time: `now` is the wall clock, passed in. Alert times come from the
      records' event times, clamped to `now`: a replay of old data resolves
      at once, and data stamped in the future never keeps an alert firing.
    - Failures are retried (transport errors, 429 and 5xx answers), then
      logged at ERROR and counted; nothing is raised, so a flow never stops
      because Alertmanager is down.
    - Safe to call from several threads; posts are serialised.
    """

    config: AlertmanagerConfig
    transport: httpx.BaseTransport | None = None
    sent: int = 0
    failed: int = 0
    _open: dict[str, _Open] = field(default_factory=dict)
    _ending: list[_Ending] = field(default_factory=list)
    _services: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self._client = httpx.Client(
            base_url=self.config.url,
            timeout=self.config.timeout_s,
            transport=self.transport,
        )

    def publish(self, record: Alertable, now: datetime) -> None:
        """Open, update or resolve the alerts of one record, and post them."""
        with self._lock:
            if isinstance(record, Incident):
                self._take_incident(record, now)
            elif isinstance(record, EarlyWarning):
                self._take_warning(record, now)
            else:
                self._take_gap(record, now)
            self._flush(now)

    def tick(self, now: datetime) -> None:
        """Re-send open alerts that are due, end expired warnings, retry."""
        with self._lock:
            for key, entry in list(self._open.items()):
                if entry.until is not None and entry.until <= now:
                    del self._open[key]
                    self._end(entry.alert, now, now)
            self._flush(now)

    def open_alerts(self) -> list[Alert]:
        """The alerts Foreshock currently holds open, oldest first."""
        with self._lock:
            return [entry.alert for entry in self._open.values()]

    def close(self) -> None:
        """Release the connection pool; open alerts are left to expire."""
        self._client.close()

    # -- from records to alerts ---------------------------------------------

    def _take_incident(self, incident: Incident, now: datetime) -> None:
        service = self._services.setdefault(incident.id, _user_service(incident))
        alert = self._incident_alert(incident, service, now)
        previous = self._open.pop(incident.id, None)
        if previous is not None and previous.alert.labels != alert.labels:
            self._end(previous.alert, now, now)

        if incident.status == "resolved":
            del self._services[incident.id]
            resolved_at = incident.resolved_at or now
            self._end(alert, min(resolved_at, now), now)
        else:
            self._open[incident.id] = _Open(alert)

    def _take_warning(self, warning: EarlyWarning, now: datetime) -> None:
        if warning.status == "ended":
            for service in warning.at_risk:
                entry = self._open.pop(f"{warning.id}/{service}", None)
                if entry is not None:
                    self._end(entry.alert, now, now)
            return
        until = now + timedelta(seconds=self.config.warning_hold_s)
        for service in warning.at_risk:
            alert = self._warning_alert(warning, service, now)
            self._open[f"{warning.id}/{service}"] = _Open(alert, until=until)

    def _take_gap(self, gap: DataGap, now: datetime) -> None:
        alert = self._gap_alert(gap, now)
        self._open.pop(gap.id, None)
        if gap.status == "closed":
            self._end(alert, min(gap.until or now, now), now)
        else:
            self._open[gap.id] = _Open(alert)

    def _gap_alert(self, gap: DataGap, now: datetime) -> Alert:
        labels = _labels(
            alertname=DATA_GAP_ALERT,
            service=gap.service,
            layer=gap.layer.value,
            severity="info",
            gap_id=gap.id,
        )
        users = ", ".join(gap.users) or "no user-facing service"
        summary = (
            f"no telemetry from {gap.layer.value}/{gap.service} since "
            f"{gap.since:%H:%M}Z while its users ({users}) are fine"
        )
        description = (
            "Every series of the service has had no data; its users show no "
            "symptom, so the telemetry pipeline (agent, collector, topic) is "
            "the likelier cause than the service. Not a page."
        )
        fields = _fields(gap.id, "data-gap", labels)
        return self._alert(labels, summary, description, min(gap.since, now), fields)

    def _end(self, alert: Alert, ends_at: datetime, now: datetime) -> None:
        give_up = now + timedelta(seconds=self.config.hold_s)
        self._ending.append(_Ending(alert, ends_at, give_up))

    def _incident_alert(self, incident: Incident, service: str, now: datetime) -> Alert:
        top = incident.root_causes[0].service if incident.root_causes else None
        layer = next(
            (e.layer.value for e in incident.user_facing if e.service == service),
            None,
        )
        labels = _labels(
            alertname=INCIDENT_ALERT,
            service=service,
            layer=layer,
            severity="page",
            root_cause=top,
            incident_id=incident.id,
        )
        onset = min((e.onset for e in incident.user_facing), default=None)
        fields = _fields(incident.id, "incident", labels)
        return self._alert(
            labels,
            incident.title,
            _incident_description(incident),
            min(onset or incident.opened_at, now),
            fields,
            report=True,
        )

    def _warning_alert(
        self, warning: EarlyWarning, service: str, now: datetime
    ) -> Alert:
        labels = _labels(
            alertname=WARNING_ALERT,
            service=service,
            layer=warning.layer.value,
            severity="warning",
            root_cause=warning.service,
            warning_id=warning.id,
        )
        summary = (
            f"{service} at risk: {warning.layer.value}/{warning.service} "
            "is anomalous, users are not affected yet"
        )
        fields = _fields(warning.id, "early-warning", labels)
        return self._alert(
            labels,
            summary,
            _warning_description(warning),
            min(warning.onset, now),
            fields,
        )

    def _alert(
        self,
        labels: dict[str, str],
        summary: str,
        description: str,
        starts_at: datetime,
        fields: dict[str, str],
        report: bool = False,
    ) -> Alert:
        annotations = {"summary": summary, "description": description}
        url = None
        if self.config.runbook_url:
            annotations["runbook_url"] = self.config.runbook_url.format(**fields)
        if report and self.config.report_url:
            url = annotations["report_url"] = self.config.report_url.format(**fields)
        return Alert(labels, annotations, starts_at, url)

    # -- posting -------------------------------------------------------------

    def _flush(self, now: datetime) -> None:
        resend = timedelta(seconds=self.config.resend_interval_s)
        self._ending = [e for e in self._ending if e.give_up_at > now]
        due = [
            entry
            for entry in self._open.values()
            if entry.sent_at is None or now - entry.sent_at >= resend
        ]
        if not due and not self._ending:
            return

        hold = now + timedelta(seconds=self.config.hold_s)
        payload = [e.alert.payload(e.ends_at) for e in self._ending]
        payload += [entry.alert.payload(_until(entry, hold)) for entry in due]
        outcome = self._post(payload)

        if outcome != "unreachable":
            self._ending.clear()
            for entry in due:
                entry.sent_at = now

    def _post(self, payload: list[dict[str, Any]]) -> Outcome:
        retrying = Retrying(
            stop=stop_after_attempt(self.config.attempts),
            wait=wait_exponential(multiplier=self.config.retry_wait_s, max=10),
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )
        try:
            response = retrying(self._post_once, payload)
        except httpx.HTTPError as error:
            self._failed(len(payload), repr(error))
            return "unreachable"

        if response.is_success:
            self.sent += 1
            telemetry.alert_post(sent=True)
            log.debug("alerts posted count=%s", len(payload))
            return "sent"
        # A 4xx answer will not change on retry: say what Alertmanager said.
        self._failed(len(payload), f"{response.status_code} {response.text.strip()}")
        return "rejected"

    def _post_once(self, payload: list[dict[str, Any]]) -> httpx.Response:
        response = self._client.post(_API_PATH, json=payload)
        if response.status_code == 429 or response.is_server_error:
            response.raise_for_status()
        return response

    def _failed(self, count: int, error: str) -> None:
        self.failed += 1
        telemetry.alert_post(sent=False)
        log.error(
            "alertmanager post failed url=%s alerts=%s error=%s",
            redacted_url(self.config.url),
            count,
            error,
        )


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, httpx.TransportError | httpx.HTTPStatusError)


def _until(entry: _Open, hold: datetime) -> datetime:
    return hold if entry.until is None else min(hold, entry.until)


def _user_service(incident: Incident) -> str:
    # The service whose users were hit first names the incident; it stays the
    # alert's `service` for the incident's whole life, since labels are an
    # alert's identity.
    first = min(incident.user_facing, key=lambda e: (e.onset, e.service), default=None)
    return first.service if first is not None else "unknown"


def _labels(**values: str | None) -> dict[str, str]:
    # Alertmanager reads an empty label value as an absent label.
    return {name: value for name, value in values.items() if value}


def _fields(record_id: str, kind: str, labels: Mapping[str, str]) -> dict[str, str]:
    fields = {name: labels.get(name, "") for name in _TEMPLATE_FIELDS}
    return {**fields, "id": record_id, "kind": kind}


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- descriptions --------------------------------------------------------------


def _incident_description(incident: Incident) -> str:
    lines = ["Impact: " + _evidence_list(incident.user_facing)]
    if incident.lead_time_s is not None:
        lines.append(
            f"Lead time: {incident.lead_time_s / 60:.0f} min from the first "
            "anomaly of the probable cause to users' first symptom"
        )
    if incident.chain:
        lines.append(
            "Chain: "
            + " -> ".join(
                f"{e.layer.value}/{e.service} {e.kpi} since {e.onset:%H:%M}"
                for e in incident.chain
            )
        )
    if incident.root_causes:
        lines.append("Probable root causes:")
    for c in incident.root_causes[:3]:
        lines.append(
            f"{c.rank}. {c.service} (score {c.score:.2f}): {'; '.join(c.reasons)}"
        )
        lines.extend(f"   - {e.describe()}" for e in c.evidence[:3])
    if incident.early_warnings:
        lines.append("Early warnings: " + ", ".join(incident.early_warnings))
    return "\n".join(lines)


def _warning_description(warning: EarlyWarning) -> str:
    lines = [
        f"{warning.layer.value}/{warning.service} is anomalous since "
        f"{warning.onset:%H:%M} UTC; users of {', '.join(warning.at_risk)} depend on "
        "it and are at risk.",
        "Evidence: " + _evidence_list(warning.evidence),
    ]
    return "\n".join(lines)


def _evidence_list(evidence: Iterable[Evidence]) -> str:
    described = [e.describe() for e in evidence]
    return "; ".join(described[:5]) if described else "none recorded"


# -- bytewax sink ------------------------------------------------------------------


class AlertmanagerSink(DynamicSink[Alertable]):
    """Sends the incidents and early warnings of a flow to Alertmanager.

    Each worker gets a publisher driven by a thread of its own: the flow only
    queues records, so a slow or absent Alertmanager never holds up windows
    and detectors. Between records the thread calls `tick` a few times per
    re-send interval, so open alerts stay alive however rarely records come.
    Closing the sink publishes what is queued, then stops the thread; open
    alerts are left to expire, since a stopped Foreshock cannot say whether
    they resolved.
    """

    def __init__(
        self, config: AlertmanagerConfig, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._config = config
        self._transport = transport

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Alertable]:
        """A publisher and its thread for one worker."""
        return _AlertPartition(AlertPublisher(self._config, self._transport))


class _AlertPartition(StatelessSinkPartition[Alertable]):
    def __init__(self, publisher: AlertPublisher) -> None:
        self._publisher = publisher
        # None asks the thread to stop once everything before it is published.
        self._queue: queue.SimpleQueue[Alertable | None] = queue.SimpleQueue()
        self._tick_s = min(5.0, publisher.config.resend_interval_s / 4)
        # A daemon, so that a flow that dies without closing its sinks still
        # lets the process exit.
        self._thread = threading.Thread(
            target=self._publish_until_closed,
            name="foreshock-alertmanager",
            daemon=True,
        )
        self._thread.start()

    def write_batch(self, items: list[Alertable]) -> None:
        # Data gaps are for the telemetry pipeline's owners, not this receiver.
        for item in items:
            if isinstance(item, DataGap):
                continue
            self._queue.put(item)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._publisher.close()

    def _publish_until_closed(self) -> None:
        next_tick = time.monotonic() + self._tick_s
        while True:
            item: Alertable | _Tick | None
            try:
                item = self._queue.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                item = _TICK
                next_tick = time.monotonic() + self._tick_s
            if item is None:
                return
            self._handle(item)

    def _handle(self, item: Alertable | _Tick) -> None:
        # Whatever goes wrong with one record or re-send must not end
        # alerting for the ones after it.
        now = datetime.now(UTC)
        try:
            if isinstance(item, _Tick):
                self._publisher.tick(now)
            else:
                self._publisher.publish(item, now)
        except Exception:
            what = (
                "tick"
                if isinstance(item, _Tick)
                else f"{type(item).__name__} {item.id}"
            )
            log.error("alerting failed item=%s", what, exc_info=True)


class _Tick:
    """Time to re-send what is due."""


_TICK = _Tick()
