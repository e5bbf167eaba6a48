"""The JSON Schemas of what Foreshock reads and writes, kept in `schemas/`.

Each output record has two: `<kind>.schema.json` for the record itself (the
native message value, and the `data` of its CloudEvent), and
`cloudevent-<kind>.schema.json` for the whole structured-mode CloudEvent.
What Foreshock reads has one each: `event` (native telemetry),
`change-event` (a change topic's messages) and `feedback` (verdicts and
silences on `topics.feedback`).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from connectors.cloudevents import cloudevent_schema
from foreshock.feedback import Feedback
from foreshock.records import (
    Anomaly,
    DataGap,
    DeadLetter,
    EarlyWarning,
    Incident,
    KpiScore,
    LateEvent,
)
from foreshock.schema import ChangeEvent, event_json_schema

__all__ = ["all_schemas", "write_schemas"]

_OUTPUTS: dict[str, type[BaseModel]] = {
    "kpi": KpiScore,
    "anomaly": Anomaly,
    "incident": Incident,
    "early-warning": EarlyWarning,
    "data-gap": DataGap,
    "dead-letter": DeadLetter,
    "late-event": LateEvent,
}


def all_schemas() -> dict[str, dict[str, object]]:
    """Every schema by file stem: the inputs, then each output record."""
    schemas = {
        "event": event_json_schema(),
        "change-event": ChangeEvent.model_json_schema(),
        "feedback": Feedback.model_json_schema(),
    }
    for name, model in _OUTPUTS.items():
        schemas[name] = model.model_json_schema()
    for name, model in _OUTPUTS.items():
        schemas[f"cloudevent-{name}"] = cloudevent_schema(model)
    return schemas


def write_schemas(folder: Path) -> list[Path]:
    """Write each schema to `folder/<name>.schema.json`; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in all_schemas().items():
        path = folder / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
