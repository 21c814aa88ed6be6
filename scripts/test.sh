#!/usr/bin/env bash
# Runs Keel's whole test suite: unit, layer, harness and end-to-end tests against the local
# stand-ins (moto server, Lambda emulator), the template linters, and the arm64 layer build,
# whose tools it installs first if needed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-tools.sh --arm64
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
