"""A real OpenTelemetry Collector process, for interoperability tests.

The binary is the one `scripts/otelcol.sh build` makes from
`deploy/otelcol-builder.yaml`; it runs with `deploy/otelcol-foreshock.yaml`,
the configuration the README documents, with its ports, broker, topics and
encoding set through the environment variables that configuration reads.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "CONFIG",
    "Collector",
    "CollectorError",
    "Encoding",
    "collector_binary",
    "running_collector",
]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "otelcol.sh"
CONFIG = REPO / "deploy" / "otelcol-foreshock.yaml"

Encoding = Literal["otlp_proto", "otlp_json"]

_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 20.0
_LOG_TAIL_CHARS = 4000


class CollectorError(RuntimeError):
    """The Collector is not built, did not start, or did not stop."""


@dataclass(frozen=True, slots=True)
class Collector:
    """Where a running Collector listens and where it writes."""

    grpc_endpoint: str  # host:port, as the OTLP gRPC exporter takes it
    http_endpoint: str  # http://host:port, without the signal's path
    metrics_topic: str
    spans_topic: str
    encoding: Encoding


def collector_binary() -> Path:
    """The built Collector, or an error that says how to build it."""
    found = subprocess.run(
        [str(SCRIPT), "path"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        raise CollectorError(
            f"{found.stderr.strip()}\nBuild it with `make otelcol` (a cold build "
            "takes several minutes and needs the Go module proxy)."
        )
    return Path(found.stdout.strip())


@contextmanager
def running_collector(
    binary: Path,
    bootstrap: str,
    topics: tuple[str, str],
    encoding: Encoding,
    log_path: Path,
) -> Iterator[Collector]:
    """Run the Collector until the block ends, writing its log to `log_path`."""
    grpc_port, http_port = _free_port(), _free_port()
    collector = Collector(
        f"127.0.0.1:{grpc_port}",
        f"http://127.0.0.1:{http_port}",
        topics[0],
        topics[1],
        encoding,
    )
    env = {
        **os.environ,
        "OTLP_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
        "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{http_port}",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "OTLP_METRICS_TOPIC": collector.metrics_topic,
        "OTLP_SPANS_TOPIC": collector.spans_topic,
        "OTLP_ENCODING": encoding,
    }
    command = [str(binary), "--config", f"file:{CONFIG}"]

    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_listening(process, (grpc_port, http_port), log_path)
            yield collector
        finally:
            _stop(process, log_path)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(
    process: subprocess.Popen[bytes], ports: tuple[int, ...], log_path: Path
) -> None:
    # The Collector starts its exporters before its receivers, so once the
    # receiver's ports answer, the whole pipeline is up.
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while not all(_answers(port) for port in ports):
        if process.poll() is not None:
            raise CollectorError(
                f"the Collector exited with {process.returncode} at start-up:\n"
                f"{_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise CollectorError(
                f"the Collector did not listen on {ports} within "
                f"{_READY_TIMEOUT_S} s:\n{_tail(log_path)}"
            )
        time.sleep(0.1)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes], log_path: Path) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise CollectorError(
            f"the Collector ignored SIGTERM for {_STOP_TIMEOUT_S} s:\n{_tail(log_path)}"
        ) from None


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
