"""Translates a SAM template to CloudFormation offline, as the AWS::Serverless transform does:
local code paths replaced by S3 URIs (as `sam package` would), no managed-policy lookups.

    python translate-template.py <template> <out.json> [Name=Value ...]

Name=Value pairs are parameter values, resolved where the transform resolves them (a released
function's version follows its <Id>VersionDigest). The version digests default to 64 zeros.
"""
import json
import sys

from cfnlint.decode import decode
from samtranslator.translator.transform import transform

template_path, out_path, *pairs = sys.argv[1:]
parameters = {"BookingApiVersionDigest": "0" * 64, "BookingWorkerVersionDigest": "0" * 64}
for pair in pairs:
    name, _, value = pair.partition("=")
    parameters[name] = value

template, matches = decode(template_path)
if matches:
    sys.exit("\n".join(str(m) for m in matches))

for name, resource in template.get("Resources", {}).items():
    properties = resource.get("Properties", {})
    for key in ("CodeUri", "ContentUri"):
        if isinstance(properties.get(key), str) and not properties[key].startswith("s3://"):
            properties[key] = f"s3://keel-artifacts/{name}.zip"


class NoManagedPolicies:
    def load(self):
        return {}


translated = transform(template, parameters, NoManagedPolicies())
with open(out_path, "w") as out:
    json.dump(translated, out, indent=2, sort_keys=True, default=str)
print(f"{len(translated['Resources'])} CloudFormation resources")
