# Every task of the project; `make help` lists them.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast test-services test-collector lint format \
	schemas kafka kafka-fetch otelcol \
	bench-nab bench-rca bench-rum bench-throughput bench-series

help: ## list every task
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-17s %s\n", $$1, $$2}' \
		$(MAKEFILE_LIST)

$(BIN)/foreshock: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

# The native scanner (Rust): the flows take native JSON several times faster
# with it, and give the same results without it.
NATIVE := $(VENV)/.native-installed
$(NATIVE): $(BIN)/foreshock native/Cargo.toml native/pyproject.toml 		native/foreshock_native.pyi $(wildcard native/src/*.rs)
	@command -v cargo >/dev/null || { echo "the native scanner needs Rust's cargo" \
		"on PATH (https://rustup.rs)" >&2; exit 1; }
	$(BIN)/pip install --quiet ./native
	@touch $@

install: $(BIN)/foreshock $(NATIVE) ## create .venv and install Foreshock, its native scanner and dev tools

demo: install ## run the main flow on a simulated stack (no broker needed)
	$(BIN)/foreshock demo

kafka-fetch: install ## fetch the pinned Apache Kafka into the cache (once)
	$(BIN)/python -m foreshock.broker fetch

test-services: ## install the programs the suite runs (Alertmanager, Chromium)
	bash scripts/install-test-services.sh

otelcol: ## build the pinned OpenTelemetry Collector into the cache (once)
	bash scripts/otelcol.sh build

test: install kafka-fetch test-services otelcol ## run the whole test suite, starting a Kafka broker
	$(BIN)/python -m pytest

test-collector: install kafka-fetch otelcol ## only the tests through the real OpenTelemetry Collector
	$(BIN)/python -m pytest -m collector

test-fast: install ## run the tests that need no broker
	$(BIN)/python -m pytest -m "not kafka"

lint: install ## ruff and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schemas: install ## regenerate the JSON Schemas in schemas/
	$(BIN)/foreshock schema --write schemas

kafka: install ## run a local single-node Kafka until Ctrl-C
	$(BIN)/python -m foreshock.broker run

bench-nab: install ## NAB score of the default detector (DATA=../shared/data)
	$(BIN)/foreshock bench nab --data $(DATA)/nab --output runs/nab --json

bench-rca: install ## root-cause accuracy on Nezha and PetShop (DATA=../shared/data)
	$(BIN)/foreshock bench rca --dataset nezha --data $(DATA)/nezha --json
	$(BIN)/foreshock bench rca --dataset petshop --data $(DATA)/petshop --json

bench-rum: install ## RUM beacons decoded per second, against orjson alone
	$(BIN)/python -m foreshock.benchmarks.rum_decode --json

bench-throughput: install kafka-fetch ## flow events/s on a real broker vs a bare consumer
	$(BIN)/foreshock bench throughput --json

bench-series: install ## memory and scoring time of 100,000 live series
	$(BIN)/foreshock bench series --json
