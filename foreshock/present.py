"""Incidents and early warnings as an on-call engineer reads them in a terminal."""

from __future__ import annotations

from foreshock.records import Candidate, DataGap, EarlyWarning, Incident

__all__ = ["describe_gap", "describe_incident", "describe_warning"]


def describe_incident(incident: Incident) -> str:
    """A few lines: what users feel, the probable causes and the chain."""
    lines = [
        f"[{incident.status.upper()}] incident {incident.id} at "
        f"{incident.updated_at:%Y-%m-%d %H:%M}Z: {incident.title}"
    ]
    for e in incident.user_facing[:3]:
        lines.append(f"  users:  {e.describe()}")
    for c in incident.root_causes[:3]:
        lines.append(f"  cause #{c.rank}: {_candidate(c)}")
    if incident.chain:
        steps = " -> ".join(
            f"{e.service}/{e.layer.value} {e.onset:%H:%M}" for e in incident.chain
        )
        lines.append(f"  chain:  {steps}")
    for change in incident.changes:
        lines.append(f"  change: {change.describe()}")
    if incident.lead_time_s is not None:
        lines.append(
            f"  lead time: the deep stack warned {incident.lead_time_s / 60:.0f} min "
            "before users were affected"
        )
    return "\n".join(lines)


def describe_warning(warning: EarlyWarning) -> str:
    if warning.status == "ended":
        services = ", ".join(warning.services or [warning.service])
        return (
            f"[EARLY WARNING ENDED] {warning.id} at "
            f"{warning.published_at:%H:%M}Z: {services} no longer troubled"
        )
    if warning.status == "updated":
        joined = warning.services[-1]
        newest = [e for e in warning.evidence if e.service == joined]
        return (
            f"[EARLY WARNING +{joined}] {warning.id} at "
            f"{warning.published_at:%H:%M}Z: {newest[0].describe()}"
        )
    first = warning.evidence[0]
    text = (
        f"[EARLY WARNING] {warning.id} at {warning.published_at:%H:%M}Z: "
        f"{first.describe()}; at risk: {', '.join(warning.at_risk)}"
    )
    for change in warning.changes[-1:]:
        text += f"\n  after: {change.describe()}"
    return text


def describe_gap(gap: DataGap) -> str:
    if gap.status == "closed":
        return (
            f"[DATA GAP CLOSED] {gap.id} at {gap.published_at:%H:%M}Z: telemetry "
            f"from {gap.layer.value}/{gap.service} flows again"
        )
    users = ", ".join(gap.users) or "no user-facing service"
    return (
        f"[DATA GAP] {gap.id} at {gap.published_at:%H:%M}Z: no telemetry from "
        f"{gap.layer.value}/{gap.service} since {gap.since:%H:%M} while users "
        f"({users}) are fine: check the telemetry pipeline"
    )


def _candidate(c: Candidate) -> str:
    kpis = ", ".join(sorted({f"{e.layer.value} {e.kpi}" for e in c.evidence})[:3])
    return f"{c.service} (score {c.score:.2f}; {kpis}); {c.reasons[0]}"
