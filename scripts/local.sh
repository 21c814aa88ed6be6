#!/usr/bin/env bash
# Runs Keel's main job locally: the booking API and the booking worker wrapped by Keel under the
# Lambda emulator, with the template's tables, topics and queues in a moto server, and a tour of
# requests printed with their answers, logs and EMF metrics. No AWS account, no Docker.
# Options: --serve (keep it up for your own curl requests), --no-tour, --port N (default 3000),
# --api-processes N.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-tools.sh
exec cargo run --quiet -p keel-tests --bin keel-local -- "$@"
