"""The `foreshock` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException
from pydantic import ValidationError

from foreshock.errors import UserError
from foreshock.layers import Layer

if TYPE_CHECKING:
    from foreshock.feedback import TargetKind

__all__ = ["main"]

log = logging.getLogger("foreshock")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and getattr(args, "run", None) not in _OWN_OPTIONS:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    # Warnings are what a person must see: input refused or late, a broker
    # away (summed up, see connectors.kafka), a signal received.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # librdkafka retries a broker it cannot reach, logging each attempt:
        # without -v only Foreshock's own lines about it are shown.
        logging.getLogger("foreshock.kafka.client").setLevel(logging.CRITICAL)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        result: int = args.run(args)
    except _USER_ERRORS as error:
        # Mistakes in what was asked (a setting, a path, an unreachable
        # broker) get one line; `-v` shows the whole traceback.
        if args.verbose:
            raise
        print(f"foreshock: {_said(error, args)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`| head`): what is left goes nowhere, so
        # that Python's own flush at exit does not trip over the pipe too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:
        # Bytewax wraps a Ctrl-C that reaches a step in an error of its own.
        if not _interrupted(error):
            raise
        print("foreshock: interrupted", file=sys.stderr)
        return _INTERRUPTED
    except KeyboardInterrupt as stop:
        # An interruption may say how far the command got (a replay does).
        print(f"foreshock: {str(stop) or 'interrupted'}", file=sys.stderr)
        return _INTERRUPTED
    return result


# What a shell reports for a process ended by SIGINT (128 + 2).
_INTERRUPTED = 130


def _interrupted(error: BaseException) -> bool:
    """Whether a Ctrl-C is what ended this error's chain of causes."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _said(error: BaseException, args: argparse.Namespace) -> str:
    """The one line that tells the person what went wrong and what to check."""
    if isinstance(error, ValidationError):
        return _invalid(error)
    if isinstance(error, tomllib.TOMLDecodeError):
        # tomllib names the line and column but not the file.
        config = getattr(args, "config", None) or "the configuration"
        return f"{config} is not valid TOML: {error}"
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"no such file: {error.filename}"
    if isinstance(error, KafkaException):
        return _kafka_said(error, args)
    return str(error)


def _invalid(error: ValidationError) -> str:
    if error.title == "Settings":
        from foreshock.config import unknown_setting

        problems = "; ".join(
            unknown_setting(e["loc"])
            if e["type"] == "extra_forbidden"
            else f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in error.errors()
        )
        return f"invalid settings: {problems}"
    # A record built from the command's options (a silence, a verdict):
    # its validators speak to the person, so their words are kept as said.
    said = []
    for e in error.errors():
        words = e["msg"].removeprefix("Value error, ")
        where = ".".join(map(str, e["loc"]))
        said.append(f"{where}: {words}" if where else words)
    return "; ".join(said)


# librdkafka's answers when it could not talk to any broker: none is up at
# the address, or the client's security settings are not the listener's.
_UNREACHABLE = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
    }
)


def _kafka_said(error: KafkaException, args: argparse.Namespace) -> str:
    """Kafka's own words, and for an unreachable broker where it was sought.

    The address is the one the command used: its settings, which loaded
    without error before Kafka was asked, read again. Only the address is
    said; the client's settings may hold passwords.
    """
    reason = error.args[0] if error.args else None
    if not isinstance(reason, KafkaError):
        return f"Kafka: {error}"
    said = f"Kafka: {reason.str()}"
    if reason.code() not in _UNREACHABLE or not hasattr(args, "config"):
        return said

    from foreshock.config import load_settings

    bootstrap = load_settings(args.config).kafka.bootstrap_servers
    origin = (
        "KAFKA_BOOTSTRAP_SERVERS"
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        else "kafka.bootstrap_servers"
    )
    return (
        f"{said} (bootstrap servers {bootstrap!r}, from {origin}); check that "
        "the broker is up at that address, and that kafka.client's "
        "security.protocol and sasl.* settings match the broker's listener"
    )


