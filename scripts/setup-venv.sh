#!/usr/bin/env bash
# Creates the Python venv used by floe's end-to-end tests (tests/e2e) and prints its path.
#
#   scripts/setup-venv.sh            # venv at ${FLOE_VENV:-$HOME/.cache/floe-venv}
#   FLOE_VENV=/tmp/v scripts/setup-venv.sh
#
# Idempotent and fast when nothing changed: a stamp file inside the venv holds the sha256 of
# tests/e2e/requirements.txt plus the Python version; when it matches, nothing is installed.
# Needs only python3 (with venv or pip) and access to PyPI on first run. The last line printed on
# stdout is the venv path (progress goes to stderr), so callers can do:
#   VENV="$(scripts/setup-venv.sh | tail -n1)"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$ROOT/tests/e2e/requirements.txt"
VENV="${FLOE_VENV:-$HOME/.cache/floe-venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.floe-requirements.sha256"

log() { echo "setup-venv: $*" >&2; }

command -v "$PYTHON" >/dev/null 2>&1 || { log "error: $PYTHON not found"; exit 1; }
[ -f "$REQ" ] || { log "error: $REQ not found"; exit 1; }

want="$( { sha256sum "$REQ" | cut -d' ' -f1; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && "$VENV/bin/python" -c 'import pyiceberg, duckdb, pytest' >/dev/null 2>&1; then
  echo "$VENV"
  exit 0
fi

log "creating venv at $VENV"
mkdir -p "$(dirname "$VENV")"
if [ -e "$VENV" ] && ! [ -x "$VENV/bin/python" ]; then
  # A half-made venv from an interrupted run: start over.
  rm -rf "$VENV"
fi
if ! [ -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" >&2; then
    # Debian's python3 without python3-venv has no ensurepip: fall back to virtualenv from PyPI.
    log "python3 -m venv failed; trying virtualenv"
    rm -rf "$VENV"
    "$PYTHON" -m pip install --user --disable-pip-version-check -q virtualenv >&2 \
      || "$PYTHON" -m pip install --user --break-system-packages --disable-pip-version-check -q virtualenv >&2
    "$PYTHON" -m virtualenv "$VENV" >&2
  fi
fi

rm -f "$STAMP"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ" >&2
"$VENV/bin/python" -c 'import pyiceberg, duckdb, pytest, duckdb_extension_iceberg' >&2
echo "$want" > "$STAMP"
log "ready"
echo "$VENV"
