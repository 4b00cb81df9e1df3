#!/usr/bin/env bash
# The whole test suite, from a fresh clone: Rust unit + integration tests, then the end-to-end
# tests that run the real `floe` binary and read its tables back with PyIceberg and DuckDB
# (installed, pinned, into a venv by scripts/setup-venv.sh). The catalog tests run a second time
# against a PostgreSQL server that scripts/postgres.sh starts on loopback.
#
#   scripts/test.sh            everything
#   FLOE_SKIP_E2E=1 scripts/test.sh   Rust tests only
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse a build directory outside the clone when there is one (CI clones afresh each time).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/floe-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== build"
cargo build --workspace --all-targets --locked

echo "== rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

# The catalog, commit and concurrency tests once more with the catalog on a real PostgreSQL
# (started here on loopback by scripts/postgres.sh; also used by the PostgreSQL e2e tests), and
# the S3 warehouse tests against a real S3-compatible server (s3s-fs, built once and started on
# loopback by scripts/s3.sh; the e2e S3 tests start their own).
echo "== catalog tests on PostgreSQL, S3 warehouse tests on s3s-fs"
PG_PARENT="$(mktemp -d)"
chmod 755 "$PG_PARENT"
mkdir -p "$PG_PARENT/s3"
trap 'scripts/postgres.sh stop "$PG_PARENT/pg"; scripts/s3.sh stop "$PG_PARENT/s3"; rm -rf "$PG_PARENT"' EXIT
export FLOE_TEST_POSTGRES="$(scripts/postgres.sh start "$PG_PARENT/pg" | tail -n 1)"
export FLOE_TEST_S3="$(scripts/s3.sh start "$PG_PARENT/s3" | tail -n 1)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast -E "package(floe-catalog) & binary(catalog)"
else
  cargo test --workspace --locked --no-fail-fast --test catalog
fi

if [ "${FLOE_SKIP_E2E:-0}" = "1" ]; then
  echo "== e2e skipped (FLOE_SKIP_E2E=1)"
  exit 0
fi

echo "== python venv (PyIceberg, DuckDB)"
VENV="$(scripts/setup-venv.sh | tail -n 1)"

echo "== end-to-end tests"
FLOE_BIN="$CARGO_TARGET_DIR/debug/floe" "$VENV/bin/python" -m pytest tests/e2e -q -p no:cacheprovider
