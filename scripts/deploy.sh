#!/usr/bin/env bash
# Deploys the stack (infra/template.yaml) to the AWS account of the current credentials: builds
# the booking functions and the Keel extension layer for one architecture, then runs
# `sam deploy` with the layer's SHA-256 (ExtensionLayerSha256), so that a new extension publishes
# new function versions and goes through the canary like new code.
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
digest="$(sha256sum target/layers/keel-extension.zip | cut -d' ' -f1)"

# shellcheck disable=SC2086 # KEEL_PARAMETERS is a list of Name=Value words.
sam deploy \
    --template-file infra/template.yaml \
    --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND \
    --resolve-s3 \
    --parameter-overrides "Architecture=$architecture" "ExtensionLayerSha256=$digest" ${KEEL_PARAMETERS:-} \
    "$@"
