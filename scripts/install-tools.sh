#!/usr/bin/env bash
# Installs the local stand-ins Keel's tests and local runs use into a project virtualenv
# (.venv, or $KEEL_VENV): the moto server (DynamoDB, SNS, SQS, CloudWatch) and the cargo-lambda
# Lambda emulator. Idempotent: returns at once when the pinned versions are already there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KEEL_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

requirements=(
  "moto[server,dynamodb,sqs,sns,cloudwatch,logs]==5.2.5"
)
no_deps=(
  "cargo-lambda==1.9.2"
)
stamp="$venv/.keel-tools"
wanted="$(printf '%s\n' "${requirements[@]}" "${no_deps[@]}")"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" && -x "$venv/bin/moto_server" && -x "$venv/bin/cargo-lambda" ]]; then
  exit 0
fi

echo "keel: installing test tools into $venv" >&2
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${no_deps[@]}"
printf '%s\n' "$wanted" > "$stamp"
