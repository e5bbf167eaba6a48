"""A plugin named in `extensions.modules` adds a format and a detector that
the configuration then selects; mistakes in either stop the job at start-up
with one line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bytewax.testing import TestingSink, run_main

import models
from connectors.iterables import IterableSource
from connectors.messages import RawBatch, RawMessage
from flows.pipeline import build_flow
from flows.steps import DetectLogic
from foreshock import decode
from foreshock.cli import main
from foreshock.config import load_settings
from foreshock.jobs import flow_config
from foreshock.layers import Layer
from foreshock.records import DeadLetter, KpiRecord, KpiScore
from models.base import Score
from models.robust import RobustZDetector
from tests.core.scores import scored

README = Path(__file__).parents[1] / "README.md"


def _readme_block(language: str, first_line: str) -> str:
    """The README's code block in `language` that starts with `first_line`."""
    text = README.read_text()
    start = text.index(f"```{language}\n{first_line}") + len(language) + 4
    return text[start : text.index("```", start)]


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The README's plugin and its configuration, as a user copies them."""
    plugin = _readme_block("python", "# acme_foreshock.py")
    (tmp_path / "acme_foreshock.py").write_text(plugin)
    monkeypatch.syspath_prepend(str(tmp_path))
    # What the plugin registers is gone after the test, as in a new process.
    monkeypatch.setattr(decode, "_FORMATS", dict(decode._FORMATS))
    monkeypatch.setattr(models, "_VARIANTS", dict(models._VARIANTS))
    config = tmp_path / "foreshock.toml"
    config.write_text(_readme_block("toml", "[extensions]"))
    yield config
    sys.modules.pop("acme_foreshock", None)


def _reading(second: int, service: str | None = "orders") -> bytes:
    doc = {"ts": f"2025-03-04T10:00:{second:02d}Z", "code": 200, "ms": 12.5}
    if service is not None:
        doc["svc"] = service
    return json.dumps(doc).encode()


def test_a_plugin_format_and_detector_run_in_the_flow(plugin: Path) -> None:
    settings = load_settings(plugin)
    values = [_reading(1), _reading(2, service=None), _reading(3), _reading(4)]
    batch = RawBatch(
        "acme-meters:0",
        tuple(RawMessage("acme-meters", 0, i, None, v) for i, v in enumerate(values)),
        "acme",
    )
    out: list[object] = []

    flow = build_flow(
        IterableSource(lambda: [batch]), TestingSink(out), flow_config(settings)
    )
    run_main(flow)  # type: ignore[no-untyped-call]

    letters = [(r.reason, r.offset) for r in out if isinstance(r, DeadLetter)]
    assert letters == [("acme_no_service", 1)]
    [rate] = [
        r for r in out if isinstance(r, KpiScore) and r.kpi.kpi == "requests_per_s"
    ]
    # Three readings in a one-minute window, judged by the plugin's detector
    # (a robust z-score under another name).
    assert rate.kpi.value == 3 / 60
    assert rate.detector == "acme-steady"


