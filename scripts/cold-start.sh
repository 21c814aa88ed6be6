#!/usr/bin/env bash
# Measures what a function pays for Keel at cold start: the release binaries' sizes and the time
# from process spawn to the first answer under the Lambda emulator (median of 10), for a bare
# `lambda_runtime` function, the same function with Keel's logs and metrics only (keel-runtime
# without default features: no AWS SDK), booking-api's SDK clients on lambda_runtime alone
# (examples/bare-booking-api.rs: the baseline of booking-api), and booking-api (every layer,
# DynamoDB, SNS, SQS) with
# the booking resources in a moto server: its first request GET /metadata (Keel and the
# function's init, no AWS call) and POST /bookings (a booking written to DynamoDB and
# published to SNS).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-tools.sh
target="${CARGO_TARGET_DIR:-$root/target}"
# Logs and metrics only: the examples built without keel-runtime's default features.
cargo build --release --locked -p keel-runtime --no-default-features --example bare --example hello
cp "$target/release/examples/hello" "$target/release/examples/hello-logs-metrics"
cargo build --release --locked -p booking-api --bin booking-api --example bare-booking-api
cargo build --locked -p keel-tests --bin cold-start
"$target/debug/cold-start" --rounds "${ROUNDS:-10}" \
  bare="$target/release/examples/bare" \
  logs+metrics="$target/release/examples/hello-logs-metrics" \
  "bare-booking-api=$target/release/examples/bare-booking-api@GET /metadata" \
  booking-api="$target/release/booking-api@GET /metadata" \
  booking-api="$target/release/booking-api@POST /bookings"
