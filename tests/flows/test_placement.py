"""The window step keeps each partition's state where Bytewax reads the
partition, so that only aggregates cross between workers and processes.

Runs a real Bytewax dataflow (`tests/flows/placement_flow.py`) that reports,
for every partition, the process and thread that read it and those that ran
its keyed state, in one process with several workers and as a cluster of
two processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.placement import MODULUS, window_keys
from foreshock.native import key_routed_to
from tests.flow_runs import free_ports
from tests.flows.placement_flow import PARTS

_REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    key_routed_to("x", 0, 1) is None,
    reason="needs the native extension (make install)",
)


def _places(lines: str) -> dict[str, tuple[str, str]]:
    places = {}
    # Bytewax prints its own lines too (a process retrying to connect).
    for line in lines.splitlines():
        if not line.startswith("placed "):
            continue
        _, part, read, kept = line.split()
        places[part] = (read, kept)
    return places


def _run(flow: str, *args: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bytewax.run",
            f"tests.flows.placement_flow:{flow}",
            *args,
        ],
        cwd=_REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_one_process_keeps_each_partitions_state_on_the_worker_reading_it(
    workers: int,
) -> None:
    places = _places(_run("flow", "-w", str(workers)))

    assert sorted(places) == sorted(PARTS)
    moved = {part: where for part, where in places.items() if where[0] != where[1]}
    assert moved == {}
    assert len({read for read, _ in places.values()}) == workers


def test_keyed_by_name_some_partitions_state_lands_elsewhere() -> None:
    # The control: Bytewax's own placement of plain names moves some.
    places = _places(_run("plain", "-w", "3"))

    assert sorted(places) == sorted(PARTS)
    assert [part for part, (read, kept) in places.items() if read != kept]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_two_processes_keep_each_partitions_state_on_the_worker_reading_it(
    workers: int,
) -> None:
    ports = free_ports(2)
    addresses = ";".join(f"127.0.0.1:{port}" for port in ports)
    command = [
        sys.executable,
        "-m",
        "bytewax.run",
        "tests.flows.placement_flow:flow",
        "-a",
        addresses,
        "-w",
        str(workers),
    ]
    runs = [
        subprocess.Popen(
            [*command, "-i", str(index)],
            cwd=_REPO,
            env={**os.environ, "FORESHOCK_PROCESS": f"{index}/2/{workers}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in (0, 1)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs

    places = _places("".join(out for out, _ in outputs))
    assert sorted(places) == sorted(PARTS)
    moved = {part: where for part, where in places.items() if where[0] != where[1]}
    assert moved == {}
    # The workers take the sorted partitions in turn, process 0's first.
    pids = [places[part][0].partition("/")[0] for part in sorted(PARTS)]
    first, second = pids[0], pids[workers]
    assert first != second
    assert pids == [
        first if (place // workers) % 2 == 0 else second for place in range(len(PARTS))
    ]
    assert len({read for read, _ in places.values()}) == 2 * workers


def test_window_keys_leave_the_sorted_place_modulo_every_small_worker_count() -> None:
    from foreshock_native import route_hash

    keys = window_keys(PARTS)

    assert sorted(keys) == sorted(PARTS)
    for place, part in enumerate(sorted(PARTS)):
        assert keys[part].startswith(f"{part}~")
        for workers in range(1, 13):
            assert route_hash(keys[part]) % workers == place % workers
    assert MODULUS % 11 == 0 and MODULUS % 8 == 0 and MODULUS % 9 == 0
