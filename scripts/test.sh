#!/usr/bin/env bash
# The project's test command (README): ruff, then the whole pytest suite against the local Postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
PYBIN=${PYBIN:-.venv/bin}
"$PYBIN/ruff" check .
exec "$PYBIN/python" -m pytest -q -p no:cacheprovider "$@"
