"""A real single-node Apache Kafka broker for tests and local runs.

`fetch` brings the broker's jars from Maven Central into a cache outside the
repository, once. `LocalKafka` formats KRaft storage in a temporary folder,
starts one JVM that is both broker and controller on free loopback ports,
waits until it answers, and on stop shuts it down and removes the folder.

Command line: `python -m foreshock.broker fetch` fills the cache;
`python -m foreshock.broker run` starts a broker, prints
`KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:PORT` and runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

__all__ = [
    "KAFKA_VERSION",
    "BrokerError",
    "LocalKafka",
    "cache_dir",
    "fetch",
    "main",
]

_LOG = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
# The log4j version that kafka-server 4.4.0 itself depends on.
_LOG4J_VERSION = "2.25.5"
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_COMPLETE_MARK = "complete"
_MVN_TIMEOUT_S = 900.0
_FORMAT_TIMEOUT_S = 120.0
_LOG_TAIL_LINES = 40

_POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.foreshock</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <!-- Kafka logs through SLF4J 1.7 and brings log4j-core, but no binding
         between the two: without this jar the broker logs nothing. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J_CONFIG = """\
status = warn
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = console
"""


class BrokerError(RuntimeError):
    """The local Kafka broker could not be fetched, started or reached."""


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of one Kafka version are kept, outside the repository."""
    root = os.environ.get("FORESHOCK_CACHE") or Path.home() / ".cache" / "foreshock"
    return Path(root) / "kafka" / version


def fetch(version: str = KAFKA_VERSION) -> Path:
    """Return the folder of Kafka's jars, downloading them with Maven once.

    A complete cache is used as it is, without Maven and without network.
    """
    home = cache_dir(version)
    if _is_complete(home):
        return home / "libs"

    home.mkdir(parents=True, exist_ok=True)
    with _exclusive(home / ".lock"):
        # Another process may have filled the cache while this one waited.
        if not _is_complete(home):
            _download(home, version)
    return home / "libs"


def _is_complete(home: Path) -> bool:
    return (home / _COMPLETE_MARK).is_file() and (home / "libs").is_dir()


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _download(home: Path, version: str) -> None:
    mvn = _require("mvn", "install Maven 3.8 or later")
    pom = home / "pom.xml"
    pom.write_text(_POM.format(kafka=version, log4j=_LOG4J_VERSION))
    staging = home / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(home / "libs", ignore_errors=True)

    _LOG.info("fetching kafka version=%s into=%s", version, home)
    command = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        f"{_DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    _run_checked(command, _MVN_TIMEOUT_S, f"Maven could not fetch Kafka {version}")

    staging.rename(home / "libs")
    jars = sorted(path.name for path in (home / "libs").glob("*.jar"))
    (home / _COMPLETE_MARK).write_text("\n".join(jars) + "\n")
    _LOG.info("fetched kafka version=%s jars=%s", version, len(jars))


def _require(program: str, advice: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise BrokerError(f"{program!r} is not on PATH; {advice}")
    return found


def _run_checked(command: Sequence[str], timeout_s: float, failure: str) -> None:
    try:
        done = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BrokerError(f"{failure}: no answer within {timeout_s:.0f} s") from error

    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-_LOG_TAIL_LINES:])
        raise BrokerError(f"{failure} (exit code {done.returncode}):\n{tail}")


