#!/usr/bin/env bash
# Deploys the stack (infra/template.yaml) to the AWS account of the current credentials: builds
# the booking functions and the Keel extension layer for one architecture, then runs
# `sam deploy` with each released function's version digest (its bootstrap, the layer, the
# parameters reaching it), so that a new extension or log level publishes new function versions
# and goes through the canary like new code.
#
#   scripts/deploy.sh [--architecture x86_64|arm64] [sam deploy options …]
#   KEEL_PARAMETERS="AlarmEmail=oncall@example.com JwtIssuer=https://…" scripts/deploy.sh --guided
#
# Needs the AWS SAM CLI and cargo-lambda (with zig for arm64); the first deployment is best run
# with --guided (stack name, region, confirmations).
set -euo pipefail
cd "$(dirname "$0")/.."

architecture=x86_64
if [ "${1:-}" = --architecture ]; then
    architecture="${2:-}"
    shift 2 || true
fi
case "$architecture" in
    x86_64 | arm64) ;;
    *) echo "deploy.sh: --architecture takes x86_64 or arm64, not '$architecture'" >&2; exit 2 ;;
esac
for tool in sam cargo-lambda; do
    if ! command -v "$tool" > /dev/null; then
        echo "deploy.sh: '$tool' is not installed (AWS SAM CLI: pip install aws-sam-cli; cargo-lambda: pip install cargo-lambda)" >&2
        exit 1
    fi
done

# The checked-in template must be what the code generates.
cargo run --quiet -p keel-infra -- --check

build=(cargo lambda build --release -p booking-api -p booking-worker -p canary-hook)
[ "$architecture" = arm64 ] && build+=(--arm64)
"${build[@]}"
bash scripts/package-extension.sh --deploy "$architecture"

# What a version is made of: its bootstrap, the layer, and the values of the parameters that
# reach the functions (keel_infra::template::FUNCTION_PARAMETERS). SAM names the version after
# this digest, so any change publishes a version and releases it through CodeDeploy.
log_level=INFO
for parameter in ${KEEL_PARAMETERS:-}; do
    case "$parameter" in LogLevel=*) log_level="${parameter#LogLevel=}" ;; esac
done
digest() {
    { sha256sum "target/lambda/$1/bootstrap" target/layers/keel-extension.zip | cut -d' ' -f1
      echo "Architecture=$architecture"
      echo "LogLevel=$log_level"; } | sha256sum | cut -d' ' -f1
}

# shellcheck disable=SC2086 # KEEL_PARAMETERS is a list of Name=Value words.
sam deploy \
    --template-file infra/template.yaml \
    --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND \
    --resolve-s3 \
    --parameter-overrides "Architecture=$architecture" \
        "BookingApiVersionDigest=$(digest booking-api)" "BookingWorkerVersionDigest=$(digest booking-worker)" \
        ${KEEL_PARAMETERS:-} \
    "$@"
