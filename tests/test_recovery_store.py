"""The recovery directory: which files each process makes, and one line on
what to do when the directory holds files a flow cannot resume from."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main

from connectors.iterables import IterableSource, event_batches
from flows.pipeline import FLOW_ID, FlowConfig, build_flow, window_state_step
from foreshock.cli import main
from foreshock.config import ClusterSettings, RecoverySettings
from foreshock.layers import Layer
from foreshock.recovery import (
    RecoveryStoreError,
    check_window_keys,
    held_parts,
    open_store,
)
from foreshock.schema import Event, PageView
from tests.flow_runs import (
    MINUTES,
    free_ports,
    incident_events,
    produce,
    start_run,
    wait_until,
    write_config,
)
from tests.kafka_helpers import TopicFactory

_START_OVER = "or empty the directory to start over without the saved state"


def _open(
    store: Path,
    partitions: int,
    process_id: int,
    processes: int,
    *,
    shared: bool = False,
) -> None:
    addresses = [f"localhost:{9999 - i}" for i in range(processes)]
    open_store(
        RecoverySettings(dir=store, partitions=partitions, shared=shared),
        ClusterSettings(addresses=addresses, process_id=process_id),
    )


def _files(store: Path) -> list[str]:
    # Reading a file leaves SQLite's -wal and -shm files beside it.
    return sorted(p.name for p in store.glob("*.sqlite3"))


def _made_for(store: Path, partitions: int, *indexes: int) -> None:
    """Recovery files of `partitions` made by Bytewax, keeping `indexes`."""
    made = store.parent / f"made-{partitions}"
    made.mkdir()
    init_db_dir(made, partitions)  # type: ignore[no-untyped-call]
    store.mkdir(exist_ok=True)
    for index in indexes:
        name = f"part-{index}.sqlite3"
        shutil.move(made / name, store / name)


@pytest.mark.parametrize("first", [0, 1])
def test_processes_sharing_a_directory_each_make_their_own_files(
    first: int, tmp_path: Path
) -> None:
    store = tmp_path / "store"

    _open(store, partitions=2, process_id=first, processes=2, shared=True)
    _open(store, partitions=2, process_id=1 - first, processes=2, shared=True)

    assert held_parts(store) == {0: 2, 1: 2}
    assert _files(store) == ["part-0.sqlite3", "part-1.sqlite3"]


def test_a_restart_on_a_shared_directory_makes_no_new_file(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _made_for(store, 4, 0, 1, 2, 3)
    before = {p.name: p.stat().st_mtime_ns for p in store.glob("*.sqlite3")}

    for process_id in (0, 1):
        _open(store, partitions=4, process_id=process_id, processes=2, shared=True)

    assert {p.name: p.stat().st_mtime_ns for p in store.glob("*.sqlite3")} == before


def test_a_process_sharing_a_directory_makes_its_own_files_only(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    _made_for(store, 4, 1, 3)

    _open(store, partitions=4, process_id=0, processes=2, shared=True)

    assert held_parts(store) == {0: 4, 1: 4, 2: 4, 3: 4}


def test_a_directory_of_its_own_holding_others_files_is_refused(
    tmp_path: Path,
) -> None:
    # One process kept all four files; now process 0 of 3 keeps 0 and 3,
    # process 1 keeps 1, process 2 keeps 2.
    store = tmp_path / "store"
    _made_for(store, 4, 0, 1, 2, 3)

    with pytest.raises(RecoveryStoreError) as refused:
        _open(store, partitions=4, process_id=0, processes=3)

    assert str(refused.value) == (
        f"the recovery store '{store}' holds files that other processes keep "
        "with 3 processes (each keeps the files whose number, modulo the "
        "number of processes, is its cluster.process_id): move part-1.sqlite3 "
        "to process 1's; part-2.sqlite3 to process 2's recovery.dir, replacing "
        "any file there, then start every process again; if all processes use "
        "this one directory, set recovery.shared = true"
    )
    assert _files(store) == [f"part-{i}.sqlite3" for i in range(4)]


def test_fewer_files_than_processes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RecoveryStoreError) as refused:
        _open(tmp_path / "store", partitions=2, process_id=2, processes=3)

    assert str(refused.value) == (
        "recovery.partitions is 2, fewer than the 3 processes of "
        "cluster.addresses: each process needs a file of its own; set it to at "
        "least 3 before the store is first made"
    )


def test_a_process_missing_some_of_its_files_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    # Process 0 of 2 keeps files 0 and 2 of 4; file 2 is elsewhere.
    _made_for(store, 4, 0)

    with pytest.raises(RecoveryStoreError) as refused:
        _open(store, partitions=4, process_id=0, processes=2)

    assert str(refused.value) == (
        f"the recovery store '{store}' holds part-0.sqlite3 of this process but "
        "not part-2.sqlite3; move the missing files here from the recovery.dir "
        "that holds them (with another number of processes, another process "
        "kept them), or put them back from a backup, or empty every process's "
        "directory to start over without the saved state"
    )
    assert _files(store) == ["part-0.sqlite3"]


def test_files_of_another_partition_count_are_refused_before_any_is_made(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    _made_for(store, 2, 0)

    with pytest.raises(RecoveryStoreError) as refused:
        _open(store, partitions=3, process_id=1, processes=2)

    assert str(refused.value) == (
        f"the recovery store '{store}' was made for 2 partitions, but "
        f"recovery.partitions is 3; set recovery.partitions to match, {_START_OVER}"
    )
    assert _files(store) == ["part-0.sqlite3"]


def test_files_of_several_partition_counts_are_named_in_words(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _made_for(store, 2, 0)
    _made_for(store, 3, 1)

    with pytest.raises(RecoveryStoreError, match="made for 2 and 3 partitions,"):
        _open(store, partitions=4, process_id=0, processes=1)


def _run(tmp_path: Path, bootstrap: str, topic: str, recovery: str) -> Path:
    config = tmp_path / "f.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{bootstrap}"\n'
        f'input_topics = ["{topic}"]\ngroup_id = "{topic}"\n'
        f"[metrics]\nenabled = false\n[recovery]\n{recovery}\n"
    )
    return config


@pytest.mark.kafka
def test_a_store_of_another_partition_count_is_one_line(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [topic] = kafka_topics("counts-in")
    store = tmp_path / "store"
    _made_for(store, 2, 0, 1)
    config = _run(tmp_path, kafka_bootstrap, topic, f'dir = "{store}"\npartitions = 1')

    code = main(["run", "--config", str(config), "--until-end"])

    assert (code, capsys.readouterr().err) == (
        2,
        f"foreshock: the recovery store '{store}' was made for 2 partitions, but "
        f"recovery.partitions is 1; set recovery.partitions to match, "
        f"{_START_OVER}\n",
    )


@pytest.mark.kafka
def test_a_recovery_dir_that_is_a_file_is_one_line(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [topic] = kafka_topics("file-in")
    store = tmp_path / "store"
    store.write_text("notes\n")
    config = _run(tmp_path, kafka_bootstrap, topic, f'dir = "{store}"')

    code = main(["run", "--config", str(config), "--until-end"])

    assert (code, capsys.readouterr().err) == (
        2,
        f"foreshock: recovery.dir '{store}' is a file, not a directory; set "
        "recovery.dir to a directory (it is created if missing)\n",
    )
    assert store.read_text() == "notes\n"


@pytest.mark.kafka
def test_a_file_that_is_not_sqlite_in_the_store_is_one_line(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [topic] = kafka_topics("junk-in")
    store = tmp_path / "store"
    store.mkdir()
    (store / "part-0.sqlite3").write_text("not a database\n")
    config = _run(tmp_path, kafka_bootstrap, topic, f'dir = "{store}"')

    code = main(["run", "--config", str(config), "--until-end"])

    assert (code, capsys.readouterr().err) == (
        2,
        f"foreshock: '{store}/part-0.sqlite3' is not a recovery file (file is "
        "not a database); move it out of recovery.dir, "
        f"{_START_OVER}\n",
    )


def _done(logs: list[Path], what: str) -> int:
    """The sum over the processes' summaries of the count before `what`."""
    found = [re.search(rf"^done: .*?\b(\d+) {what}", p.read_text(), re.M) for p in logs]
    assert all(found), [p.read_text()[-3000:] for p in logs]
    return sum(int(m.group(1)) for m in found if m)


