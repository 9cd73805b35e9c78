#!/usr/bin/env bash
# Create one virtualenv per peer under bench/.venvs/<peer> and install that peer, pinned.
# Idempotent: a venv whose marker file matches the pinned requirement is left alone.
# A peer that fails to install is reported and skipped; run_peers.py only runs peers whose
# venv has the marker file.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venvs="$here/../.venvs"
python="${PYTHON:-python3.11}"
mkdir -p "$venvs"

# peer -> pinned requirements (space separated). Change a pin here and re-run: the venv is rebuilt.
# Every peer gets psycopg's binary (C) implementation: a bare `pip install procrastinate` would run
# on psycopg's pure-Python implementation, which would measure the driver rather than the job system.
declare -A pins=(
  [procrastinate]="procrastinate==3.10.0 psycopg[binary,pool]==3.3.9"
  [pgqueuer]="pgqueuer==1.6.0 asyncpg==0.32.0 psycopg[binary]==3.3.9"
  [chancy]="chancy[cron]==0.26.0 psycopg[binary,pool]==3.3.9"
  [awa]="awa-pg==0.6.9 psycopg[binary]==3.3.9"
)

declare -A dist=([awa]=awa-pg)
status=0
for peer in procrastinate pgqueuer chancy awa; do
  req="${pins[$peer]}"
  venv="$venvs/$peer"
  marker="$venv/.bench-installed"
  if [[ -f "$marker" && "$(cat "$marker")" == "$req" ]]; then
    echo "[$peer] up to date ($req)"
    continue
  fi
  echo "[$peer] installing $req"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv"; then
    echo "[$peer] venv creation failed, skipping" >&2; status=1; continue
  fi
  # shellcheck disable=SC2086
  # (grep drops the noise of this machine's local find-links/extra-index locations)
  if timeout 600 "$venv/bin/pip" install --quiet --disable-pip-version-check $req \
      2> >(grep -v "is neither a file nor a directory" >&2) \
      && "$venv/bin/python" "$here/${peer}_adapter.py" --help >/dev/null ; then
    echo "$req" > "$marker"
    "$venv/bin/pip" freeze --disable-pip-version-check > "$venv/.bench-freeze.txt"
    echo "[$peer] ok: $("$venv/bin/pip" show "${dist[$peer]:-$peer}" 2>/dev/null | grep '^Version')"
  else
    echo "[$peer] install or import failed; it will be skipped by run_peers.py" >&2
    status=1
  fi
done
exit $status