class LocalKafka:
    """One Kafka broker and KRaft controller in one JVM, on loopback ports.

    Each start gets a fresh temporary folder with its own storage, cluster id
    and log, so brokers never share state. Use it as a context manager, or
    call `start` and `stop`; `stop` is safe to call more than once.
    """

    def __init__(
        self,
        *,
        version: str = KAFKA_VERSION,
        max_heap: str = "512m",
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 20.0,
    ) -> None:
        self._version = version
        self._max_heap = max_heap
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._workdir: Path | None = None
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._command: list[str] = []
        self._bootstrap: str | None = None

    @property
    def bootstrap_servers(self) -> str:
        """`host:port` of the broker's PLAINTEXT listener."""
        if self._bootstrap is None:
            raise BrokerError("the local Kafka broker is not started; call start()")
        return self._bootstrap

    @property
    def log_path(self) -> Path | None:
        """The broker's log file while it is started, else None."""
        return None if self._workdir is None else self._workdir / "broker.log"

    @property
    def running(self) -> bool:
        """Whether the broker's JVM is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Fetch Kafka if needed, start the broker and wait until it answers."""
        if self._process is not None:
            raise BrokerError("the local Kafka broker is already started")

        started = time.monotonic()
        libs = fetch(self._version)
        java = _require("java", "install a Java 17 or later runtime")
        self._workdir = Path(tempfile.mkdtemp(prefix="foreshock-kafka-"))
        try:
            process, bootstrap = self._launch(java, libs, self._workdir)
            self._wait_until_ready(process, bootstrap)
        except BaseException:
            self.stop()
            raise

        _LOG.info(
            "kafka broker started bootstrap=%s seconds=%.1f log=%s",
            self._bootstrap,
            time.monotonic() - started,
            self.log_path,
        )

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and remove its folder."""
        if self._process is not None:
            _terminate(self._process, self._stop_timeout_s)
            _LOG.info("kafka broker stopped bootstrap=%s", self._bootstrap)
        if self._log is not None:
            self._log.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._process = None
        self._log = None
        self._workdir = None
        self._bootstrap = None

    def restart(self, downtime_s: float = 0.0) -> None:
        """Stop the broker's JVM, wait `downtime_s`, start it again.

        The broker comes back on the same ports with the same data, as a
        real broker does after a restart, so that clients can be tested for
        riding one out. Returns once it answers again.
        """
        if self._process is None or self._log is None:
            raise BrokerError("the local Kafka broker is not started; call start()")

        _terminate(self._process, self._stop_timeout_s)
        _LOG.info("kafka broker stopped for a restart bootstrap=%s", self._bootstrap)
        time.sleep(downtime_s)
        self._process = subprocess.Popen(
            self._command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_until_ready(self._process, self.bootstrap_servers)
        _LOG.info("kafka broker restarted bootstrap=%s", self._bootstrap)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the broker's log, or "" when there is none."""
        return "" if self.log_path is None else _tail(self.log_path, lines)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(
        self, java: str, libs: Path, workdir: Path
    ) -> tuple[subprocess.Popen[bytes], str]:
        port, controller_port = _free_ports(2)
        properties = workdir / "server.properties"
        properties.write_text(_server_properties(workdir, port, controller_port))
        (workdir / "log4j2.properties").write_text(_LOG4J_CONFIG)
        _format_storage(java, libs, workdir, properties)

        self._command = [
            java,
            f"-Xmx{self._max_heap}",
            *_jvm_options(libs, workdir),
            "kafka.Kafka",
            str(properties),
        ]
        self._log = (workdir / "broker.log").open("wb")
        # A session of its own keeps a terminal's Ctrl-C from killing the
        # broker before stop() can shut it down in order.
        self._process = subprocess.Popen(
            self._command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._bootstrap = f"127.0.0.1:{port}"
        return self._process, self._bootstrap

    def _wait_until_ready(
        self, process: subprocess.Popen[bytes], bootstrap: str
    ) -> None:
        deadline = time.monotonic() + self._start_timeout_s
        while not _answers(bootstrap):
            code = process.poll()
            if code is not None:
                raise BrokerError(
                    f"the Kafka broker exited with code {code} during start; "
                    f"its log ends with:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the Kafka broker did not answer on {bootstrap} "
                    f"within {self._start_timeout_s:.0f} s; "
                    f"its log ends with:\n{self.log_tail()}"
                )
            time.sleep(0.2)


def _server_properties(workdir: Path, port: int, controller_port: int) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "log.dirs": str(workdir / "data"),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Records keep their event times (replays of recorded data, tests of
        # 2025): with the default 7-day retention the broker would delete
        # them at its next check, while they are still to be read.
        "log.retention.ms": "-1",
    }
    return "".join(f"{name}={value}\n" for name, value in settings.items())


def _jvm_options(libs: Path, workdir: Path) -> list[str]:
    return [
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={workdir / 'log4j2.properties'}",
        "-cp",
        f"{libs}/*",
    ]


def _format_storage(java: str, libs: Path, workdir: Path, properties: Path) -> None:
    # What `kafka-storage.sh format --standalone` does: a new cluster whose
    # only voter is this node.
    command = [
        java,
        "-Xmx256m",
        # A short-lived tool: the quick compiler alone halves its start time.
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        *_jvm_options(libs, workdir),
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        "--cluster-id",
        _random_cluster_id(),
        "--config",
        str(properties),
    ]
    _run_checked(command, _FORMAT_TIMEOUT_S, "could not format KRaft storage")


def _random_cluster_id() -> str:
    # Kafka ids are 16 random bytes in unpadded URL-safe base64; Kafka's own
    # generator never hands out one that starts with "-", so neither do we.
    while True:
        encoded = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()
        cluster_id = encoded.rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _free_ports(count: int) -> list[int]:
    # All sockets stay open until every port is known, so the ports differ.
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _answers(bootstrap: str) -> bool:
    # A plain TCP probe first: it keeps librdkafka from logging a refused
    # connection every few milliseconds while the JVM starts.
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            pass
    except OSError:
        return False

    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2.0)
    except KafkaException:
        return False
    return True


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _LOG.warning(
            "kafka broker still running %.0f s after SIGTERM; killing pid=%s",
            timeout_s,
            process.pid,
        )
        process.kill()
        process.wait()


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as log:
            return "".join(deque(log, maxlen=lines))
    except FileNotFoundError:
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m foreshock.broker`."""
    parser = argparse.ArgumentParser(
        prog="python -m foreshock.broker",
        description="Fetch or run a local single-node Apache Kafka broker.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help="download Kafka's jars into the cache")
    commands.add_parser("run", help="run a broker until SIGINT or SIGTERM")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        if args.command == "fetch":
            print(fetch())
            return 0
        return _run_until_signalled()
    except BrokerError as error:
        _LOG.error("%s", error)
        return 1


def _run_until_signalled() -> int:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with LocalKafka() as kafka:
        print(f"KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}", flush=True)
        while not stop.wait(1.0):
            if not kafka.running:
                _LOG.error(
                    "kafka broker exited; its log ends with:\n%s", kafka.log_tail()
                )
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
