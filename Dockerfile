# Foreshock's stream processor. Build context: the repository root.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# bytewax and confluent-kafka install from wheels, so no compiler is needed.
COPY . .
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home foreshock

USER foreshock
CMD ["foreshock", "run"]
