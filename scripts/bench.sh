#!/usr/bin/env bash
# floe's benchmark suite, in one run (BENCHMARKS.md has the latest figures). Every figure is one
# line `BENCH name=value unit=…`; `grep '^BENCH'` gives them all.
#
#   scripts/bench.sh [seconds] [connections] [batch]      default 20 16 1000
#   FLOE_BENCH_ROWS=10000000 FLOE_BENCH_PEER_SECONDS=20    lookup table size, PyIceberg run time
#
# 1. ingest: a release `floe serve` on a fresh temp dir (loopback, 1 s roll, zstd, table
#    partitioned by `day(ts), ns`, 50 tenants) driven by `floe-load`: durable acks/s, MB/s, ack
#    p50/p99, end-to-end committed rows/s and MB/s, freshness (ack → visible to a point lookup)
#    under the full load and at half its request rate, and the server's peak RSS (VmHWM).
#    1a. the same table unpartitioned (figures prefixed `flat_`);
#    1b. partitioned again, with 4 connections (`c4_`: ack latency under load at few clients);
#    1c. partitioned, against an S3 warehouse on s3s-fs over loopback (`s3_`).
# 2. the in-process limit on the same events: floe's JSON → Arrow decoder + Parquet zstd encode
#    on one core (benches/limit.rs), and the ratios floe reaches against it.
# 3. the peer: the same events appended by a plain PyIceberg script (benches/pyiceberg_append.py),
#    unpartitioned (its best case) at 1,000, 10,000 and 50,000 events per append
#    (`pyiceberg_1k_`, `_10k_`, `_50k_`), and floe's ratio against each.
# 4. lookups and SQL: point-lookup p50/p99 over HTTP and a GROUP BY over a 10 M-row, 500-file table
#    partitioned by ns, type (benches/lookup.rs).
# 5. compaction: a 2 M-row table written in 100 commits × 50 partitions (5,000 small files)
#    compacted by floe::maintenance: MB/s of Parquet rewritten (wall clock and per CPU second),
#    and a point lookup and a full aggregate before and after (benches/compact.rs).
#    FLOE_BENCH_COMPACT_ROWS / FLOE_BENCH_COMPACT_COMMITS change the table.
#
# Only 127.0.0.1 is used. Needs the venv of scripts/setup-venv.sh for step 3.
#
#   FLOE_BENCH_ONLY=ingest   step 1 alone (1, 1a, 1b, 1c), then its ratios
#   FLOE_BENCH_ONLY=compact  step 5 alone
#   FLOE_BENCH_PROFILE=debug the debug build (quick, slower figures: for a side-by-side, not a record)
#   FLOE_BENCH_PROFILE=NAME  any other cargo profile's floe (`cargo build --profile NAME`)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/floe-target}"
SECONDS_RUN="${1:-20}"; CONNS="${2:-16}"; BATCH="${3:-1000}"
ROWS="${FLOE_BENCH_ROWS:-10000000}"; PEER_SECONDS="${FLOE_BENCH_PEER_SECONDS:-20}"
PROFILE="${FLOE_BENCH_PROFILE:-release}"; ONLY="${FLOE_BENCH_ONLY:-}"
case "$PROFILE" in
  debug) cargo build -p floe --bins --locked >&2 ;;
  release) cargo build --release -p floe --bins --locked >&2 ;;
  *) cargo build --profile "$PROFILE" -p floe --bins --locked >&2 ;;
esac
[ "$ONLY" = "ingest" ] || cargo bench -p floe --locked --no-run >&2
BIN="$CARGO_TARGET_DIR/$PROFILE"
echo "BENCH build=$PROFILE machine=\"$(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')\""
OUT="$(mktemp)"
DIR="$(mktemp -d)"; PORT="${FLOE_BENCH_PORT:-18080}"
PID=""
cleanup() {
  [ -n "$PID" ] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
  scripts/s3.sh stop "$DIR/s3" 2>/dev/null || true
  rm -rf "$DIR" "$OUT"
}
trap cleanup EXIT

# One ingest run; $1 is a prefix for the figures' names, $2 extra [catalog] lines, $3 the
# sink's partition_by, $4 the number of connections.
ingest_run() {
  local prefix="$1" catalog="$2" partition="$3" conns="$4"
  cat > "$DIR/floe.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
data_dir = "data"
$catalog
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
partition_by = $partition
rolling = { interval_seconds = 1 }
[[pipelines]]
name = "events_to_table"
sql = "INSERT INTO events_table SELECT * FROM events"
TOML
  "$BIN/floe" serve --config "$DIR/floe.toml" 2>"$DIR/serve.log" &
  PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  "$BIN/floe-load" --url "http://127.0.0.1:$PORT" --seconds "$SECONDS_RUN" --connections "$conns" --batch "$BATCH" \
    | sed "s/^BENCH /BENCH ${prefix}/" | tee -a "$OUT"
  # The server's peak resident memory over the whole run (the kernel's high-water mark).
  echo "BENCH ${prefix}rss_peak_mb=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$PID/status") unit=MiB" | tee -a "$OUT"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  rm -rf "$DIR/data"
}

