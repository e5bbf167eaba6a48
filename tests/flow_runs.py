"""Running `foreshock run` against a real broker, and reading what it wrote.

Shared by the recovery and scale-out tests: a small input with several
windows and one incident, the configuration file of a run, the job as a
subprocess, free ports for a cluster of them, and the published records
keyed the way consumers upsert them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from connectors.kafka import consume_all, produce_all
from connectors.messages import OutMessage

__all__ = [
    "MINUTES",
    "T0",
    "Outputs",
    "committed",
    "free_ports",
    "incident_events",
    "latest",
    "produce",
    "read_outputs",
    "start_run",
    "wait_until",
    "write_config",
]

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
MINUTES = 50
# The database slows down first; users feel it two minutes later.
DB_SLOW_FROM = 40
WEB_SLOW_FROM = 42
OUTPUT_KINDS = ("kpis", "anomalies", "incidents", "early_warnings", "data_quality")
_TOPOLOGY = {
    "services": {"web": "frontend", "orders-db": "database"},
    "calls": [["web", "orders-db"]],
}
_REPO = Path(__file__).resolve().parent.parent

Json = dict[str, Any]


def free_ports(count: int) -> list[int]:
    """`count` different loopback ports free now, for processes to listen on."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def incident_events(first_minute: int, end_minute: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of the events of minutes [first_minute, end_minute).

    Ten page views of `web` and ten queries of `orders-db` a minute, each
    series steady with a little jitter until its slow-down. With one-minute
    windows the detectors are ready after 30 windows, `orders-db` is
    anomalous from minute 40, `web` from minute 42: one incident.
    """
    out: list[tuple[bytes, bytes]] = []
    for minute in range(first_minute, end_minute):
        for i in range(10):
            time = (T0 + timedelta(minutes=minute, seconds=6 * i)).isoformat()
            jitter = (i % 5) * 3 + minute % 3
            db_ms = (900.0 if minute >= DB_SLOW_FROM else 100.0) + jitter
            web_ms = (6000.0 if minute >= WEB_SLOW_FROM else 1500.0) + 3 * jitter
            db = {"kind": "db_query", "duration_ms": db_ms}
            web = {"kind": "page_view", "load_ms": web_ms}
            out.append(_event(time, "database", "orders-db", db))
            out.append(_event(time, "frontend", "web", web))
    return out


def _event(time: str, layer: str, service: str, payload: Json) -> tuple[bytes, bytes]:
    doc = {"time": time, "layer": layer, "service": service, "payload": payload}
    return service.encode(), json.dumps(doc).encode()


def produce(bootstrap: str, topic: str, events: Iterable[tuple[bytes, bytes]]) -> int:
    """Produce events keyed by service, so each service stays on one partition."""
    return produce_all(bootstrap, [OutMessage(topic, k, v) for k, v in events])


def write_config(
    path: Path,
    bootstrap: str,
    input_topic: str,
    outputs: Mapping[str, str],
    *,
    recovery: Path | None = None,
    snapshot_interval_s: float = 10.0,
    extra: Mapping[str, Mapping[str, object]] | None = None,
) -> Path:
    """A TOML configuration of `foreshock run` between the given topics."""
    topology = path.parent / f"{path.stem}-topology.json"
    topology.write_text(json.dumps(_TOPOLOGY))
    sections: dict[str, Mapping[str, object]] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "input_topics": [input_topic],
            "group_id": input_topic,
        },
        "topics": dict(outputs),
        "correlation": {"topology": str(topology)},
        "metrics": {"enabled": False},
        "recovery": {"snapshot_interval_s": snapshot_interval_s},
    }
    if recovery is not None:
        sections["recovery"] = {**sections["recovery"], "dir": str(recovery)}
    for name, values in (extra or {}).items():
        sections[name] = {**sections.get(name, {}), **values}
    path.write_text("".join(_toml_section(n, v) for n, v in sections.items()))
    return path


def _toml_section(name: str, values: Mapping[str, object]) -> str:
    # JSON strings, numbers, booleans and lists of them are TOML as well.
    lines = [f"[{name}]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n\n"


def start_run(
    config: Path,
    log: Path,
    *,
    until_end: bool = False,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`foreshock run --config CONFIG` as a process of its own, logging to `log`."""
    command = [sys.executable, "-m", "foreshock.cli", "-v", "run", "--config"]
    command.append(str(config))
    if until_end:
        command.append("--until-end")
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=_REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**_environment(), **(env or {})},
        )


def _environment() -> dict[str, str]:
    # The broker is named by the configuration file, never by the session.
    return {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll `condition` until it holds; fail with `what` if it never does."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"the flow exited ({process.returncode}) before {what}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(0.2)


def committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> int:
    """The offsets `group` has committed on `topic`, summed over partitions."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        found = consumer.committed(wanted, timeout=10.0)
    finally:
        consumer.close()
    return sum(max(0, part.offset) for part in found)


@dataclass(frozen=True)
class Outputs:
    """Every record published to the output topics, in offset order."""

    by_kind: dict[str, list[Json]]

    def kpis(self) -> dict[tuple[str, ...], Json]:
        """The latest scored window of each (layer, service, KPI, window)."""
        return latest(self.by_kind["kpis"], _window_key)

    def anomalies(self) -> dict[str, Json]:
        return latest(self.by_kind["anomalies"], lambda r: r["id"])

    def incidents(self) -> dict[str, Json]:
        """The latest record of each incident id."""
        return latest(self.by_kind["incidents"], lambda r: r["id"])

    def opened(self) -> dict[str, list[Json]]:
        """Every "open" record published, by incident id."""
        found: dict[str, list[Json]] = {}
        for record in self.by_kind["incidents"]:
            if record["status"] == "open":
                found.setdefault(record["id"], []).append(record)
        return found


def read_outputs(bootstrap: str, topics: Mapping[str, str]) -> Outputs:
    """Read every output topic to its current end."""
    return Outputs(
        {
            kind: [json.loads(m.value or b"") for m in consume_all(bootstrap, topic)]
            for kind, topic in topics.items()
            if kind in OUTPUT_KINDS
        }
    )


def latest(records: Iterable[Json], key: Callable[[Json], Any]) -> dict[Any, Json]:
    """The last record of each key, as a consumer that upserts keeps it."""
    return {key(record): record for record in records}


def _window_key(record: Json) -> tuple[str, ...]:
    k = record["kpi"]
    dimension = json.dumps(k.get("dimension"), sort_keys=True)
    return (k["layer"], k["service"], k["kpi"], dimension, k["window_start"])