_USER_ERRORS = (
    ValidationError,
    FileNotFoundError,
    KafkaException,
    ValueError,
    UserError,
)


def _verbose_after_command() -> argparse.ArgumentParser:
    """`-v` for each command, so that it works after the command too,
    without overriding one given before it."""
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logs",
    )
    return verbose


_VERBOSE = _verbose_after_command()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foreshock",
        description="Early warning for digital customer experience.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    commands = parser.add_subparsers(title="commands")

    demo = commands.add_parser(
        "demo",
        parents=[_VERBOSE],
        help="run the main flow on a simulated stack, no broker needed",
    )
    demo.add_argument(
        "--seed", type=int, default=7, help="another seed, another run's noise"
    )
    demo.add_argument(
        "--hours",
        type=float,
        default=None,
        help="hours to simulate (default: long enough for all three failures; "
        "fewer hours inject only the failures that fit)",
    )
    demo.add_argument(
        "--format",
        choices=["human", "native", "cloudevents"],
        default="human",
        help="human: incidents and warnings as text; otherwise every message "
        "as it would be written, one per line, `topic<TAB>value`",
    )
    demo.add_argument(
        "--reports",
        type=Path,
        default=None,
        metavar="DIR",
        help="write an HTML report of each incident into DIR",
    )
    demo.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a TOML file whose detection and correlation settings the demo uses",
    )
    demo.set_defaults(run=_demo)

    run = commands.add_parser(
        "run", parents=[_VERBOSE], help="consume telemetry from Kafka, publish results"
    )
    run.add_argument("--config", type=Path, default=None, help="a TOML file")
    run.add_argument(
        "--until-end",
        action="store_true",
        help="stop once the input topics are read to their current end",
    )
    run.set_defaults(run=_run)

    replay = commands.add_parser(
        "replay",
        parents=[_VERBOSE],
        help="publish a dataset to Kafka in event-time order",
    )
    replay.add_argument(
        "--dataset",
        choices=["nezha"],
        default="nezha",
        help="the dataset's format (default: nezha)",
    )
    replay.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the dataset's folder (for Nezha, the one holding rca_data/)",
    )
    replay.add_argument(
        "--day", default=None, help="only this day, e.g. 2022-08-23 (default: all)"
    )
    replay.add_argument("--topic", default=None, help="default: the first input topic")
    replay.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions of the topic if replay makes it, at least as many as "
        "the processes that will read it (default: the broker's default)",
    )
    replay.add_argument(
        "--speedup", type=float, default=0.0, help="0: as fast as possible"
    )
    replay.add_argument(
        "--config", type=Path, default=None, help="a TOML file (broker, topics)"
    )
    replay.set_defaults(run=_replay)

    decode = commands.add_parser(
        "decode",
        parents=[_VERBOSE],
        help="print what Foreshock takes from each message of a file, as JSON lines",
    )
    decode.add_argument(
        "--format",
        default="native",
        help="native, otlp_proto, otlp_json or rum (default: native)",
    )
    decode.add_argument(
        "--base64",
        action="store_true",
        help="lines are base64 (implied for otlp_proto)",
    )
    decode.add_argument(
        "--signal",
        choices=["metrics", "traces"],
        default=None,
        help="the OTLP signal the messages carry (needed for otlp_proto)",
    )
    decode.add_argument(
        "--config", type=Path, default=None, help="a TOML file (RUM mapping, window)"
    )
    decode.add_argument("file", help="one message per line; - reads standard input")
    decode.set_defaults(run=_decode)

    schema = commands.add_parser(
        "schema", parents=[_VERBOSE], help="print or write the JSON Schemas"
    )
    schema.add_argument("--write", type=Path, default=None, help="a folder")
    schema.set_defaults(run=_schema)

    topology = commands.add_parser(
        "topology",
        parents=[_VERBOSE],
        help="show the call graph in use: layers, calls, what users depend on",
    )
    topology.add_argument("--config", type=Path, default=None, help="a TOML file")
    topology.add_argument(
        "--dataset",
        choices=["nezha", "petshop"],
        default=None,
        help="show this dataset's call graph instead (needs --data)",
    )
    topology.add_argument("--data", type=Path, default=None, help="dataset folder")
    only = topology.add_mutually_exclusive_group()
    only.add_argument("--day", dest="subset", help="Nezha: the day (default: first)")
    only.add_argument(
        "--scenario", dest="subset", help="PetShop: the scenario (default: first)"
    )
    topology.add_argument(
        "--format",
        choices=["text", "json", "dot"],
        default="text",
        help="text for people, json for tools (a topology file), dot for "
        "Graphviz (default: text)",
    )
    topology.set_defaults(run=_topology)

    _add_oncall(commands)

    measures = "detection and root-cause quality, speed and memory"
    bench = commands.add_parser(
        "bench",
        parents=[_VERBOSE],
        help=f"benchmarks: {measures}",
        description=f"Benchmarks of Foreshock's {measures}.",
    ).add_subparsers(title="benchmarks")
    # Each benchmark parses its own options (`foreshock bench nab --help`),
    # so its module stays runnable on its own with the same flags.
    nab = bench.add_parser("nab", help="Numenta Anomaly Benchmark", add_help=False)
    nab.set_defaults(run=_bench_nab)
    rca = bench.add_parser(
        "rca", help="root-cause analysis on labelled faults", add_help=False
    )
    rca.set_defaults(run=_bench_rca)
    throughput = bench.add_parser(
        "throughput",
        help="events per second of the Kafka flow against a bare consumer",
        add_help=False,
    )
    throughput.set_defaults(run=_bench_throughput)
    series = bench.add_parser(
        "series", help="memory and scoring time of many live series", add_help=False
    )
    series.set_defaults(run=_bench_series)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from foreshock.demo import run_demo

    return run_demo(
        seed=args.seed,
        hours=args.hours,
        output=args.format,
        reports=args.reports,
        config=args.config,
    )


