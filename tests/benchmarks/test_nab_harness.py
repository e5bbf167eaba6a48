"""The NAB harness end to end on a small NAB-layout folder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from foreshock.benchmarks.nab import main, run_nab

NAB = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab"
FILES = (
    "realTraffic/speed_7578.csv",
    "realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv",
)

pytestmark = pytest.mark.skipif(not NAB.is_dir(), reason="NAB data absent")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "nab"
    windows = json.loads((NAB / "labels" / "combined_windows.json").read_text())
    for name in FILES:
        (root / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB / "data" / name, root / "data" / name)
    (root / "labels").mkdir()
    subset = {name: windows[name] for name in FILES}
    (root / "labels" / "combined_windows.json").write_text(json.dumps(subset))
    (root / "config").mkdir()
    shutil.copy(NAB / "config" / "profiles.json", root / "config" / "profiles.json")
    return root


def test_run_nab_writes_nab_layout_and_scores(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"

    result = run_nab(corpus, out)

    assert set(result) == {
        "standard",
        "reward_low_FP_rate",
        "reward_low_FN_rate",
        "files",
        "windows",
        "seconds",
    }
    assert (result["files"], result["windows"]) == (2, 6)
    assert all(-100 <= result[p] <= 100 for p in ("standard", "reward_low_FP_rate"))
    rows = list(csv.reader((out / "realTraffic" / "foreshock_speed_7578.csv").open()))
    assert rows[0] == ["timestamp", "value", "anomaly_score"]
    assert len(rows) == 1 + 1127
    assert all(0.0 <= float(r[2]) <= 1.0 for r in rows[1:])


def test_main_prints_one_json_line(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--data",
            str(corpus),
            "--output",
            str(tmp_path / "r"),
            "--json",
            "--detector",
            "robust_z",
        ]
    )

    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == 1
    assert json.loads(lines[0])["files"] == 2
    assert (tmp_path / "r" / "realTraffic" / "robust_z_speed_7578.csv").exists()
