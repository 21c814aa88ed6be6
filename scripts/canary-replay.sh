#!/usr/bin/env bash
# Tests the canary alarms before shipping: would a bad version have been rolled back?
#
# Runs booking-api locally under load twice, as the version under test (the whole local stack:
# moto, the Lambda emulator, keel-extension — with the API Gateway stand-in delivering each
# invocation's platform.report to it — booking-api, booking-worker), captures everything the
# functions printed, and replays it through the generated canary alarms (alarms/booking-api.json)
# with CloudWatch's evaluation rules (`keel-infra canary-replay`):
#   1. healthy: must PROMOTE;
#   2. with the fault switch on for that version (KEEL_FAULT_ERROR_RATE): must ROLLBACK inside
#      the canary window.
# Each run's verdict, JSON and one SVG per alarm land in target/canary-replay/<run>/.
# Settings: RUN_SECONDS (load per run, default 130, half creating bookings and half reading them:
# two one-minute alarm periods at least), FAULT_ERROR_RATE (default 0.1), VERSION (default 2),
# CONCURRENCY (clients, default 1: more overloads the local DynamoDB stand-in on two cores, and
# its timeouts are real 5xx answers that fail the healthy run), PROFILE (cargo profile of the
# builds, default dev).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
. scripts/lib/stack.sh
bash scripts/install-tools.sh
target="${CARGO_TARGET_DIR:-$root/target}"
# The test build's profile by default (CI has built it already); PROFILE=release for release builds.
profile="${PROFILE:-dev}"
cargo build --profile "$profile" --locked -p keel-tests --bin keel-local --bin keel-load
cargo build --profile "$profile" --locked --bin booking-api --bin booking-worker --bin keel-extension --bin keel-infra
case "$profile" in
  dev | test) bin="$target/debug" ;;
  release | bench) bin="$target/release" ;;
  *) bin="$target/$profile" ;;
esac
run_seconds="${RUN_SECONDS:-130}"
version="${VERSION:-2}"
out="$target/canary-replay"
rm -rf "$out"
mkdir -p "$out"

stack=""
stop_stack() {
  if [ -n "$stack" ]; then
    stop_process "$stack"
    stack=""
  fi
}
trap stop_stack EXIT

# run <name> [VARIABLE=value…]: the stack under load with those variables; then the replay.
# Sets `replay_code` to the replay's exit code (0 PROMOTE, 1 ROLLBACK, 2 could not run).
run() {
  local name="$1"
  shift
  local dir="$out/$name" load_code=0
  mkdir -p "$dir"
  echo "canary-replay: $name run: starting the local stack as version $version (its output: $dir/stack.log) …" >&2
  # The fault switch is on only where a run asks for it, whatever the caller's environment holds.
  env -u KEEL_FAULT_ERROR_RATE -u KEEL_FAULT_LATENCY_MS -u KEEL_FAULT_LATENCY_RATE -u KEEL_FAULT_VERSION \
    "$@" "$bin/keel-local" --serve --no-tour --port 0 --api-processes 2 \
    --function-version "$version" --capture "$dir/functions.out" >"$dir/stack.log" 2>&1 &
  stack=$!
  local url
  url="$(wait_serving canary-replay "$dir/stack.log" "$stack")"
  echo "canary-replay: $name run: ${run_seconds} s of load on $url …" >&2
  "$bin/keel-load" --url "$url" --seconds "$((run_seconds / 2))" \
    --concurrency "${CONCURRENCY:-1}" >"$dir/load.txt" 2>&1 || load_code=$?
  sed 's/^/  /' "$dir/load.txt" >&2
  # A run without answers proves nothing: keel-load fails when a phase got no expected answer.
  if [ "$load_code" != 0 ]; then
    echo "canary-replay: the $name run's load failed (exit $load_code); the stack's last lines:" >&2
    tail -n 40 "$dir/stack.log" >&2
    exit 1
  fi
  stop_stack
  if [ ! -s "$dir/functions.out" ]; then
    echo "canary-replay: the $name run captured nothing:" >&2
    tail -n 40 "$dir/stack.log" >&2
    exit 1
  fi
  replay_code=0
  "$bin/keel-infra" canary-replay --alarms alarms/booking-api.json --version "$version" \
    --json "$dir/replay.json" --charts "$dir" "$dir/functions.out" >"$dir/replay.txt" 2>&1 || replay_code=$?
  echo "canary-replay: $name run: $(grep -E '^(PROMOTE|ROLLBACK)' "$dir/replay.txt" || tail -n 1 "$dir/replay.txt")" >&2
}

run healthy
healthy=$replay_code
run faulty KEEL_FAULT_ERROR_RATE="${FAULT_ERROR_RATE:-0.1}" KEEL_FAULT_VERSION="$version"
faulty=$replay_code
status=0
if [ "$healthy" != 0 ]; then
  echo "canary-replay: FAILED: the healthy run did not PROMOTE (exit $healthy):" >&2
  cat "$out/healthy/replay.txt" >&2
  status=1
fi
if [ "$faulty" != 1 ]; then
  echo "canary-replay: FAILED: the faulty run did not ROLLBACK (exit $faulty):" >&2
  cat "$out/faulty/replay.txt" >&2
  status=1
fi
[ "$status" = 0 ] && echo "canary-replay: the healthy version promotes, the faulty one rolls back (details: $out)"
exit "$status"