def _run(args: argparse.Namespace) -> int:
    from foreshock.jobs import run_kafka_job

    return run_kafka_job(args.config, until_end=args.until_end)


def _replay(args: argparse.Namespace) -> int:
    from foreshock.jobs import replay_dataset

    return replay_dataset(
        args.dataset,
        args.data,
        args.day,
        args.topic,
        args.speedup,
        args.config,
        args.partitions,
    )


def _decode(args: argparse.Namespace) -> int:
    from foreshock.inspection import decode_file

    return decode_file(
        args.file,
        args.format,
        config=args.config,
        base64_lines=args.base64,
        signal=args.signal,
    )


def _add_oncall(commands: Any) -> None:
    """What on-call engineers run: incidents, feedback and silences."""
    incidents = commands.add_parser(
        "incidents",
        parents=[_VERBOSE],
        help="list open and recent incidents from Kafka",
    )
    incidents.add_argument("--config", type=Path, default=None, help="a TOML file")
    incidents.add_argument("--open", action="store_true", help="only open incidents")
    incidents.add_argument(
        "--since",
        default="24h",
        help="resolved incidents since: a duration (2h, 7d) or an ISO time",
    )
    incidents.set_defaults(run=_incidents)

    feedback = commands.add_parser(
        "feedback",
        parents=[_VERBOSE],
        help="say what an anomaly, incident or early warning was",
    )
    target = feedback.add_mutually_exclusive_group(required=True)
    target.add_argument("--incident", metavar="ID", help="judge this incident")
    target.add_argument("--anomaly", metavar="ID", help="judge this anomaly")
    target.add_argument(
        "--early-warning", metavar="ID", help="judge this early warning"
    )
    feedback.add_argument(
        "--verdict",
        required=True,
        choices=["not_anomaly", "expected", "confirmed"],
        help="not_anomaly: the detector was wrong; expected: right, but nothing "
        "to act on; confirmed: a real problem",
    )
    feedback.add_argument(
        "--for",
        dest="lasting",
        default="24h",
        help="how long not_anomaly or expected holds (default 24h)",
    )
    _scope_arguments(feedback, required=False)
    feedback.add_argument("--comment", default="", help="why, for the record")
    feedback.set_defaults(run=_feedback)

    silence = commands.add_parser(
        "silence",
        parents=[_VERBOSE],
        help="keep a service (or a layer or KPI of it) from alerting",
    )
    _scope_arguments(silence, required=True)
    silence.add_argument(
        "--until", required=True, help="an ISO time, or a duration from now (2h)"
    )
    silence.add_argument("--from", dest="start", default=None, help="default: now")
    silence.add_argument(
        "--reason", required=True, help="why, shown with what it suppresses"
    )
    silence.set_defaults(run=_silence)


