#!/usr/bin/env bash
# Installs the tools Keel's tests and local runs use, pinned, into project virtualenvs:
# - .venv (or $KEEL_VENV): the local stand-ins, the moto server (DynamoDB, SNS, SQS, CloudWatch)
#   and the cargo-lambda Lambda emulator;
# - .venv-lint (or $KEEL_LINT_VENV): the template linters, cfn-lint, samtranslator and checkov
#   (apart: checkov pins its own boto3).
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
  "moto[server,dynamodb,sqs,sns,cloudwatch,logs]==5.2.5" --no-deps "cargo-lambda==1.9.2"
install "${KEEL_LINT_VENV:-$root/.venv-lint}" checkov \
  "cfn-lint==1.58.0" "aws-sam-translator==1.115.0" "checkov==3.3.30"
