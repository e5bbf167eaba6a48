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

Python runs a signal handler only when the main thread runs Python, and
while Bytewax waits in its native code (for the other processes of a
cluster to connect, before any input is read) it runs none. So a watcher
thread is woken by every signal too (`signal.set_wakeup_fd`): before the
flow has opened its inputs, a signal the handler has not taken within a
few seconds stops the process at once, with a line that says why; once it
runs, so does a second signal while the handler has taken neither (a flow
stuck in native code). Nothing was read yet in the first case, and the
second is the stop at once a second signal asks for anyway.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["on_signals", "request", "requested", "reset", "running", "started"]

log = logging.getLogger(__name__)

_STOP = threading.Event()
_STARTED = threading.Event()
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How long a signal may wait for its handler before the watcher takes over.
_UNHEARD_S = 3.0
# Signals the handler has taken since `on_signals` began.
_heard = 0
# What a stop at once leaves, as `on_signals` was told.
_at_once = "what it had not written out is lost"
# How long a stop may take before the caller's `on_slow_stop` is called.
_SLOW_STOP_S = 10.0
# Started by the first signal, cancelled when the block of `on_signals` ends.
_slow_stop: threading.Timer | None = None


def started() -> None:
    """Note that the flow runs: an input partition was opened."""
    _STARTED.set()


def running() -> bool:
    """Whether an input partition was opened since the last `reset`."""
    return _STARTED.is_set()


def requested() -> bool:
    """Whether a stop was asked for since the last `reset`."""
    return _STOP.is_set()


def request() -> None:
    """Ask the running flow to stop, as a signal would."""
    _STOP.set()


def reset() -> None:
    """Forget an earlier request and start (a new run in the same process)."""
    _STOP.clear()
    _STARTED.clear()


def _on_signal(number: int, frame: FrameType | None) -> None:
    global _heard
    _heard += 1
    if _STOP.is_set():
        # Raising here would reach Bytewax as a worker panic with a Rust
        # backtrace; what was not snapshotted is read again on a restart
        # with recovery, so nothing is gained by unwinding.
        sys.stderr.write(f"foreshock: stopped at once; {_at_once}\n")
        sys.stderr.flush()
        os._exit(128 + number)
    name = signal.Signals(number).name
    log.warning(
        "%s received: stopping once what was read is handled (and delivered, "
        "when the output is Kafka); send it again to stop at once",
        name,
    )
    _STOP.set()
    if _slow_stop is not None:
        _slow_stop.start()


@contextmanager
def on_signals(
    before_start: str = "the flow had not started",
    on_slow_stop: Callable[[], None] | None = None,
    at_once: str = "what it had not written out is lost",
) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM ask for a stop instead of raising.

    `before_start` says, should a signal go unheard before the flow opens
    its inputs, what the process was doing; `at_once`, when a second signal
    stops it at once, what becomes of its work. `on_slow_stop` is called, from
    another thread, when the block is still running `_SLOW_STOP_S` after
    the first signal. Handlers can only be set from the main thread;
    elsewhere (a flow run by a test's thread) the block changes nothing.
    """
    reset()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _heard, _slow_stop, _at_once
    _heard = 0
    _at_once = at_once
    if on_slow_stop is not None:
        _slow_stop = threading.Timer(_SLOW_STOP_S, on_slow_stop)
        _slow_stop.daemon = True
    before = {number: signal.getsignal(number) for number in _SIGNALS}
    for number in _SIGNALS:
        signal.signal(number, _on_signal)
    read, write = os.pipe()
    os.set_blocking(write, False)
    woken_before = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    watcher = threading.Thread(target=_watch, args=(read, before_start), daemon=True)
    watcher.start()
    try:
        yield
    finally:
        if _slow_stop is not None:
            _slow_stop.cancel()
            _slow_stop = None
        signal.set_wakeup_fd(woken_before)
        os.close(write)
        watcher.join(timeout=_UNHEARD_S + 1)
        for number, handler in before.items():
            signal.signal(number, handler)


def _watch(read: int, before_start: str) -> None:
    """Stop the process at once when a signal's handler does not run in
    time; ends when the write end of `read` is closed."""
    received = 0
    with os.fdopen(read, "rb", buffering=0) as wakeups:
        while numbers := wakeups.read(64):
            for number in numbers:
                if number not in _SIGNALS:
                    continue
                received += 1
                # A running flow is given its handler's time to stop
                # cleanly; a second signal it has not heard either is
                # asked to stop at once.
                if running() and received - _heard < 2:
                    continue
                deadline = time.monotonic() + _UNHEARD_S
                while _heard < received and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _heard < received:
                    _unheard(number, before_start)


def _unheard(number: int, before_start: str) -> None:
    where = "the flow did not answer it" if running() else before_start
    sys.stderr.write(
        f"foreshock: {signal.Signals(number).name} received and {where}; "
        "stopped at once\n"
    )
    sys.stderr.flush()
    os._exit(128 + number)
