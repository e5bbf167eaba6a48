"""Events per second of `foreshock run` on one process and on several.

Fills a topic of `--partitions` partitions with realistic native events
(`foreshock.benchmarks.traffic`, keyed by service), then runs `foreshock run
--until-end` over it once per process count in `--processes` (one worker
each), then once per worker count in `--workers` on one process (Bytewax's
`-w`: threads of one process that share its interpreter), each time from the
topic's start, and times the run from launch to the last process's exit.
The job is the real one: it decodes, windows, scores, correlates and
produces every record to Kafka. Start-up (imports, partition assignment,
about 2-3 s) is inside the time, so short inputs understate the rate.

Usage: `python -m foreshock.benchmarks.scale_out --events 1000000`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from foreshock.benchmarks.throughput import machine
from foreshock.broker import LocalKafka

__all__ = ["main", "run_processes"]

_OUTPUTS = (
    "kpis",
    "anomalies",
    "incidents",
    "early_warnings",
    "data_quality",
    "dead_letters",
    "late_events",
)
_TIMEOUT_S = 1800.0


def run_processes(
    bootstrap: str,
    topic: str,
    outputs: dict[str, str],
    processes: int,
    workdir: Path,
    workers: int = 1,
) -> float:
    """Seconds `processes` processes of `foreshock run`, of `workers` workers
    each, take to read `topic`."""
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(processes)]
    config = workdir / f"run-{processes}x{workers}.toml"
    sections: dict[str, dict[str, Any]] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "input_topics": [topic],
            # A new group each time: every run reads the topic from its start.
            "group_id": f"scale-out-{uuid.uuid4().hex[:8]}",
        },
        "topics": outputs,
        "metrics": {"enabled": False},
        # The traffic's times are of 2025: judged as live, not as a backlog.
        "window": {"backfill_after_s": 0},
    }
    sections["cluster"] = {"workers_per_process": workers}
    if processes > 1:
        sections["cluster"]["addresses"] = addresses
    config.write_text(
        "".join(
            f"[{name}]\n"
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
            for name, values in sections.items()
        )
    )
    command = [sys.executable, "-m", "foreshock.cli", "run", "--until-end"]
    started = time.perf_counter()
    running = [
        subprocess.Popen(
            [*command, "--config", str(config)],
            env={**os.environ, "FORESHOCK_CLUSTER__PROCESS_ID": str(i)},
        )
        for i in range(processes)
    ]
    codes = [p.wait(timeout=_TIMEOUT_S) for p in running]
    if any(codes):
        raise RuntimeError(f"foreshock run exited with {codes}")
    return time.perf_counter() - started


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _create(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    made = admin.create_topics(
        [NewTopic(n, partitions, replication_factor=1) for n in names]
    )
    for future in made.values():
        future.result(timeout=30)


def _fill(bootstrap: str, topic: str, events: int, span_s: float) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "foreshock.benchmarks.traffic",
            f"--bootstrap={bootstrap}",
            f"--topic={topic}",
            f"--events={events}",
            f"--span-s={span_s}",
        ],
        check=True,
        capture_output=True,
    )


@contextmanager
def _broker() -> Iterator[str]:
    named = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if named:
        yield named
        return
    with LocalKafka(max_heap="1g") as broker:
        yield broker.bootstrap_servers


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: fill a topic, run the job on each layout, print rates."""
    parser = argparse.ArgumentParser(prog="python -m foreshock.benchmarks.scale_out")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--span-s", type=float, default=300.0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers", type=int, nargs="*", default=[2])
    args = parser.parse_args(argv)

    run = uuid.uuid4().hex[:8]
    topic = f"scale-out-{run}-in"
    outputs = {kind: f"scale-out-{run}-{kind}" for kind in _OUTPUTS}
    results: dict[str, Any] = {"events": args.events, "partitions": args.partitions}
    with _broker() as bootstrap, tempfile.TemporaryDirectory() as workdir:
        _create(bootstrap, [topic], args.partitions)
        _create(bootstrap, list(outputs.values()), args.partitions)
        _fill(bootstrap, topic, args.events, args.span_s)
        for processes in args.processes:
            seconds = run_processes(bootstrap, topic, outputs, processes, Path(workdir))
            results[f"processes_{processes}"] = {
                "seconds": round(seconds, 1),
                "events_per_s": round(args.events / seconds),
            }
        for workers in args.workers:
            seconds = run_processes(
                bootstrap, topic, outputs, 1, Path(workdir), workers=workers
            )
            results[f"workers_{workers}"] = {
                "seconds": round(seconds, 1),
                "events_per_s": round(args.events / seconds),
            }
    results["machine"] = machine()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
