#!/usr/bin/env bash
# Intake benchmark of the durable relay (SQLite, WAL, synchronous=FULL: every commit is fsynced).
#  - saturation: wrk, 2 threads, 128 connections, a fresh event id per request (scripts/bench/event.lua)
#  - latency at a fixed rate: examples/loadgen at 1,000 events/s
# for two configurations: no rule matches (intake alone), and one rule sending every event to the log
# channel (intake plus one durable delivery per event). Loopback only; runs about a minute.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)"
  apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
fi
cargo build --release --locked --bin trackrelay --example loadgen

port=${PORT:-18088}
duration=${DURATION:-10}
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

run() {
  local name=$1 rules=$2
  cat > "$tmp/$name.yaml" <<YAML
listen: "127.0.0.1:$port"
storage: { data_dir: "$tmp/$name-data" }
channels: { out: { type: log } }
rules: $rules
YAML
  RUST_LOG=warn "${CARGO_TARGET_DIR:-target}"/release/trackrelay serve --config "$tmp/$name.yaml" >/dev/null 2>"$tmp/$name.log" &
  pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  echo "== $name: saturation (wrk -t2 -c128 -d${duration}s)"
  wrk -t2 -c128 -d"${duration}s" --latency -s scripts/bench/event.lua "http://127.0.0.1:$port/events" \
    | grep -E "requests in|Requests/sec|Non-2xx| 50%| 99%"
  echo "== $name: 1,000 events/s for ${duration}s (loadgen)"
  "${CARGO_TARGET_DIR:-target}"/release/examples/loadgen --url "http://127.0.0.1:$port/events" --rate 1000 --duration "$duration" \
    --id-base 9000000000 | sed 's/^/   /'
  sleep 2
  echo "   outbox after 2 s: $(curl -fs "http://127.0.0.1:$port/metrics" | grep '^trackrelay_outbox_deliveries' | sed 's/trackrelay_outbox_deliveries//' | tr '\n' ' ')"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}

echo "machine: $(nproc) cores, $(uname -srm)"
run intake-only "[]"
run one-delivery-per-event "[{ name: all, notify: [{ channel: out }] }]"
