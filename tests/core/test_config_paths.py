"""File names in a configuration file are read from the file's folder."""

from pathlib import Path

from foreshock.config import load_settings


def test_relative_paths_are_read_from_the_configuration_files_folder(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    config = folder / "foreshock.toml"
    config.write_text(
        '[correlation]\ntopology = "graph.json"\n'
        '[reports]\ndir = "../reports"\n'
        '[recovery]\ndir = "/var/lib/foreshock"\n'
    )

    settings = load_settings(config)

    assert settings.correlation.topology == folder / "graph.json"
    assert settings.reports.dir == folder / "../reports"
    assert settings.recovery.dir == Path("/var/lib/foreshock")
