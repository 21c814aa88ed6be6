#!/usr/bin/env bash
# Deploys the stack (infra/template.yaml) to the AWS account of the current credentials: builds
# the booking functions and the Keel extension layer for one architecture, then runs
# `sam deploy` with each released function's version digest (its bootstrap, the layer, the
# parameters reaching it, the template's definition of it), so that a new extension, log level or
# configuration publishes new function versions and goes through the canary like new code.
# Parameters go in KEEL_PARAMETERS (they are digested), not --parameter-overrides.
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

# What a version is made of (scripts/version-digest.sh): its bootstrap, the layer, the values of
# the parameters that reach the functions and what the template says of the function. SAM names
# the version after this digest, so a change to any of them publishes a version and releases it
# through CodeDeploy. LogLevel is always passed, so that the value digested is the value deployed
# (sam deploy would otherwise keep the stack's previous one).
log_level=INFO
other_parameters=()
for parameter in ${KEEL_PARAMETERS:-}; do
    case "$parameter" in
        LogLevel=*) log_level="${parameter#LogLevel=}" ;;
        Architecture=* | *VersionDigest=*)
            echo "deploy.sh: $parameter is set by the script (use --architecture)" >&2
            exit 2
            ;;
        *) other_parameters+=("$parameter") ;;
    esac
done
for argument in "$@"; do
    case "$argument" in
        --parameter-overrides*)
            echo "deploy.sh: give parameters in KEEL_PARAMETERS, not --parameter-overrides (they go into the version digests)" >&2
            exit 2
            ;;
    esac
done
digest() {
    bash scripts/version-digest.sh "$1" "target/lambda/$1/bootstrap" target/layers/keel-extension.zip \
        "Architecture=$architecture" "LogLevel=$log_level"
}
api_digest="$(digest booking-api)"
worker_digest="$(digest booking-worker)"

sam deploy \
    --template-file infra/template.yaml \
    --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND \
    --resolve-s3 \
    --parameter-overrides "Architecture=$architecture" "LogLevel=$log_level" \
        "BookingApiVersionDigest=$api_digest" "BookingWorkerVersionDigest=$worker_digest" \
        ${other_parameters[@]+"${other_parameters[@]}"} \
    "$@"
