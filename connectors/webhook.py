"""Incidents and early warnings posted to a chat webhook (Slack-compatible).

The payload is what Slack's incoming webhooks take: `text`, a one-line
summary that also serves as the notification and as the fallback for tools
that ignore blocks (Mattermost, Rocket.Chat and Teams' Slack-compatible
endpoints read it), and `blocks` (Slack Block Kit) with the user impact, the
top root-cause candidates with their evidence, the lead time and, for an
incident, a link.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from prometheus_client import Counter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from foreshock.config import redacted_url
from foreshock.records import Candidate, DataGap, EarlyWarning, Evidence, Incident

__all__ = [
    "WebhookConfig",
    "WebhookNotifier",
    "WebhookSink",
    "incident_payload",
    "warning_payload",
]

log = logging.getLogger(__name__)

Status = Literal["open", "updated", "resolved"]
Notice = Incident | EarlyWarning | DataGap

_POSTS = Counter(
    "foreshock_webhook_posts",
    "Posts to the chat webhook, by outcome (sent, or failed after retries).",
    ["outcome"],
)
# Slack cuts a header block at 150 characters and a section text at 3,000.
_HEADER_MAX = 150
_SECTION_MAX = 3000
_TOP_CAUSES = 3


@dataclass(frozen=True)
class WebhookConfig:
    """Where to post and how hard to try.

    `link` is a URL template for an incident's page; `{id}` is replaced by
    the incident's id. Early warnings get no link: a warning's id names no
    incident, and reports are written for incidents only. A post is tried
    up to `attempts` times; the waits between tries double from
    `backoff_s`, capped at `max_backoff_s`.
    """

    url: str = field(repr=False)
    link: str | None = None
    statuses: tuple[Status, ...] = ("open", "resolved")
    early_warnings: bool = True
    timeout_s: float = 5.0
    attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            # The whole url is the webhook's secret: only its scheme is said.
            scheme, separator, _ = self.url.partition("://")
            got = f"scheme {scheme!r}" if separator else "no scheme"
            raise ValueError(
                f"webhook url must start with http:// or https://, got {got}"
            )
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts!r}")
        if self.link is not None:
            try:
                self.link.format(id="x")
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(
                    f"webhook link {redacted_url(self.link)!r} may use only "
                    f"{{id}}: {error!r}"
                ) from None


def incident_payload(incident: Incident, link: str | None = None) -> dict[str, Any]:
    """A Slack message for one incident: impact, causes, lead time, link."""
    url = None if link is None else link.format(id=incident.id)
    headline = f"Incident {incident.status}: {incident.title}"
    sections = [
        _impact(incident.user_facing),
        _causes(incident.root_causes[:_TOP_CAUSES]),
        _lead_time(incident.lead_time_s),
    ]
    context = (
        f"incident `{incident.id}` · opened {incident.opened_at:%Y-%m-%d %H:%M}Z"
        f" · updated {incident.updated_at:%H:%M}Z"
    )
    return _message(headline, sections, context, url)


def warning_payload(warning: EarlyWarning) -> dict[str, Any]:
    """A Slack message for one early warning: what degrades, who is at risk."""
    headline = (
        f"Early warning: {warning.service} ({warning.layer.value}) degrading; "
        f"at risk: {', '.join(warning.at_risk)}"
    )
    sections = [
        "*Evidence*\n" + _bullets(e.describe() for e in warning.evidence),
    ]
    context = (
        f"early warning `{warning.id}` · onset {warning.onset:%Y-%m-%d %H:%M}Z"
        f" · published {warning.published_at:%H:%M}Z"
    )
    return _message(headline, sections, context, None)


def _message(
    headline: str, sections: list[str], context: str, url: str | None
) -> dict[str, Any]:
    text = _escape(headline) if url is None else f"{_escape(headline)} <{url}|open>"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(headline[:_HEADER_MAX])},
        *({"type": "section", "text": _mrkdwn(s)} for s in sections),
        {"type": "context", "elements": [_mrkdwn(context)]},
    ]
    if url is not None:
        blocks.append(
            {"type": "section", "text": _mrkdwn(f"<{url}|Open in Foreshock>")}
        )
    return {"text": text, "blocks": blocks}


def _impact(felt: list[Evidence]) -> str:
    if not felt:
        return "*User impact*\nnone measured yet"
    return "*User impact*\n" + _bullets(e.describe() for e in felt)


def _causes(candidates: list[Candidate]) -> str:
    if not candidates:
        return "*Probable root causes*\nnone ranked yet"
    return "*Probable root causes*\n" + "\n".join(_cause(c) for c in candidates)


def _cause(c: Candidate) -> str:
    layer = "" if c.layer is None else f" ({c.layer.value})"
    reason = f": {_escape(c.reasons[0])}" if c.reasons else ""
    lines = [f"{c.rank}. *{_escape(c.service)}*{layer}, score {c.score:.2f}{reason}"]
    lines += [f"      ◦ {_escape(e.describe())}" for e in c.evidence[:_TOP_CAUSES]]
    return "\n".join(lines)


def _lead_time(lead_time_s: float | None) -> str:
    if lead_time_s is None:
        return "*Lead time*\nnone: users were affected first"
    return (
        f"*Lead time*\n{lead_time_s / 60:.0f} min: the deep stack showed it "
        "before users were affected"
    )


def _bullets(lines: Iterable[str]) -> str:
    return "\n".join(f"• {_escape(line)}" for line in lines)


def _plain(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text[:_SECTION_MAX]}


def _escape(text: str) -> str:
    # The three characters Slack's mrkdwn reserves for links and mentions.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class WebhookNotifier:
    """Posts notices to one webhook, retrying failures that may pass.

    Design decisions:

    - Server errors (5xx), timeouts and connection errors are retried with
      exponential backoff; a 4xx answer is not, since the same payload would
      be refused again.
    - A notice that still fails is logged at ERROR, counted (`failed`, and
      `foreshock_webhook_posts_total{outcome="failed"}`), and dropped from
      the chat only: it stays on its Kafka topic, and the flow goes on.
    - The URL is never logged, only its scheme and host: chat webhook URLs
      carry their secret in the path.
    - Posting is synchronous; one notice blocks at most `attempts` times
      `timeout_s`, plus the waits between tries.
    """

    def __init__(
        self,
        config: WebhookConfig,
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.sent = 0
        self.failed = 0
        self.retries = 0
        self._client = client or httpx.Client(timeout=config.timeout_s)
        self._sleep = sleep

    def notify(self, notice: Notice) -> bool:
        """Post a notice if the configuration wants it; True if it was sent."""
        payload = self._payload(notice)
        if payload is None:
            return False
        return self.post(payload)

    def post(self, payload: dict[str, Any]) -> bool:
        """Post a payload, with retries; True if the webhook took it."""
        try:
            self._retrying()(self._post_once, payload)
        except httpx.HTTPError as error:
            self._give_up(error)
            return False

        self.sent += 1
        _POSTS.labels("sent").inc()
        return True

    def close(self) -> None:
        self._client.close()

    def _payload(self, notice: Notice) -> dict[str, Any] | None:
        if isinstance(notice, Incident):
            if notice.status not in self.config.statuses:
                return None
            return incident_payload(notice, self.config.link)
        if not self.config.early_warnings or isinstance(notice, DataGap):
            return None
        if notice.status == "ended":
            return None  # a chat keeps what was said; an end is no news
        return warning_payload(notice)

    def _retrying(self) -> Retrying:
        c = self.config
        return Retrying(
            sleep=self._sleep,
            stop=stop_after_attempt(c.attempts),
            wait=wait_exponential(multiplier=c.backoff_s, max=c.max_backoff_s),
            retry=retry_if_exception(_worth_retrying),
            before_sleep=self._on_retry,
            reraise=True,
        )

    def _post_once(self, payload: dict[str, Any]) -> None:
        response = self._client.post(self.config.url, json=payload)
        response.raise_for_status()

    def _on_retry(self, state: RetryCallState) -> None:
        self.retries += 1
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "webhook post failed, retrying webhook=%s attempt=%s wait_s=%.2f error=%s",
            _where(self.config.url),
            state.attempt_number,
            state.upcoming_sleep,
            _reason(error),
        )

    def _give_up(self, error: httpx.HTTPError) -> None:
        self.failed += 1
        _POSTS.labels("failed").inc()
        # No exc_info: httpx puts the full URL, secret included, in messages.
        log.error(
            "webhook post failed, giving up webhook=%s attempts=%s error=%s",
            _where(self.config.url),
            self.config.attempts,
            _reason(error),
        )


def _worth_retrying(error: BaseException) -> bool:
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.is_server_error
    return isinstance(error, httpx.TransportError)


def _reason(error: BaseException | None) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    return type(error).__name__


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}"


class WebhookSink(DynamicSink[Notice]):
    """Hands each incident and early warning of a flow to a `WebhookNotifier`.

    One notifier per worker; a failed post never raises into the flow.
    """

    def __init__(self, config: WebhookConfig) -> None:
        self._config = config

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Notice]:
        """A notifier for one worker."""
        return _NotifierPartition(WebhookNotifier(self._config))


class _NotifierPartition(StatelessSinkPartition[Notice]):
    def __init__(self, notifier: WebhookNotifier) -> None:
        self.notifier = notifier

    def write_batch(self, items: list[Notice]) -> None:
        # Data gaps are for the telemetry pipeline's owners, not this receiver.
        for item in items:
            if isinstance(item, DataGap):
                continue
            self.notifier.notify(item)

    def close(self) -> None:
        self.notifier.close()
