#!/usr/bin/env bash
# Intake benchmark on PostgreSQL next to SQLite: wrk saturation (2 threads per wrk, 128 connections in
# all, a fresh event id per request, scripts/bench/event.lua), one rule sending every event to the log
# channel (intake plus one durable delivery per event), for
#   - SQLite (the embedded default),
#   - PostgreSQL with one instance,
#   - PostgreSQL with two instances on the same database (two wrk runs at once, 64 connections each;
#     the figure is their sum).
# PostgreSQL is a throwaway cluster from scripts/pg with its defaults (fsync and synchronous_commit on:
# a commit is on disk when the relay answers). Loopback only; about a minute.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)"
  apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
fi
cargo build --release --locked --bin trackrelay
bin=${CARGO_TARGET_DIR:-target}/release/trackrelay

duration=${DURATION:-10}
tmp=$(mktemp -d)
# A folder of its own: as root the cluster belongs to the postgres user, who cannot enter $tmp.
export TRACKRELAY_PG_DIR=$(mktemp -d /tmp/trackrelay-pg-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/pg stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
pg_env=$(PG_FSYNC=on scripts/pg start) || { echo "cannot start PostgreSQL"; exit 1; }
eval "$pg_env"

start() { # name port storage
  cat > "$tmp/$1.yaml" <<YAML
listen: "127.0.0.1:$2"
storage: $3
channels: { out: { type: log } }
rules: [{ name: all, notify: [{ channel: out }] }]
YAML
  RUST_LOG=warn "$bin" serve --config "$tmp/$1.yaml" >/dev/null 2>"$tmp/$1.log" &
  pids+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$2/healthz" >/dev/null && return; sleep 0.1; done
  echo "$1 did not start:"; cat "$tmp/$1.log"; exit 1
}

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

wrk_run() { # connections port -> "requests/s non2xx"
  wrk -t2 -c"$1" -d"${duration}s" --latency -s scripts/bench/event.lua "http://127.0.0.1:$2/events" > "$tmp/wrk-$2.txt"
}

report() { # label files...
  local label=$1; shift
  awk -v label="$label" '
    /Requests\/sec/ { rps += $2 }
    /Non-2xx/ { bad += $NF }
    / 50%/ { p50 = p50 (p50 ? ", " : "") $2 }
    / 99%/ { p99 = p99 (p99 ? ", " : "") $2 }
    END { printf "%-34s %9.0f req/s  non-2xx %d  p50 %s  p99 %s\n", label, rps, bad, p50, p99 }' "$@"
}

outbox() { # port
  sleep 2
  curl -fs "http://127.0.0.1:$1/metrics" | grep '^trackrelay_outbox_deliveries' |
    sed 's/trackrelay_outbox_deliveries//' | tr '\n' ' '
}

echo "machine: $(nproc) cores, $(uname -srm); ${duration}s per run"

start sqlite 18091 "{ data_dir: \"$tmp/sqlite-data\" }"
wrk_run 128 18091
report "SQLite, 1 instance" "$tmp/wrk-18091.txt"
echo "   outbox after 2 s: $(outbox 18091)"
stop_all

psql "$TRACKRELAY_TEST_PG_URL" -qc "CREATE DATABASE bench1" >/dev/null
db1=${TRACKRELAY_TEST_PG_URL%/postgres}/bench1
start pg1 18092 "{ url: \"$db1\" }"
wrk_run 128 18092
report "PostgreSQL, 1 instance" "$tmp/wrk-18092.txt"
echo "   outbox after 2 s: $(outbox 18092)"
stop_all

psql "$TRACKRELAY_TEST_PG_URL" -qc "CREATE DATABASE bench2" >/dev/null
db2=${TRACKRELAY_TEST_PG_URL%/postgres}/bench2
start pg2a 18093 "{ url: \"$db2\" }"
start pg2b 18094 "{ url: \"$db2\" }"
wrk_run 64 18093 & w1=$!
ID_OFFSET=50000000 wrk_run 64 18094 & w2=$!
wait "$w1" "$w2"
report "PostgreSQL, 2 instances (sum)" "$tmp/wrk-18093.txt" "$tmp/wrk-18094.txt"
echo "   outbox after 2 s: $(outbox 18093)"
stop_all
