#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the tests that run the catalog on PostgreSQL.
#
#   scripts/postgres.sh start DIR   initdb into DIR (trust auth, loopback only, a free port),
#                                   start it, and print its URL as the last line:
#                                   postgres://postgres@127.0.0.1:PORT/postgres
#   scripts/postgres.sh stop DIR    stop it (fast shutdown) and remove DIR
#
# Uses PostgreSQL 15 from the machine (initdb/pg_ctl on PATH, or Debian's
# /usr/lib/postgresql/15/bin); when it is missing and apt-get is there, installs Debian's
# postgresql-15 first. initdb refuses to run as root, so as root the server runs as the
# `postgres` user (created by the Debian package) through runuser.
set -euo pipefail

cmd="${1:?usage: scripts/postgres.sh start|stop DIR}"
dir="${2:?usage: scripts/postgres.sh start|stop DIR}"
PG_MAJOR=15

find_bin() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
  elif [ -x "/usr/lib/postgresql/$PG_MAJOR/bin/pg_ctl" ]; then
    echo "/usr/lib/postgresql/$PG_MAJOR/bin"
  fi
}

as_owner() {
  if [ "$(id -u)" = "0" ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
  start)
    bin="$(find_bin)"
    if [ -z "$bin" ]; then
      if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "== installing postgresql-$PG_MAJOR (Debian)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-$PG_MAJOR" >&2
        bin="$(find_bin)"
      fi
      [ -n "$bin" ] || { echo "PostgreSQL $PG_MAJOR not found (need initdb and pg_ctl)" >&2; exit 1; }
    fi
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ "$(id -u)" = "0" ]; then chown postgres "$dir"; fi
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # Loopback only, the socket inside DIR, fsync off (a test server: nothing to keep).
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >&2 \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    bin="$(find_bin)"
    if [ -n "$bin" ] && [ -d "$dir/data" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: scripts/postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