if [ "$ONLY" != "compact" ]; then
PARTITIONED='["day(ts)", "ns"]'
echo "== 1. ingest, end to end, freshness (floe serve + floe-load, ${SECONDS_RUN}s, ${CONNS} connections, ${BATCH}/request, partitioned by day(ts), ns)"
echo "disk: $(df -h "$DIR" | awk 'NR==2{print $1}')"
ingest_run "" "" "$PARTITIONED" "$CONNS"

echo "== 1a. the same, unpartitioned"
ingest_run "flat_" "" "[]" "$CONNS"

echo "== 1b. partitioned, 4 connections"
ingest_run "c4_" "" "$PARTITIONED" 4

echo "== 1c. partitioned, with the warehouse on S3 (s3s-fs on loopback, over the same disk: scripts/s3.sh)"
mkdir -p "$DIR/s3"
S3_ENDPOINT="$(scripts/s3.sh start "$DIR/s3" | tail -n 1)"
ingest_run "s3_" "[catalog]
warehouse = \"s3://warehouse/bench\"
[catalog.s3]
endpoint = \"$S3_ENDPOINT\"
access_key_id = \"floe-test\"
secret_access_key = \"floe-test-secret\"
path_style = true" "$PARTITIONED" "$CONNS"
scripts/s3.sh stop "$DIR/s3"
fi

if [ -z "$ONLY" ]; then
echo "== 2. in-process limit (one core: decode + Parquet zstd encode of the same events)"
cargo bench -p floe --locked --bench limit -- 10 2>/dev/null | tee -a "$OUT"

echo "== 3. peer: PyIceberg append of the same events, unpartitioned, ${PEER_SECONDS}s per batch size"
VENV="$(scripts/setup-venv.sh | tail -n 1)"
for peer in 1k:1000 10k:10000 50k:50000; do
  "$VENV/bin/python" crates/floe/benches/pyiceberg_append.py "$PEER_SECONDS" "${peer#*:}" none \
    | sed "s/^BENCH pyiceberg_/BENCH pyiceberg_${peer%%:*}_/" | tee -a "$OUT"
done

echo "== 4. lookups and a SQL aggregate on ${ROWS} rows"
cargo bench -p floe --locked --bench lookup -- "$ROWS" 2000 2>/dev/null | tee -a "$OUT"
fi

if [ "$ONLY" != "ingest" ]; then
echo "== 5. compaction of ${FLOE_BENCH_COMPACT_COMMITS:-100} commits × 50 partitions (${FLOE_BENCH_COMPACT_ROWS:-2000000} rows)"
cargo bench -p floe --locked --bench compact -- "${FLOE_BENCH_COMPACT_ROWS:-2000000}" "${FLOE_BENCH_COMPACT_COMMITS:-100}" 2>/dev/null | tee -a "$OUT"

fi

echo "== ratios"
val() { awk -v k="BENCH $1=" 'index($0, k) == 1 { split($2, a, "="); print a[2] }' "$OUT" | tail -n 1; }
ratio() { awk -v a="$(val "$1")" -v b="$(val "$2")" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
echo "BENCH ingest_vs_limit=$(ratio ingest_mb_per_s limit_mb_per_s) unit=x"
echo "BENCH e2e_vs_limit=$(ratio e2e_mb_per_s limit_mb_per_s) unit=x"
echo "BENCH partitioned_vs_flat_ingest=$(ratio ingest_mb_per_s flat_ingest_mb_per_s) unit=x"
echo "BENCH partitioned_vs_flat_e2e=$(ratio e2e_mb_per_s flat_e2e_mb_per_s) unit=x"
echo "BENCH s3_vs_local_ingest=$(ratio s3_ingest_mb_per_s ingest_mb_per_s) unit=x"
echo "BENCH s3_vs_local_e2e=$(ratio s3_e2e_mb_per_s e2e_mb_per_s) unit=x"
for peer in 1k 10k 50k; do
  echo "BENCH e2e_vs_pyiceberg_${peer}=$(ratio e2e_mb_per_s "pyiceberg_${peer}_mb_per_s") unit=x"
done
# The product target for compaction: 150 MB/s of Parquet rewritten per core.
echo "BENCH compact_per_core_vs_target=$(awk -v a="$(val compact_mb_per_cpu_s)" 'BEGIN { if (a > 0) printf "%.2f", a / 150; else print "nan" }') unit=x"