@pytest.mark.kafka
def test_two_processes_sharing_a_directory_run_and_resume(
    kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    [source] = kafka_topics("shared-in", partitions=2)
    kinds = ("kpis", "anomalies", "incidents", "early_warnings", "data_quality")
    outputs = dict(zip(kinds, kafka_topics(*kinds), strict=True))
    store = tmp_path / "store"
    config = write_config(
        tmp_path / "shared.toml",
        kafka_bootstrap,
        source,
        outputs,
        recovery=store,
        extra={
            "recovery": {"partitions": 2, "shared": True},
            "cluster": {"addresses": [f"127.0.0.1:{p}" for p in free_ports(2)]},
        },
    )
    events = incident_events(0, MINUTES)

    def run_both(turn: int) -> list[Path]:
        logs = [tmp_path / f"run-{turn}-process-{i}.log" for i in (0, 1)]
        env = {"FORESHOCK_CLUSTER__PROCESS_ID": "0"}
        first = start_run(config, logs[0], until_end=True, env=env)
        # The second process starts once the first has made its file.
        wait_until(lambda: (store / "part-0.sqlite3").exists(), 30, "part-0", first)
        env = {"FORESHOCK_CLUSTER__PROCESS_ID": "1"}
        second = start_run(config, logs[1], until_end=True, env=env)
        codes = [first.wait(timeout=90), second.wait(timeout=90)]
        assert codes == [0, 0], [p.read_text()[-3000:] for p in logs]
        return logs

    produce(kafka_bootstrap, source, events)
    first_run = run_both(1)
    # The same events again: a restart that resumed the windows' state
    # finds them all behind the event time it had reached.
    produce(kafka_bootstrap, source, events)
    second_run = run_both(2)

    assert held_parts(store) == {0: 2, 1: 2}
    assert _done(first_run, "records read") == len(events)
    assert _done(first_run, "events late") == 0
    assert _done(second_run, "records read") == len(events)
    assert _done(second_run, "events late") == len(events)


def _page_views(minutes: int) -> list[Event]:
    start = datetime(2025, 3, 4, 10, tzinfo=UTC)
    return [
        Event(
            time=start + timedelta(minutes=m, seconds=s),
            layer=Layer.FRONTEND,
            service="web",
            payload=PageView(load_ms=800),
        )
        for m in range(minutes)
        for s in (5, 35)
    ]


def test_a_store_with_window_state_under_other_keys_is_refused(
    tmp_path: Path,
) -> None:
    # A real store: the flow snapshots the window step's state of partition
    # "telemetry:0" under that name, as a build without the native extension
    # keys it.
    store = tmp_path / "store"
    store.mkdir()
    init_db_dir(store, 1)  # type: ignore[no-untyped-call]
    batches = list(event_batches("telemetry:0", _page_views(3), 10))
    flow = build_flow(IterableSource(lambda: batches), TestingSink([]), FlowConfig())
    run_main(  # type: ignore[no-untyped-call]
        flow,
        epoch_interval=timedelta(days=1),
        recovery_config=RecoveryConfig(store),  # type: ignore[no-untyped-call]
    )
    step = window_state_step(FLOW_ID)

    check_window_keys(store, step, {"telemetry:0"})
    with pytest.raises(RecoveryStoreError) as refused:
        check_window_keys(store, step, {"telemetry:0~41", "telemetry:1~7"})

    assert str(refused.value) == (
        f"the recovery store {str(store)!r} holds window state under keys this "
        "run does not give: telemetry:0. It was written with other input "
        "partitions, or by a build with or without the native extension where "
        "this one differs, and resuming would split the windows then open in "
        "two; start with an empty recovery.dir (those windows are lost), or, if "
        "only the build changed, run the build that wrote it"
    )


def test_a_second_run_on_a_store_in_use_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    # Another run: a process of its own that takes the store's lock.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from foreshock.config import ClusterSettings, RecoverySettings\n"
            "from foreshock.recovery import open_store\n"
            f"open_store(RecoverySettings(dir={str(store)!r}), ClusterSettings())\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RecoveryStoreError) as refused:
            _open(store, partitions=1, process_id=0, processes=1)
    finally:
        holder.kill()
        holder.wait()

    assert str(refused.value) == (
        f"another foreshock run uses the recovery store '{store}' as process 0; "
        "stop it first, since two runs on one store publish everything twice"
    )
    # Its lock ends with it.
    _open(store, partitions=1, process_id=0, processes=1)
