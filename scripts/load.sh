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
. scripts/lib/stack.sh
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
trap 'stop_process "$stack"' EXIT
url="$(wait_serving load "$log" "$stack")"
"$target/release/keel-load" --url "$url" \
  --seconds "${PHASE_SECONDS:-10}" --concurrency "${CONCURRENCY:-4}"