def _scope_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--service", required=required, help="the scope's service")
    parser.add_argument(
        "--layer",
        choices=[layer.value for layer in Layer],
        help="only the service's series of this layer",
    )
    parser.add_argument("--kpi", default=None, help="only this KPI of the service")
    parser.add_argument("--author", default=None, help="default: the login name")
    parser.add_argument("--config", type=Path, default=None, help="a TOML file")


def _incidents(args: argparse.Namespace) -> int:
    from foreshock.config import load_settings
    from foreshock.incidents_cli import show

    return show(load_settings(args.config), args.since, args.open)


def _feedback(args: argparse.Namespace) -> int:
    from foreshock.config import load_settings
    from foreshock.feedback_cli import feedback_command

    kinds: tuple[TargetKind, ...] = ("incident", "anomaly", "early_warning")
    kind, target = next(
        (kind, value) for kind in kinds if (value := getattr(args, kind)) is not None
    )
    return feedback_command(
        load_settings(args.config),
        kind,
        target,
        args.verdict,
        args.lasting,
        (args.service, args.layer, args.kpi),
        args.author,
        args.comment,
    )


def _silence(args: argparse.Namespace) -> int:
    from foreshock.config import load_settings
    from foreshock.feedback_cli import silence_command

    return silence_command(
        load_settings(args.config),
        (args.service, args.layer, args.kpi),
        args.until,
        args.reason,
        args.start,
        args.author,
    )


def _schema(args: argparse.Namespace) -> int:
    from foreshock.schemas import all_schemas, write_schemas

    if args.write is not None:
        for path in write_schemas(args.write):
            print(path)
        return 0
    print(json.dumps(all_schemas(), indent=2, sort_keys=True))
    return 0


def _topology(args: argparse.Namespace) -> int:
    from foreshock.topology_cli import show

    return show(args.config, args.dataset, args.data, args.subset, args.format)


def _bench_nab(args: argparse.Namespace) -> int:
    from foreshock.benchmarks import nab

    return nab.main(args.rest, prog="foreshock bench nab")


def _bench_rca(args: argparse.Namespace) -> int:
    from foreshock.benchmarks import rca

    return rca.main(args.rest, prog="foreshock bench rca")


def _bench_throughput(args: argparse.Namespace) -> int:
    from foreshock.benchmarks import throughput

    return throughput.main(args.rest, prog="foreshock bench throughput")


def _bench_series(args: argparse.Namespace) -> int:
    from foreshock.benchmarks import series

    return series.main(args.rest, prog="foreshock bench series")


# Commands that parse their own options from what argparse left over.
_OWN_OPTIONS = (_bench_nab, _bench_rca, _bench_throughput, _bench_series)


if __name__ == "__main__":
    sys.exit(main())
