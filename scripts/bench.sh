#!/usr/bin/env bash
# Ingest benchmark: starts a release `floe serve` on a fresh temp dir (loopback, 1 s roll),
# drives it with `floe-load`, and prints the hardware and one line per figure.
#
#   scripts/bench.sh [seconds] [connections] [batch]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/floe-target}"
SECONDS_RUN="${1:-20}"; CONNS="${2:-4}"; BATCH="${3:-1000}"
cargo build --release -p floe --bins --locked >&2
BIN="$CARGO_TARGET_DIR/release"
DIR="$(mktemp -d)"; PORT="${FLOE_BENCH_PORT:-18080}"
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT
cat > "$DIR/floe.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
data_dir = "data"
[[streams]]
name = "events"
fields = [
  { name = "ns", type = "string", required = true },
  { name = "type", type = "string", required = true },
  { name = "id", type = "string", required = true },
  { name = "ts", type = "timestamp", required = true },
  { name = "data", type = "json" },
  { name = "visibility", type = "string" },
]
[[sinks]]
name = "events_table"
type = "iceberg"
table = "analytics.events"
partition_by = ["ns"]
rolling = { interval_seconds = 1 }
[[pipelines]]
name = "events_to_table"
sql = "INSERT INTO events_table SELECT * FROM events"
TOML
"$BIN/floe" serve --config "$DIR/floe.toml" 2>"$DIR/serve.log" &
PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
echo "disk: $(df -h "$DIR" | awk 'NR==2{print $1}')"
"$BIN/floe-load" --url "http://127.0.0.1:$PORT" --seconds "$SECONDS_RUN" --connections "$CONNS" --batch "$BATCH"
