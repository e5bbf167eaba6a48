# Foreshock's stream processor. Build context: the repository root.
# The native scanner is built in a Rust stage and installed as a wheel.
FROM rust:1-slim-bookworm AS native
# maturin builds the wheel; bookworm's Python is 3.11, the wheel's ABI floor.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /native
COPY native/ .
RUN python3 -m venv /tmp/maturin && /tmp/maturin/bin/pip install "maturin>=1.7,<2" \
    && /tmp/maturin/bin/maturin build --release --out /wheels

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# bytewax and confluent-kafka install from wheels, so no compiler is needed.
COPY --from=native /wheels /wheels
COPY . .
RUN pip install . /wheels/*.whl \
    && useradd --system --uid 10001 --no-create-home foreshock

USER foreshock
CMD ["foreshock", "run"]
