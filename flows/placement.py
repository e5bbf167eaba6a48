"""Window state kept on the worker that reads its partition.

A partition's raw batches are the bulkiest items of the flow; its windows
turn them into one aggregate per series and window. For a cluster to carry
only aggregates between processes, the window step must keep a partition's
state on the worker that reads the partition, and Bytewax decides both
places by rules of its own (measured on Bytewax 0.21 and held by
`tests/flows/test_placement.py`):

- A source's partitions, sorted by name, go to the workers in turn: the
  j-th to worker `j % workers`, when every worker lists every partition.
  When each process lists its own share (`KafkaSource(process=(i, n))`
  lists the j-th for `j % n == i`), one worker a process reads it there.
- A stateful step keeps key `k` on worker `hash(k) % workers`, with the
  Rust standard hasher.

So the window step keys partition j by a name whose hash leaves j modulo
`MODULUS`: with any worker count that divides it (1 to 12, 14, 15, 18,
20, …) that key stays on worker `j % workers`, where the partition is
read. The key depends only on the partition's name and place among all
partitions, so a job restarted with more or fewer processes finds its
state under the same key. Adding partitions to a topic shifts the places
of those sorted after them, and their windows open at that moment start
over; recovery stores are best started afresh then.

Without the native extension the key is the partition's name, and Bytewax
places it by its hash: the same results, with some raw batches crossing
between workers.
"""

from __future__ import annotations

from collections.abc import Iterable

from foreshock.native import key_routed_to

__all__ = ["MODULUS", "window_keys"]

# lcm(1, ..., 12) = 2^3 * 3^2 * 5 * 7 * 11
MODULUS = 27_720


def window_keys(parts: Iterable[str]) -> dict[str, str]:
    """The window step's state key of each of a source's `parts`.

    `parts` are every partition of the source, across all processes; an
    empty mapping leaves every partition keyed by its name.
    """
    ordered = sorted(set(parts))
    keys: dict[str, str] = {}
    for place, part in enumerate(ordered):
        key = key_routed_to(part, place, MODULUS)
        if key is None:
            return {}
        keys[part] = key
    return keys
