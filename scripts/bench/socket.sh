#!/usr/bin/env bash
# Socket load of the live Traccar source (issue 22): the relay's release binary follows the Traccar
# stand-in's /api/socket with 100,000 devices and 1,000 server geofences, fed frames of 1,000 positions
# at 10,000 positions/s (about 100 zone events/s to a webhook sink) for SOCKET_LOAD_SECS seconds (default
# 60). The test (tests/socket_load.rs) asserts the relay keeps up: every zone event arrives, the lag from
# frame to webhook does not grow, RSS stays flat. Prints its one summary line:
#
#   socket-load: secs=60 devices=100000 ... (key=value pairs, see tests/socket_load.rs)
#
# Environment: SOCKET_LOAD_SECS (default 60), SOCKET_LOAD_DEVICES (default 100000, a multiple of 1000),
# SOCKET_LOAD_RATE (positions/s, default 10000).
# Exit status: the test's (non-zero when an assertion failed; the line is printed before the assertions).
set -euo pipefail
cd "$(dirname "$0")/../.."

export SOCKET_LOAD_SECS=${SOCKET_LOAD_SECS:-60}
cargo test --release --locked --test socket_load --no-run
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
cargo test --release --locked --test socket_load -- --nocapture >"$out" 2>&1 || status=$?
if ! grep '^socket-load:' "$out"; then
  cat "$out" >&2
  exit $((status == 0 ? 1 : status))
fi
[ "$status" -eq 0 ] || cat "$out" >&2
exit "$status"