@pytest.mark.parametrize(
    ("toml", "said"),
    [
        (
            '[detection]\ndetector = "halfspacetrees"\n',
            "detection.detector: Value error, unknown detector 'halfspacetrees'; "
            "choose from ensemble, longtail, robust_z",
        ),
        (
            '[detection]\ndetector = "ensemble:refractoy=0"\n',
            "EnsembleConfig has no field 'refractoy' (in 'refractoy=0'); did you "
            "mean 'refractory'?",
        ),
        (
            '[detection]\nby_kpi = { latency_p95_ms = "hst" }\n',
            "detection.by_kpi: Value error, by_kpi.latency_p95_ms: unknown "
            "detector 'hst'",
        ),
        (
            '[extensions]\nmodules = ["no_such_plugin_here"]\n',
            "extensions.modules: cannot import 'no_such_plugin_here' (No module "
            "named 'no_such_plugin_here'); install it or put its folder on "
            "PYTHONPATH",
        ),
    ],
)
def test_a_wrong_detector_or_plugin_stops_the_job_at_start_in_one_line(
    toml: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "foreshock.toml"
    config.write_text(toml)

    code = main(["run", "--config", str(config)])

    err = capsys.readouterr().err
    assert code == 2
    assert said in err
    assert len(err.splitlines()) == 1


def test_the_series_of_a_kpi_can_have_a_detector_of_their_own(tmp_path: Path) -> None:
    config = tmp_path / "foreshock.toml"
    config.write_text(
        '[detection]\nby_kpi = { requests_per_s = "river:StandardAbsoluteDeviation" }\n'
    )
    request = {
        "time": "2025-03-04T10:00:01Z",
        "layer": "backend",
        "service": "orders",
        "payload": {"kind": "http_request", "status": 200, "duration_ms": 20.0},
    }
    batch = RawBatch(
        "telemetry:0",
        (RawMessage("telemetry", 0, 0, None, json.dumps(request).encode()),),
    )
    out: list[object] = []

    flow = build_flow(
        IterableSource(lambda: [batch]),
        TestingSink(out),
        flow_config(load_settings(config)),
    )
    run_main(flow)  # type: ignore[no-untyped-call]

    detectors = {r.kpi.kpi: r.detector for r in out if isinstance(r, KpiScore)}
    assert detectors["requests_per_s"] == "river:StandardAbsoluteDeviation"
    assert detectors["latency_p95_ms"] == "ensemble"


def test_plugins_named_in_the_environment_are_imported_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORESHOCK_EXTENSIONS__MODULES", '["no_such_plugin_here"]')

    code = main(["run"])

    assert code == 2
    assert capsys.readouterr().err == (
        "foreshock: extensions.modules: cannot import 'no_such_plugin_here' (No "
        "module named 'no_such_plugin_here'); install it or put its folder on "
        "PYTHONPATH\n"
    )


def test_a_detector_that_fails_on_a_value_leaves_that_window_unscored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Fragile(RobustZDetector):
        name = "fragile"

        def score_one(self, x: float, t: datetime) -> Score:
            if x > 1e100:
                raise ZeroDivisionError("float division by zero")
            return super().score_one(x, t)

    logic = DetectLogic(None, 0.7, lambda direction, kpi: Fragile(direction))
    first, second, third = (
        _record(minute, value) for minute, value in ((0, 10.0), (1, 1e160), (2, 11.0))
    )

    scores = [next(iter(logic.on_item(r)[0])) for r in (first, second, third)]

    assert [s.detector_state for s in scores] == ["warming_up", "skipped", "warming_up"]
    assert (scores[1].score, scores[1].anomalous) == (None, False)
    [error] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert error.getMessage() == (
        "detector fragile failed on backend/orders latency_p95_ms at "
        "2025-03-04T10:01:00+00:00 (failure 1 of this series), left unscored: "
        "ZeroDivisionError: float division by zero"
    )
    assert error.exc_info is not None


def _record(minute: int, value: float) -> KpiRecord:
    start = datetime(2025, 3, 4, 10, minute, tzinfo=UTC)
    window = scored(
        start,
        Layer.BACKEND,
        "orders",
        "latency_p95_ms",
        value,
        expected=None,
        anomalous=False,
    )
    return window.kpi


@pytest.mark.parametrize(
    ("toml", "plugin", "said"),
    [
        (
            '[detection]\ndetector = "river:LODA,n_bins=0"\n',
            "",
            "detector 'river:LODA,n_bins=0' fails on a test series: IndexError",
        ),
        (
            '[extensions]\nmodules = ["broken_plugin_here"]\n',
            'raise RuntimeError("no licence key")\n',
            "extensions.modules: importing 'broken_plugin_here' failed: "
            "RuntimeError: no licence key",
        ),
    ],
)
def test_impossible_detectors_and_broken_plugins_stop_the_job_in_one_line(
    toml: str,
    plugin: str,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "broken_plugin_here.py").write_text(plugin)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "foreshock.toml"
    config.write_text(toml)

    code = main(["run", "--config", str(config)])

    err = capsys.readouterr().err
    sys.modules.pop("broken_plugin_here", None)
    assert code == 2
    assert said in err
    assert len(err.splitlines()) == 1


def test_a_folder_given_as_the_configuration_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--config", str(tmp_path)])

    assert code == 2
    assert capsys.readouterr().err == (
        f"foreshock: {tmp_path} is a folder; --config takes a TOML file\n"
    )
