"""Window state kept on the worker that reads its partition.

A partition's raw batches are the bulkiest items of the flow; its windows
turn them into one aggregate per series and window. For a cluster to carry
only aggregates between processes, the window step must keep a partition's
state on the worker that reads the partition, and Bytewax decides both
places by rules of its own (measured on Bytewax 0.21 and held by
`tests/flows/test_placement.py`):

- A source's partitions, sorted by name, go to the workers in turn: the
  j-th to worker `j % workers`. Each process lists the partitions of its
  own workers (`connectors.kafka.parts_of_process`), since Bytewax builds
  a partition only where it is listed.
- A stateful step keeps key `k` on worker `hash(k) % workers`, with the
  Rust standard hasher.

So the window step keys partition j by a name whose hash leaves j modulo
`MODULUS`: with any total worker count that divides it (1 to 12, 14, 15,
18, 20, …) that key stays on worker `j % workers`, where the partition is
read. The key depends only on the partition's name and place among all
partitions, not on the number of processes or workers.

A recovery store holds the window state under these keys. One written
with other keys (other partitions, since adding partitions shifts the
places of those sorted after them, or a build without the native
extension) would leave each open window in two halves, the old key's and
the new one's; `foreshock run` refuses such a store
(`foreshock.recovery.check_window_keys`).

Without the native extension the key is the partition's name, and Bytewax
places it by its hash: the same results, with some raw batches crossing
between workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from foreshock.native import key_routed_to, route_hash

__all__ = ["MODULUS", "window_keys"]

log = logging.getLogger(__name__)

# lcm(1, ..., 12) = 2^3 * 3^2 * 5 * 7 * 11
MODULUS = 27_720
# The hash of one key by Rust's standard hasher (SipHash-1-3 with zero
# keys), which Bytewax 0.21 routes by. An extension built by a toolchain
# whose hasher differs gives other hashes than Bytewax's; keys by name are
# then the better guess.
_KNOWN_HASH = ("events-0", 12_666_690_712_021_795_261)


def window_keys(parts: Iterable[str]) -> dict[str, str]:
    """The window step's state key of each of a source's `parts`.

    `parts` are every partition of the source, across all processes; an
    empty mapping leaves every partition keyed by its name.
    """
    known, expected = _KNOWN_HASH
    hashed = route_hash(known)
    if hashed is None:
        return {}
    if hashed != expected:
        log.warning(
            "the native extension hashes keys unlike Bytewax; windows are "
            "keyed by partition name, and some raw batches cross workers"
        )
        return {}
    ordered = sorted(set(parts))
    keys: dict[str, str] = {}
    for place, part in enumerate(ordered):
        key = key_routed_to(part, place, MODULUS)
        if key is None:
            return {}
        keys[part] = key
    return keys
