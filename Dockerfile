# The pgjobs application image: the worker (`pgjobs worker`), the migrations (`alembic upgrade head`) and the
# console (`python -m console`) all run from it; compose.yml shows the three services.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies and the packages first (pgjobs and the Streamlit console, with its `console` extra), so editing
# docs or the migrations does not reinstall them.
COPY pyproject.toml README.md ./
COPY pgjobs ./pgjobs
COPY console ./console
RUN pip install ".[console]"

# Migrations (run by `alembic upgrade head` in /app, and located by `pgjobs migrate` / readiness checks through
# PGJOBS_ALEMBIC_INI).
COPY alembic.ini ./
COPY alembic ./alembic
ENV PGJOBS_ALEMBIC_INI=/app/alembic.ini

# Never run as root: a fixed, unprivileged uid that owns nothing in the image.
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pgjobs
USER 10001:10001

# 9477: worker /metrics, /healthz, /readyz (with --metrics-port 9477); 8501: console.
EXPOSE 9477 8501
CMD ["pgjobs", "worker", "--metrics-port", "9477"]
