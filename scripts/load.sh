#!/usr/bin/env bash
# Measures the local booking API under load: starts the whole local stack (`keel-local --serve
# --no-tour`: moto, the Lambda emulator, keel-extension, booking-api, booking-worker, the API
# Gateway stand-in), release builds, then drives it from a second process (`keel-load`):
# throughput and p50/p90/p99 latency of POST /bookings and GET /bookings/{id}, each for a bounded
# time. Settings: PORT (default 3100), API_PROCESSES (booking-api processes, default 2),
# CONCURRENCY (clients, default 4), PHASE_SECONDS (default 10).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-tools.sh
target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release --locked -p keel-tests --bin keel-local --bin keel-load
# What keel-local runs, built here so that its start is not a build.
cargo build --release --locked --bin booking-api --bin booking-worker --bin keel-extension
port="${PORT:-3100}"
mkdir -p "$target/load"
log="$target/load/stack.log"
echo "load: starting the local stack (its output: $log) …" >&2
"$target/release/keel-local" --serve --no-tour --port "$port" --api-processes "${API_PROCESSES:-2}" >"$log" 2>&1 &
stack=$!
trap 'kill -TERM "$stack" 2>/dev/null; wait "$stack" 2>/dev/null || true' EXIT
# Up once it says it serves; if it dies first, say why.
for _ in $(seq 1 600); do
  grep -q "^Serving booking-api" "$log" && break
  if ! kill -0 "$stack" 2>/dev/null; then
    echo "load: the local stack stopped before serving:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  sleep 0.5
done
if ! grep -q "^Serving booking-api" "$log"; then
  echo "load: the local stack did not start serving within 5 minutes:" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
"$target/release/keel-load" --url "http://127.0.0.1:$port" \
  --seconds "${PHASE_SECONDS:-10}" --concurrency "${CONCURRENCY:-4}"
