"""Where the labelled datasets keep their cases on disk.

A Nezha folder holds a folder a day under `rca_data/`, a PetShop folder one
a scenario under `dataset/`. The commands that read them (`foreshock replay`,
`foreshock topology`, `foreshock bench rca`) pick those folders here, so
that a wrong `--data`, `--day` or `--scenario` is answered alike everywhere:
with what the folder does hold.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["nezha_days", "petshop_scenarios"]


def nezha_days(data: Path, day: str | None = None) -> list[Path]:
    """The day folders of the Nezha folder `data`, or only that of `day`."""
    expected = "a Nezha folder, the one holding rca_data/<day>/"
    return _folders(data / "rca_data", day, "day", expected)


def petshop_scenarios(data: Path, scenario: str | None = None) -> list[Path]:
    """The scenario folders of the PetShop folder `data`, or only `scenario`'s."""
    expected = "a PetShop folder, the one holding dataset/<scenario>/"
    return _folders(data / "dataset", scenario, "scenario", expected)


def _folders(root: Path, name: str | None, what: str, expected: str) -> list[Path]:
    found = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"no {what} folders in {str(root)!r}: give --data {expected}"
        )
    if name is None:
        return found

    chosen = [p for p in found if p.name == name]
    if not chosen:
        there = ", ".join(p.name for p in found)
        raise FileNotFoundError(
            f"no {what} folder {name!r} in {str(root)!r}; the {what}s there: {there}"
        )
    return chosen
