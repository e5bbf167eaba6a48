"""The `foreshock` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("foreshock")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    result: int = args.run(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foreshock",
        description="Early warning for digital customer experience.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    commands = parser.add_subparsers(title="commands")

    demo = commands.add_parser(
        "demo", help="run the main flow on a simulated stack, no broker needed"
    )
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--hours", type=float, default=None)
    demo.set_defaults(run=_demo)

    run = commands.add_parser(
        "run", help="consume telemetry from Kafka, publish results"
    )
    run.add_argument("--config", type=Path, default=None, help="a TOML file")
    run.add_argument(
        "--until-end",
        action="store_true",
        help="stop once the input topics are read to their current end",
    )
    run.set_defaults(run=_run)

    replay = commands.add_parser(
        "replay", help="publish a dataset to Kafka in event-time order"
    )
    replay.add_argument("--dataset", choices=["nezha"], default="nezha")
    replay.add_argument("--data", type=Path, required=True)
    replay.add_argument("--day", default=None)
    replay.add_argument("--topic", default=None, help="default: the first input topic")
    replay.add_argument(
        "--speedup", type=float, default=0.0, help="0: as fast as possible"
    )
    replay.add_argument("--config", type=Path, default=None)
    replay.set_defaults(run=_replay)

    schema = commands.add_parser("schema", help="print or write the JSON Schemas")
    schema.add_argument("--write", type=Path, default=None, help="a folder")
    schema.set_defaults(run=_schema)

    bench = commands.add_parser("bench", help="quality benchmarks").add_subparsers(
        title="benchmarks"
    )
    nab = bench.add_parser("nab", help="Numenta Anomaly Benchmark")
    nab.add_argument("--data", type=Path, required=True)
    nab.add_argument("--output", type=Path, required=True)
    nab.add_argument("--detector", default=None)
    nab.add_argument("--json", action="store_true")
    nab.set_defaults(run=_bench_nab)
    rca = bench.add_parser("rca", help="root-cause analysis on labelled faults")
    rca.add_argument("--dataset", choices=["nezha"], required=True)
    rca.add_argument("--data", type=Path, required=True)
    rca.add_argument("--day", default=None)
    rca.add_argument("--json", action="store_true")
    rca.set_defaults(run=_bench_rca)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from foreshock.demo import run_demo

    return run_demo(seed=args.seed, hours=args.hours)


def _run(args: argparse.Namespace) -> int:
    from foreshock.jobs import run_kafka_job

    return run_kafka_job(args.config, until_end=args.until_end)


def _replay(args: argparse.Namespace) -> int:
    from foreshock.jobs import replay_dataset

    return replay_dataset(
        args.dataset, args.data, args.day, args.topic, args.speedup, args.config
    )


def _schema(args: argparse.Namespace) -> int:
    from foreshock.schemas import all_schemas, write_schemas

    if args.write is not None:
        for path in write_schemas(args.write):
            print(path)
        return 0
    print(json.dumps(all_schemas(), indent=2, sort_keys=True))
    return 0


def _bench_nab(args: argparse.Namespace) -> int:
    from foreshock.benchmarks.nab import run_nab

    result = run_nab(args.data, args.output, args.detector)
    print(json.dumps(result) if args.json else _table(result))
    return 0


def _bench_rca(args: argparse.Namespace) -> int:
    from foreshock.benchmarks.rca import run_rca

    started = time.perf_counter()
    result = run_rca(args.dataset, args.data, args.day)
    result.setdefault("seconds", round(time.perf_counter() - started, 1))
    print(json.dumps(result) if args.json else _table(result))
    return 0


def _table(result: Mapping[str, object]) -> str:
    return "\n".join(f"{k:>24}  {v}" for k, v in result.items())


if __name__ == "__main__":
    sys.exit(main())
