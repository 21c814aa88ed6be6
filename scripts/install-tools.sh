#!/usr/bin/env bash
# Installs the tools Keel's tests and local runs use, pinned, into project virtualenvs:
# - .venv (or $KEEL_VENV): the local stand-ins, the moto server (DynamoDB, SNS, SQS, CloudWatch)
#   and the cargo-lambda Lambda emulator, and botocore (pinned: its CloudWatch model is what
#   scripts/validate-cloudwatch.py checks alarms and dashboards against, and its CBOR codec is
#   what tests/moto_server.py answers aws-sdk-cloudwatch with);
# - .venv-lint (or $KEEL_LINT_VENV): the template linters, cfn-lint, samtranslator and checkov
#   (apart: checkov pins its own boto3).
# - with --arm64 (scripts/test.sh), what building the arm64 extension layer takes on an x86_64
#   machine: the aarch64-unknown-linux-gnu Rust target and a cross linker (Debian's
#   gcc-aarch64-linux-gnu, when run as root); without them the arm64 layer is skipped.
# Idempotent: returns at once when the pinned versions are already there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

# install VENV BINARY REQUIREMENT... [--no-deps REQUIREMENT...]: BINARY in VENV/bin tells it is there
install() {
  local venv=$1 check=$2
  shift 2
  local requirements=() no_deps=()
  while (($#)); do
    if [[ $1 == --no-deps ]]; then
      shift
      no_deps=("$@")
      break
    fi
    requirements+=("$1")
    shift
  done
  local stamp="$venv/.keel-tools"
  local wanted
  wanted="$(printf '%s\n' "${requirements[@]}" ${no_deps[@]+"${no_deps[@]}"})"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" && -x "$venv/bin/$check" ]]; then
    return 0
  fi
  echo "keel: installing tools into $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
  if ((${#no_deps[@]})); then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${no_deps[@]}"
  fi
  printf '%s\n' "$wanted" > "$stamp"
}

install "${KEEL_VENV:-$root/.venv}" cargo-lambda \
  "moto[server,dynamodb,sqs,sns,cloudwatch,logs]==5.2.5" "boto3==1.44.8" "botocore==1.44.8" \
  --no-deps "cargo-lambda==1.9.2"
install "${KEEL_LINT_VENV:-$root/.venv-lint}" checkov \
  "cfn-lint==1.58.0" "aws-sam-translator==1.115.0" "checkov==3.3.30"

if [[ "${1:-}" == --arm64 && "$(uname -m)" == x86_64 ]]; then
  skipped() { echo "keel: $1: the arm64 extension layer will be skipped" >&2; }
  if command -v rustup > /dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
      rustup target add aarch64-unknown-linux-gnu > /dev/null 2>&1 || skipped "the aarch64 Rust target could not be installed"
    fi
  fi
  if ! command -v aarch64-linux-gnu-gcc > /dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get > /dev/null 2>&1; then
      echo "keel: installing gcc-aarch64-linux-gnu" >&2
      { apt-get install -y -q gcc-aarch64-linux-gnu || { apt-get update -q && apt-get install -y -q gcc-aarch64-linux-gnu; }; } > /dev/null 2>&1 \
        || skipped "gcc-aarch64-linux-gnu could not be installed"
    else
      skipped "no aarch64-linux-gnu-gcc (Debian: gcc-aarch64-linux-gnu)"
    fi
  fi
fi
