#!/usr/bin/env bash
# Fetch or run the local Apache Kafka broker: scripts/kafka.sh fetch|run
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${repo}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${repo}/.venv/bin/python" -m foreshock.broker "$@"
