"""Shared field cases, adapted from their envelope to Foreshock's native schema.

The cases write one flat object per event (`ts`, `layer`, `service`, `kind`,
`value`, ...). The adapter moves each field where the native schema wants it
and leaves broken fields broken, so that bad input stays bad input.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from connectors.messages import RawBatch, RawMessage

CASES = Path(
    os.environ.get("FORESHOCK_CASES", Path(__file__).parents[2] / "shared" / "cases")
)

_PAYLOAD_FIELDS: dict[str, tuple[str, dict[str, str]]] = {
    # case kind -> (native kind, {case field: payload field})
    "http_request": ("http_request", {"value": "duration_ms", "status": "status"}),
    "query": ("db_query", {"value": "duration_ms"}),
    "heartbeat": ("heartbeat", {}),
    # A mobile session starts with a launch; a crash keeps the version it
    # happened in, whichever version uploaded it.
    "session_start": ("app_launch", {"app_version": "app_version"}),
    "crash": ("app_crash", {"app_version": "app_version"}),
}


def native(case: dict[str, Any]) -> dict[str, Any]:
    """One case event as a native event document."""
    payload = _payload(case)
    doc: dict[str, Any] = {"payload": payload}
    for source, target in (
        ("ts", "time"),
        ("layer", "layer"),
        ("service", "service"),
        ("event_id", "event_id"),
    ):
        if source in case:
            doc[target] = case[source]
    return doc


def _payload(case: dict[str, Any]) -> dict[str, Any]:
    kind = case["kind"]
    if kind == "check_result":
        return {
            "kind": "synthetic_check",
            "check": case["service"],
            "location": case["location"],
            "success": case["status"] == "pass",
            "duration_ms": case["value"],
        }
    if kind == "page_view":
        # The cases send one Web Vital per event, named by `metric`.
        field = {"LCP": "lcp_ms", "INP": "inp_ms", "CLS": "cls"}[case["metric"]]
        return {"kind": "page_view", "page": case["page"], field: case["value"]}
    if kind not in _PAYLOAD_FIELDS:
        # Anything else a case sends is a measurement named by its kind, as
        # a collector's own metrics arrive.
        return {"kind": "metric_sample", "name": kind, "value": case["value"]}
    native_kind, fields = _PAYLOAD_FIELDS[kind]
    payload: dict[str, Any] = {"kind": native_kind}
    for source, target in fields.items():
        if source in case:
            payload[target] = case[source]
    if native_kind == "db_query" and "status" in case:
        payload["error"] = case["status"] != "ok"
    return payload


def _case_file(pattern: str) -> Path:
    found = sorted(CASES.glob(pattern))
    if not found:
        raise FileNotFoundError(
            f"no shared case {pattern!r} in {CASES}; the shared folder sits beside "
            "the checkout, or set FORESHOCK_CASES to its cases/ folder"
        )
    return found[0]


def events(name: str) -> list[dict[str, Any]]:
    """The events of a `*.jsonl` case, in arrival order."""
    path = _case_file(f"{name}-*.jsonl")
    # Python's json reads the bare NaN and Infinity tokens some cases carry.
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def event_messages(name: str, topic: str = "telemetry") -> list[RawMessage]:
    """A `*.jsonl` case as the Kafka records a producer would have written."""
    out = []
    for offset, case in enumerate(events(name)):
        value = json.dumps(native(case)).encode()
        out.append(RawMessage(topic, 0, offset, case["service"].encode(), value))
    return out


def kafka_records(name: str) -> list[RawMessage]:
    """A `*.kafka.jsonl` case: raw records, values adapted where they parse."""
    path = _case_file(f"{name}-*.kafka.jsonl")
    out = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        out.append(
            RawMessage(
                topic=r["topic"],
                partition=r["partition"],
                offset=r["offset"],
                key=None if r["key"] is None else r["key"].encode(),
                value=_value(r),
                timestamp_ms=r["timestamp_ms"],
                headers=tuple((k, v.encode()) for k, v in r["headers"]),
            )
        )
    return out


def _value(record: dict[str, Any]) -> bytes | None:
    if record.get("value_b64") is not None:
        return base64.b64decode(record["value_b64"])
    if record["value"] is None:
        return None
    text: str = record["value"]
    try:
        case = json.loads(text)
    except ValueError:
        return text.encode()
    if isinstance(case, dict) and case.get("kind") in _PAYLOAD_FIELDS:
        return json.dumps(native(case)).encode()
    return text.encode()


def batches(
    messages: list[RawMessage], size: int, shard: str = "t:0"
) -> list[RawBatch]:
    return [
        RawBatch(shard, tuple(messages[i : i + size]))
        for i in range(0, len(messages), size)
    ]
