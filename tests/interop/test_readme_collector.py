"""The README's Collector section shows the configuration the tests run."""

from __future__ import annotations

import re
from pathlib import Path

from foreshock.config import load_settings
from tests.interop.collector import CONFIG, REPO

_SECTION = "## Feeding OpenTelemetry through the Collector"


def _blocks(language: str) -> list[str]:
    readme = (REPO / "README.md").read_text()
    start = readme.index(_SECTION)
    end = readme.index("\n## ", start + len(_SECTION))
    return re.findall(rf"```{language}\n(.*?)```", readme[start:end], re.DOTALL)


def _settings_lines(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_readme_shows_the_collector_configuration_of_the_tests() -> None:
    (shown,) = _blocks("yaml")

    assert _settings_lines(shown) == _settings_lines(CONFIG.read_text())


def test_readme_foreshock_configuration_reads_both_collector_topics(
    tmp_path: Path,
) -> None:
    (shown,) = _blocks("toml")
    path = tmp_path / "foreshock.toml"
    path.write_text(shown)

    settings = load_settings(path)

    assert settings.kafka.input_topics == ["otlp_metrics", "otlp_spans"]
    assert settings.kafka.formats == {
        "otlp_metrics": "otlp_proto_metrics",
        "otlp_spans": "otlp_proto_traces",
    }
