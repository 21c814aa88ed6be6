#!/usr/bin/env bash
# Runs Keel's whole test suite: unit, layer, harness and end-to-end tests against the local
# stand-ins (moto server, Lambda emulator), which it installs first if needed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-tools.sh
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
