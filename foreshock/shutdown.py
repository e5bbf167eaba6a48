"""A stop asked for by SIGINT or SIGTERM: inputs end, open windows are kept.

Bytewax checks for signals between activations and turns a Python
`KeyboardInterrupt` into a panic of its worker, with a Rust backtrace on the
terminal. `on_signals` installs handlers that only note the request. Kafka
sources then end as if their partitions were read (`requested`), and the
stateful steps, seeing the request in `on_eof`, neither close the windows
still open nor judge the windows still pending: that would publish a
partial minute as if it were whole. With recovery, the last snapshot holds
them and a restart carries on where the stop left off; without it, they are
lost, as on any restart without recovery. A second signal stops at once.

Kubernetes stops a pod with SIGTERM, and a person at a terminal with
Ctrl-C: both take the same way.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["on_signals", "request", "requested", "reset"]

log = logging.getLogger(__name__)

_STOP = threading.Event()
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def requested() -> bool:
    """Whether a stop was asked for since the last `reset`."""
    return _STOP.is_set()


def request() -> None:
    """Ask the running flow to stop, as a signal would."""
    _STOP.set()


def reset() -> None:
    """Forget an earlier request (a new run in the same process)."""
    _STOP.clear()


def _on_signal(number: int, frame: FrameType | None) -> None:
    if _STOP.is_set():
        # Raising here would reach Bytewax as a worker panic with a Rust
        # backtrace; what was not snapshotted is read again on a restart
        # with recovery, so nothing is gained by unwinding.
        sys.stderr.write(
            "foreshock: stopped at once; a restart with recovery carries on "
            "from the last snapshot\n"
        )
        sys.stderr.flush()
        os._exit(128 + number)
    name = signal.Signals(number).name
    log.warning(
        "%s received: stopping once what was read is handled, which waits "
        "for Kafka if the broker is away; send it again to stop at once",
        name,
    )
    _STOP.set()


@contextmanager
def on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM ask for a stop instead of raising.

    Handlers can only be set from the main thread; elsewhere (a flow run by
    a test's thread) the block changes nothing.
    """
    reset()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {number: signal.getsignal(number) for number in _SIGNALS}
    for number in _SIGNALS:
        signal.signal(number, _on_signal)
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
