"""The recovery store: where `foreshock run` keeps the flow's snapshots.

Bytewax keeps a flow's snapshots in a fixed number of SQLite files,
`part-<i>.sqlite3`, each of which records its own index and the count it
was made with. The cluster as a whole must hold every file; a process may
hold any subset. So each process keeps the files whose index modulo the
number of processes is its own `process_id`, on storage of its own (a
Kubernetes persistent volume per pod): a restarted pod finds its files
again, and no two processes write the same file.

Bytewax resumes from whatever files the processes hold when they start,
so a file left where no process looks for it loses its state silently.
`open_store` creates this process's files when its directory holds none
of them, and refuses, with what to move where, a directory that holds
only some of them or (unless `recovery.shared`) files another process
keeps: both are what changing the number of processes leaves behind. It
refuses files made for another partition count, which Bytewax could not
resume from, and fewer files than processes.

With `recovery.shared`, processes on one host share one directory: each
sees the others' files too, makes its own beside them, and Bytewax picks
one process to write each file.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import sqlite3
import tempfile
from collections.abc import Collection, Sequence
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import IO

from bytewax.recovery import RecoveryConfig, init_db_dir

from foreshock.config import ClusterSettings, RecoverySettings
from foreshock.errors import UserError

__all__ = [
    "RecoveryStoreError",
    "check_window_keys",
    "held_parts",
    "last_snapshot_epoch",
    "open_store",
    "parts_of_process",
]

log = logging.getLogger(__name__)

# Bytewax opens every file here with this ending as a recovery file,
# whatever its name.
_PATTERN = "*.sqlite3"


class RecoveryStoreError(UserError, RuntimeError):
    """The recovery directory holds files this flow cannot resume from."""


def open_store(
    recovery: RecoverySettings, cluster: ClusterSettings
) -> RecoveryConfig | None:
    """This process's recovery store, created if missing; None if not set."""
    if recovery.dir is None:
        return None
    directory = recovery.dir
    _make_directory(directory)
    processes = max(1, len(cluster.addresses))
    wanted = parts_of_process(recovery.partitions, cluster.process_id or 0, processes)

    if recovery.partitions < processes:
        raise RecoveryStoreError(
            f"recovery.partitions is {recovery.partitions}, fewer than the "
            f"{processes} processes of cluster.addresses: each process needs a "
            f"file of its own; set it to at least {processes} before the store "
            "is first made"
        )
    _lock(directory, cluster.process_id or 0)
    held = held_parts(directory)
    _check_counts(directory, held, recovery.partitions)
    own = [i for i in wanted if i in held]
    others = sorted(i for i in held if i not in wanted)
    if others and not recovery.shared:
        # A directory of its own holding another process's files was kept
        # with another number of processes: resuming without those files
        # where they belong would lose their state.
        raise RecoveryStoreError(_misplaced(directory, others, processes))
    if not own and wanted:
        _create(directory, recovery.partitions, wanted)
        log.info(
            "recovery store created dir=%s parts=%s of=%s",
            directory,
            wanted,
            recovery.partitions,
        )
    elif own != wanted:
        raise RecoveryStoreError(_missing(directory, own, wanted))
    else:
        log.info("recovery store found dir=%s parts=%s", directory, sorted(held))
    backup = timedelta(seconds=recovery.backup_interval_s)
    return RecoveryConfig(directory, backup)  # type: ignore[no-untyped-call]


# Lock files this process holds, by path, open for as long as it runs.
_LOCKS: dict[Path, IO[bytes]] = {}


def _lock(directory: Path, process_id: int) -> None:
    """Hold this process's lock on the store, or refuse a second run on it.

    Two runs resuming from one store would each publish everything again.
    The lock is the operating system's (`flock`), so it ends with the
    process however that ends.
    """
    path = (directory / f".lock-process-{process_id}").resolve()
    if path in _LOCKS:
        return
    held = path.open("ab")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
        held.close()
        raise RecoveryStoreError(
            f"another foreshock run uses the recovery store {str(directory)!r} "
            f"as process {process_id}; stop it first, since two runs on one "
            "store publish everything twice"
        ) from error
    _LOCKS[path] = held


def parts_of_process(partitions: int, process_id: int, processes: int) -> list[int]:
    """The indexes of the files that process `process_id` keeps."""
    return [i for i in range(partitions) if i % processes == process_id]


def held_parts(directory: Path) -> dict[int, int]:
    """Index -> partition count of every recovery file in `directory`."""
    held: dict[int, int] = {}
    for path in sorted(directory.glob(_PATTERN)):
        try:
            with _read_only(path) as db:
                rows = db.execute("SELECT part_index, part_count FROM parts")
                held.update((int(index), int(count)) for index, count in rows)
        except sqlite3.OperationalError as error:
            raise RecoveryStoreError(
                f"cannot read the recovery file {str(path)!r} ({error}); check "
                "its permissions, and that no other job is writing it"
            ) from error
        except sqlite3.DatabaseError as error:
            raise RecoveryStoreError(
                f"{str(path)!r} is not a recovery file ({error}); move it out of "
                "recovery.dir, or empty the directory to start over without "
                "the saved state"
            ) from error
    return held


