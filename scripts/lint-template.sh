#!/usr/bin/env bash
# Lints the SAM template (infra/template.yaml) as CI does: cfn-lint on it; its offline
# translation to CloudFormation by samtranslator (scripts/translate-template.py); cfn-lint on the translation; checkov on the translation. The
# translation is kept in target/infra/template.translated.json. Installs the linters into
# .venv-lint (or $KEEL_LINT_VENV) on first use.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-tools.sh
venv="${KEEL_LINT_VENV:-$root/.venv-lint}"
template=infra/template.yaml
translated=target/infra/template.translated.json
mkdir -p target/infra

echo "== cfn-lint $template"
"$venv/bin/cfn-lint" "$template"

echo "== samtranslator $template -> $translated"
AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" "$venv/bin/python" scripts/translate-template.py "$template" "$translated"

echo "== cfn-lint $translated"
"$venv/bin/cfn-lint" "$translated"

echo "== checkov $translated"
"$venv/bin/checkov" --quiet --compact --skip-download --framework cloudformation --file "$translated"
