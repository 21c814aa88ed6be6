#!/usr/bin/env bash
# Runs Keel's main job locally: the booking API wrapped by Keel under the Lambda emulator,
# printing each answer with the structured logs and EMF metrics it wrote. No AWS account,
# no Docker. Pass --serve to keep it running for your own requests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-tools.sh
exec cargo run --quiet -p keel-tests --bin keel-local -- "$@"
