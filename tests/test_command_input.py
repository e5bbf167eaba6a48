"""What the `foreshock` command makes of settings, folders and options given
wrong: a line that names the mistake and what does exist, and no more."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from foreshock.cli import main
from foreshock.config import ClusterSettings, load_settings
from foreshock.errors import UserError

_REPO = Path(__file__).resolve().parent.parent
NEZHA = (
    Path(os.environ.get("FORESHOCK_DATA", _REPO.parent / "shared" / "data")) / "nezha"
)
NEZHA_DAYS = "2022-08-22, 2022-08-23"


def _nezha() -> Path:
    if not (NEZHA / "rca_data").is_dir():
        pytest.skip(f"the Nezha data is not at {NEZHA}; set FORESHOCK_DATA")
    return NEZHA


# -- a cluster's process id --------------------------------------------------


def _cluster_config(path: Path) -> Path:
    path.write_text('[cluster]\naddresses = ["a:2101", "b:2101", "c:2101"]\n')
    return path


def test_a_command_other_than_run_reads_a_cluster_file_on_any_host(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "vm")
    config = _cluster_config(tmp_path / "c.toml")

    code = main(["topology", "--config", str(config)])

    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out.startswith(f"Topology from configuration {config}: ")


def test_run_on_a_host_without_a_number_asks_for_the_process_id(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "vm")
    config = _cluster_config(tmp_path / "c.toml")

    code = main(["run", "--config", str(config)])

    assert (code, capsys.readouterr().err) == (
        2,
        "foreshock: cluster.process_id is not set and the host name 'vm' does "
        "not end in '-<number>'; set cluster.process_id\n",
    )


@pytest.mark.parametrize(
    ("hostname", "process_id"),
    [("foreshock-0", 0), ("foreshock-2.foreshock.svc", 2)],
)
def test_a_process_of_the_cluster_takes_its_id_from_the_host_name(
    hostname: str, process_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    cluster = ClusterSettings(addresses=["a:2101", "b:2101", "c:2101"])

    assert (cluster.process_id, cluster.this_process().process_id) == (
        None,
        process_id,
    )


def test_a_host_number_beyond_the_addresses_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "foreshock-3")
    cluster = ClusterSettings(addresses=["a:2101", "b:2101", "c:2101"])

    with pytest.raises(UserError) as refused:
        cluster.this_process()

    assert str(refused.value) == (
        "the host name 'foreshock-3' makes cluster.process_id 3, but "
        "cluster.addresses names only 3 processes; list every process, or set "
        "cluster.process_id"
    )


def test_a_process_id_set_beyond_the_addresses_is_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _cluster_config(tmp_path / "c.toml")
    with config.open("a") as more:
        more.write("process_id = 3\n")

    code = main(["topology", "--config", str(config)])

    assert (code, capsys.readouterr().err) == (
        2,
        "foreshock: invalid settings: cluster: Value error, cluster.process_id "
        "is 3, but cluster.addresses names only 3 processes; list every process\n",
    )


# -- the demo's reports folder -------------------------------------------------


def test_a_demo_whose_reports_folder_cannot_be_made_stops_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    reports = tmp_path / "file" / "reports"

    code = main(["demo", "--reports", str(reports)])

    assert (code, capsys.readouterr()) == (
        2,
        (
            "",
            f"foreshock: cannot use '{reports}' as the reports folder (Not a "
            "directory); give --reports a folder that can be created and "
            "written\n",
        ),
    )


# -- dataset folders -------------------------------------------------------------


def test_bench_rca_without_a_nezha_folder_says_what_to_give(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "nezha"

    code = main(["bench", "rca", "--dataset", "nezha", "--data", str(data)])

    assert (code, capsys.readouterr().err) == (
        2,
        f"foreshock: no day folders in '{data}/rca_data': give --data a Nezha "
        "folder, the one holding rca_data/<day>/\n",
    )


def test_bench_rca_on_a_missing_day_lists_the_days_there(
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = _nezha()
    command = ["bench", "rca", "--dataset", "nezha", "--data", str(data)]

    code = main([*command, "--day", "2022-09-01"])

    assert (code, capsys.readouterr().err) == (
        2,
        f"foreshock: no day folder '2022-09-01' in '{data}/rca_data'; the days "
        f"there: {NEZHA_DAYS}\n",
    )


def test_bench_rca_on_a_missing_scenario_lists_the_scenarios_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("low_traffic", "high_traffic"):
        (tmp_path / "dataset" / name).mkdir(parents=True)
    command = ["bench", "rca", "--dataset", "petshop", "--data", str(tmp_path)]

    code = main([*command, "--scenario", "huge"])

    assert (code, capsys.readouterr().err) == (
        2,
        f"foreshock: no scenario folder 'huge' in '{tmp_path}/dataset'; the "
        "scenarios there: high_traffic, low_traffic\n",
    )


@pytest.mark.parametrize(
    ("dataset", "option", "value", "said"),
    [
        (
            "petshop",
            "--day",
            "2022-08-22",
            "--day does not apply to --dataset petshop; pick its part with --scenario",
        ),
        (
            "nezha",
            "--scenario",
            "low_traffic",
            "--scenario does not apply to --dataset nezha; pick its part with --day",
        ),
    ],
)
def test_bench_rca_refuses_the_other_datasets_option(
    dataset: str,
    option: str,
    value: str,
    said: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    command = ["bench", "rca", "--dataset", dataset, "--data", str(tmp_path)]

    with pytest.raises(SystemExit) as stopped:
        main([*command, option, value])

    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert (stopped.value.code, last) == (2, f"foreshock bench rca: error: {said}")


def test_a_replay_of_a_missing_day_lists_the_days_there(
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = _nezha()

    code = main(["replay", "--data", str(data), "--day", "2022-09-01"])

    assert (code, capsys.readouterr().err) == (
        2,
        f"foreshock: no day folder '2022-09-01' in '{data}/rca_data'; the days "
        f"there: {NEZHA_DAYS}\n",
    )


def test_the_topology_of_a_missing_day_lists_the_days_there(
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = _nezha()
    command = ["topology", "--dataset", "nezha", "--data", str(data)]

    code = main([*command, "--day", "2022-09-01"])

    assert (code, capsys.readouterr().err) == (
        2,
        f"foreshock topology: no day folder '2022-09-01' in '{data}/rca_data'; "
        f"the days there: {NEZHA_DAYS}\n",
    )


# -- mistyped settings -----------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "said"),
    [
        (
            "[window]\nbackfil_after_s = 0\n",
            "unknown setting window.backfil_after_s; did you mean backfill_after_s?",
        ),
        ("[window]\ncolour = 1\n", "unknown setting window.colour"),
        ("[windows]\nlength_s = 30\n", "unknown section windows; did you mean window?"),
        (
            '[[rum.routes]]\npatern = "/p/.*"\nroute = "/p"\n',
            "rum.routes.0.pattern: Field required; unknown setting "
            "rum.routes.0.patern; did you mean pattern?",
        ),
    ],
)
def test_a_mistyped_setting_is_named_with_the_closest_known_one(
    toml: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "f.toml"
    config.write_text(toml)

    code = main(["incidents", "--config", str(config)])

    assert (code, capsys.readouterr().err) == (
        2,
        f"foreshock: invalid settings: {said}\n",
    )


def test_a_mistyped_setting_in_the_environment_is_named_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORESHOCK_WINDOW__LENGHT_S", "30")

    code = main(["incidents"])

    assert (code, capsys.readouterr().err) == (
        2,
        "foreshock: invalid settings: unknown setting window.lenght_s; did you "
        "mean length_s?\n",
    )


def test_a_variable_of_no_settings_section_is_warned_of(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FORESHOCK_WINDOWS__LENGTH_S", "30")
    monkeypatch.setenv("FORESHOCK_QUUX__SIZE", "3")

    with caplog.at_level(logging.WARNING, logger="foreshock.config"):
        settings = load_settings()

    assert settings.window.length_s == 60.0
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            "environment variable FORESHOCK_QUUX__SIZE is ignored: 'quux' is not "
            "a settings section",
        ),
        (
            logging.WARNING,
            "environment variable FORESHOCK_WINDOWS__LENGTH_S is ignored: "
            "'windows' is not a settings section; did you mean "
            "FORESHOCK_WINDOW__LENGTH_S?",
        ),
    ]
