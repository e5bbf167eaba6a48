"""A real Prometheus Alertmanager per test, and a webhook that records its calls.

The Alertmanager runs the example configuration in deploy/alertmanager.yml,
with two changes only: its receivers point at the test's webhook, and the
grouping waits are one second so that notifications arrive within a test.
scripts/install-test-services.sh (run by `make test`) installs the binary.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

__all__ = [
    "ALERTMANAGER",
    "EXAMPLE_CONFIG",
    "RunningAlertmanager",
    "Webhook",
    "free_port",
    "start_alertmanager",
    "wait_for",
]

ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "alertmanager.yml"
_READY_TIMEOUT_S = 30.0


def free_port() -> int:
    """A localhost port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    """Poll `check` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


@dataclass
class Webhook:
    """An HTTP server standing in for the on-call tool Alertmanager notifies."""

    server: ThreadingHTTPServer
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def notifications(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every notification so far, or those of one status (firing, resolved)."""
        return [
            body
            for _, body in list(self.received)
            if status is None or body["status"] == status
        ]


def _webhook() -> Webhook:
    hook: Webhook

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            hook.received.append((self.path, json.loads(self.rfile.read(length))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    hook = Webhook(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    threading.Thread(target=hook.server.serve_forever, daemon=True).start()
    return hook


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = _webhook()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


@dataclass
class RunningAlertmanager:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts, filtered by exact label values."""
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        response = httpx.get(f"{self.url}/api/v2/alerts", params={"filter": wanted})
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def groups(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v2/alerts/groups")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def config_for_tests(webhook_url: str) -> dict[str, Any]:
    """The example configuration, notifying `webhook_url`, with short waits."""
    config: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["route"].update(group_wait="1s", group_interval="1s")
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = webhook_url + urlsplit(hook["url"]).path
    return config


def start_alertmanager(
    workdir: Path, webhook_url: str, port: int | None = None
) -> RunningAlertmanager:
    """Start Alertmanager on localhost and wait until it says it is ready."""
    if not ALERTMANAGER.exists():
        pytest.fail(
            f"{ALERTMANAGER} is missing: run scripts/install-test-services.sh "
            "(make test does) to install Debian's prometheus-alertmanager"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "alertmanager.yml"
    config.write_text(yaml.safe_dump(config_for_tests(webhook_url)))
    port = port or free_port()
    log = workdir / "alertmanager.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(ALERTMANAGER),
                f"--config.file={config}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = RunningAlertmanager(f"http://127.0.0.1:{port}", process, log)
    _wait_ready(running)
    return running


def _wait_ready(am: RunningAlertmanager) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if am.process.poll() is not None:
            pytest.fail(f"Alertmanager exited at start:\n{am.log.read_text()}")
        try:
            if httpx.get(f"{am.url}/-/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    am.stop()
    pytest.fail(f"Alertmanager not ready in time:\n{am.log.read_text()}")


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: Webhook) -> Iterator[RunningAlertmanager]:
    am = start_alertmanager(tmp_path / "alertmanager", webhook.url)
    yield am
    am.stop()
