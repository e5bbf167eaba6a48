import json
from pathlib import Path

from foreshock.schemas import all_schemas

SCHEMAS = Path(__file__).parents[1] / "schemas"


def test_published_schemas_are_current() -> None:
    expected = all_schemas()

    on_disk = {
        p.name.removesuffix(".schema.json"): json.loads(p.read_text())
        for p in SCHEMAS.glob("*.schema.json")
    }

    assert on_disk == expected, "run `make schemas` and commit schemas/"


def test_event_schema_names_every_layer_and_kind() -> None:
    schema = all_schemas()["event"]
    text = json.dumps(schema)

    for layer in (
        "frontend",
        "mobile",
        "synthetic",
        "api",
        "backend",
        "database",
        "infrastructure",
        "third_party",
    ):
        assert f'"{layer}"' in text
    for kind in (
        "page_view",
        "app_launch",
        "app_crash",
        "synthetic_check",
        "http_request",
        "db_query",
        "resource_sample",
        "third_party_call",
        "metric_sample",
        "heartbeat",
    ):
        assert f'"{kind}"' in text
