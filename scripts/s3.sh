#!/usr/bin/env bash
# A real S3-compatible server on loopback for floe's S3 tests: s3s-fs 0.14.1 from crates.io
# (an S3 API over a local folder), installed pinned with its own lock file.
#
#   scripts/s3.sh install          # builds s3s-fs once into ${FLOE_TOOLS:-$HOME/.cache/floe-tools};
#                                  #   last stdout line: the binary's path
#   scripts/s3.sh start DIR        # starts it on a free loopback port, serving DIR/data;
#                                  #   last stdout line: the endpoint (http://127.0.0.1:PORT)
#   scripts/s3.sh stop DIR
#
# The server requires SigV4 signatures with the access key `floe-test` and the secret
# `floe-test-secret`; the bucket `warehouse` exists from the start (s3s-fs keeps a bucket as a
# folder under DIR/data). Path-style addressing only. Progress goes to stderr.
set -euo pipefail

VERSION=0.14.1
TOOLS="${FLOE_TOOLS:-$HOME/.cache/floe-tools}"
BIN="$TOOLS/bin/s3s-fs"
ACCESS_KEY=floe-test
SECRET_KEY=floe-test-secret

log() { echo "s3.sh: $*" >&2; }

install() {
  if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$VERSION"; then
    return 0
  fi
  log "installing s3s-fs $VERSION into $TOOLS (once)"
  # Its own target dir: the workspace's build settings and lock file stay out of it.
  CARGO_TARGET_DIR="$TOOLS/target" cargo install --quiet --locked --root "$TOOLS" \
    "s3s-fs@$VERSION" --features binary >&2
  rm -rf "$TOOLS/target"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local dir="$1"
  install
  mkdir -p "$dir/data/warehouse"
  local port
  port="$(free_port)"
  "$BIN" --host 127.0.0.1 --port "$port" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" \
    "$dir/data" >"$dir/s3s.log" 2>&1 &
  echo $! >"$dir/s3s.pid"
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port" >"$dir/s3s.port"
      log "s3s-fs serving $dir/data on 127.0.0.1:$port"
      echo "http://127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  log "error: s3s-fs did not start; its log:"
  cat "$dir/s3s.log" >&2
  exit 1
}

stop() {
  local dir="$1"
  if [ -f "$dir/s3s.pid" ]; then
    kill "$(cat "$dir/s3s.pid")" 2>/dev/null || true
    rm -f "$dir/s3s.pid"
  fi
}

case "${1:-}" in
  install) install; echo "$BIN" ;;
  start) start "${2:?usage: s3.sh start DIR}" ;;
  stop) stop "${2:?usage: s3.sh stop DIR}" ;;
  *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
