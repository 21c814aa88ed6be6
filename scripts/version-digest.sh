#!/usr/bin/env bash
# Prints a released function's version digest: the SHA-256 of what its version is made of — its
# bootstrap, the extension layer zip, the values of the parameters that reach the functions
# (keel_infra::template::FUNCTION_PARAMETERS, given as NAME=value) and what the template says of
# the function (`keel-infra --version-inputs <service>`). scripts/deploy.sh passes it as the
# service's <Service>VersionDigest parameter; SAM names the version after it, so a change to any
# of these publishes a new version, released through CodeDeploy.
#
#   scripts/version-digest.sh <service> <bootstrap> <layer zip> Architecture=x86_64 LogLevel=INFO
#
# KEEL_INFRA: a built keel-infra binary to use (default: cargo run -p keel-infra).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -lt 3 ]; then
    echo "usage: scripts/version-digest.sh <service> <bootstrap> <layer zip> [NAME=value …]" >&2
    exit 2
fi
service="$1" bootstrap="$2" layer="$3"
shift 3
version_inputs() {
    if [ -n "${KEEL_INFRA:-}" ]; then
        "$KEEL_INFRA" --version-inputs "$service"
    else
        cargo run --quiet -p keel-infra -- --version-inputs "$service"
    fi
}
# Each step on its own, so that a missing file or an unknown service stops here with its error.
files="$(sha256sum "$bootstrap" "$layer" | cut -d' ' -f1)"
definition="$(version_inputs)"
{
    echo "$files"
    for value in "$@"; do
        echo "$value"
    done
    echo "$definition"
} | sha256sum | cut -d' ' -f1