def check_window_keys(directory: Path, step_id: str, keys: Collection[str]) -> None:
    """Refuse a store whose step `step_id` holds state under keys not in
    `keys`, the ones this run gives its partitions' windows.

    Bytewax would rebuild that state under its old key while this run's
    items go to the new one: each window then open would be published in
    two halves.
    """
    held: set[str] = set()
    for path in sorted(directory.glob(_PATTERN)):
        with _read_only(path) as db:
            rows = db.execute(
                "SELECT state_key, ser_change FROM snaps AS s WHERE step_id = ? "
                "AND snap_epoch = (SELECT MAX(snap_epoch) FROM snaps AS t "
                "WHERE t.step_id = s.step_id AND t.state_key = s.state_key)",
                (step_id,),
            )
            held.update(key for key, change in rows if change is not None)
    strange = sorted(held - set(keys))
    if strange:
        raise RecoveryStoreError(
            f"the recovery store {str(directory)!r} holds window state under "
            f"keys this run does not give: {_some(strange)}. It was written "
            "with other input partitions, or by a build with or without the "
            "native extension where this one differs, and resuming would split "
            "the windows then open in two; start with an empty recovery.dir "
            "(those windows are lost), or, if only the build changed, run the "
            "build that wrote it"
        )


def last_snapshot_epoch(directory: Path) -> int | None:
    """The latest epoch every file here has committed, or None before any.

    A flow restarted on this directory resumes from this epoch or an
    earlier one (the cluster's files may be spread over several hosts).
    """
    epochs: list[int] = []
    for path in sorted(directory.glob(_PATTERN)):
        with _read_only(path) as db:
            row = db.execute("SELECT MIN(commit_epoch) FROM commits").fetchone()
        if row is None or row[0] is None:
            return None
        epochs.append(int(row[0]))
    return min(epochs) if epochs else None


def _create(directory: Path, partitions: int, wanted: list[int]) -> None:
    if not wanted:
        return
    # All files are made together (Bytewax numbers them), then only this
    # process's are kept; the staging folder sits beside them so that the
    # move is a rename on the same file system.
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=directory))
    try:
        init_db_dir(staging, partitions)  # type: ignore[no-untyped-call]
        for index in wanted:
            name = f"part-{index}.sqlite3"
            (staging / name).rename(directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _make_directory(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise RecoveryStoreError(
            f"recovery.dir {str(directory)!r} is a file, not a directory; set "
            "recovery.dir to a directory (it is created if missing)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RecoveryStoreError(
            f"cannot make recovery.dir {str(directory)!r} "
            f"({error.strerror or error}); set recovery.dir to a directory "
            "this process can write"
        ) from error


def _check_counts(directory: Path, held: dict[int, int], partitions: int) -> None:
    counts = set(held.values())
    if counts and counts != {partitions}:
        raise RecoveryStoreError(
            f"the recovery store {str(directory)!r} was made for "
            f"{_in_words(sorted(counts))} partitions, but recovery.partitions "
            f"is {partitions}; set recovery.partitions to match, or empty the "
            "directory to start over without the saved state"
        )


def _missing(directory: Path, own: list[int], wanted: list[int]) -> str:
    missing = [i for i in wanted if i not in own]
    return (
        f"the recovery store {str(directory)!r} holds {_files(own)} of this "
        f"process but not {_files(missing)}; move the missing files here from "
        "the recovery.dir that holds them (with another number of processes, "
        "another process kept them), or put them back from a backup, or empty "
        "every process's directory to start over without the saved state"
    )


def _misplaced(directory: Path, others: list[int], processes: int) -> str:
    owners: dict[int, list[int]] = {}
    for index in others:
        owners.setdefault(index % processes, []).append(index)
    where = "; ".join(
        f"{_files(indexes)} to process {owner}'s"
        for owner, indexes in sorted(owners.items())
    )
    return (
        f"the recovery store {str(directory)!r} holds files that other processes "
        f"keep with {processes} processes (each keeps the files whose number, "
        "modulo the number of processes, is its cluster.process_id): move "
        f"{where} recovery.dir, replacing any file there, then start every "
        "process again; if all processes use this one directory, set "
        "recovery.shared = true"
    )


def _files(indexes: list[int]) -> str:
    return _in_words([f"part-{i}.sqlite3" for i in indexes])


def _in_words(items: Sequence[object]) -> str:
    """`2`, `2 and 3`, `1, 2 and 3`."""
    words = [str(item) for item in items]
    if len(words) < 2:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


def _some(items: Sequence[str], shown: int = 3) -> str:
    if len(items) <= shown:
        return _in_words(items)
    return f"{', '.join(items[:shown])} and {len(items) - shown} more"


def _read_only(path: Path) -> closing[sqlite3.Connection]:
    return closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True))
