#!/usr/bin/env bash
# Lints the SAM template (infra/template.yaml) as CI does: cfn-lint on it; its offline
# translation to CloudFormation by samtranslator (local code paths replaced by S3 URIs, no
# managed-policy lookups); cfn-lint on the translation; checkov on the translation. The
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
AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" "$venv/bin/python" - "$template" "$translated" <<'PY'
import json, sys
from cfnlint.decode import decode
from samtranslator.translator.transform import transform

template_path, out_path = sys.argv[1], sys.argv[2]
template, matches = decode(template_path)
if matches:
    sys.exit("\n".join(str(m) for m in matches))

# Code is uploaded by `sam package`/`sam deploy`; the translation only needs S3 locations.
for name, resource in template.get("Resources", {}).items():
    properties = resource.get("Properties", {})
    for key in ("CodeUri", "ContentUri"):
        if isinstance(properties.get(key), str) and not properties[key].startswith("s3://"):
            properties[key] = f"s3://keel-artifacts/{name}.zip"

class NoManagedPolicies:
    def load(self):
        return {}

translated = transform(template, {}, NoManagedPolicies())
with open(out_path, "w") as out:
    json.dump(translated, out, indent=2, sort_keys=True, default=str)
print(f"{len(translated['Resources'])} CloudFormation resources")
PY

echo "== cfn-lint $translated"
"$venv/bin/cfn-lint" "$translated"

echo "== checkov $translated"
"$venv/bin/checkov" --quiet --compact --skip-download --framework cloudformation --file "$translated"
