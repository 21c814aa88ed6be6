"""Validates CloudWatch API inputs offline, against the AWS API model botocore ships.

Usage: validate-cloudwatch.py [FILE]   (reads standard input without FILE, or with "-")

The input is a JSON list of calls, each {"operation": "PutMetricAlarm" | "PutDashboard",
"input": {...}}: the request as the API takes it (placeholders already resolved). Each input is
checked with botocore's own parameter validation (required members, unknown members, types,
minimum lengths and values) against the `cloudwatch` service model, then against the model's
constraints that botocore leaves to the service (maximum lengths, counts and values, enums,
patterns); a PutDashboard's DashboardBody must also be a JSON object. No account and no network
are used.

Exits 0 when every input is valid; otherwise exits 1 and prints every error, each with its
operation and the alarm's or dashboard's name. Bad usage or unreadable input exits 2.

Run it with the project virtualenv's python (`scripts/install-tools.sh` installs botocore there
with moto): `.venv/bin/python scripts/validate-cloudwatch.py calls.json`.
"""

import json
import re
import sys

import botocore.session
from botocore.validate import ParamValidator

OPERATIONS = {"PutMetricAlarm": "AlarmName", "PutDashboard": "DashboardName"}


def constraint_errors(value, shape, path):
    """The model's max, enum and pattern constraints that `value` breaks, as messages."""
    errors = []
    metadata = shape.metadata
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in value.items():
            if name in shape.members:
                errors += constraint_errors(member, shape.members[name], f"{path}.{name}")
        return errors
    if shape.type_name == "list" and isinstance(value, list):
        if "max" in metadata and len(value) > metadata["max"]:
            errors.append(f"{path}: {len(value)} items, at most {metadata['max']} allowed")
        for index, item in enumerate(value):
            errors += constraint_errors(item, shape.member, f"{path}[{index}]")
        return errors
    if shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            errors += constraint_errors(key, shape.key, f"{path} key {key!r}")
            errors += constraint_errors(item, shape.value, f"{path}[{key!r}]")
        return errors
    if shape.type_name == "string" and isinstance(value, str):
        if "max" in metadata and len(value) > metadata["max"]:
            errors.append(f"{path}: length {len(value)}, at most {metadata['max']} allowed")
        if "enum" in metadata and value not in metadata["enum"]:
            errors.append(f"{path}: {value!r} is not one of {', '.join(metadata['enum'])}")
        # Smithy patterns are not anchored: the value must contain a match.
        if "pattern" in metadata and not re.search(metadata["pattern"], value):
            errors.append(f"{path}: {value!r} does not match the pattern {metadata['pattern']!r}")
        return errors
    if shape.type_name in ("integer", "long", "float", "double") and isinstance(value, (int, float)):
        if not isinstance(value, bool) and "max" in metadata and value > metadata["max"]:
            errors.append(f"{path}: {value} is above the maximum {metadata['max']}")
    return errors


def validate(calls):
    """Every error of `calls` (a decoded JSON list), each as one line."""
    if not isinstance(calls, list):
        return [f"the input must be a JSON list of calls, not {type(calls).__name__}"]
    model = botocore.session.get_session().get_service_model("cloudwatch")
    validator = ParamValidator()
    errors = []
    for index, call in enumerate(calls):
        where = f"call {index}"
        if not isinstance(call, dict) or set(call) != {"operation", "input"}:
            errors.append(f"{where}: must be an object with exactly `operation` and `input`")
            continue
        operation, params = call["operation"], call["input"]
        if operation not in OPERATIONS:
            errors.append(f"{where}: unsupported operation {operation!r} (one of {', '.join(OPERATIONS)})")
            continue
        name = params.get(OPERATIONS[operation]) if isinstance(params, dict) else None
        if name is not None:
            where = f"{operation} {name!r}"
        else:
            where = f"{where} ({operation}, no {OPERATIONS[operation]})"
        shape = model.operation_model(operation).input_shape
        report = validator.validate(params, shape)
        if report.has_errors():
            errors += [f"{where}: {line}" for line in report.generate_report().splitlines() if line.strip()]
        errors += [f"{where}: {line}" for line in constraint_errors(params, shape, "input")]
        body_text = params.get("DashboardBody") if isinstance(params, dict) else None
        if operation == "PutDashboard" and isinstance(body_text, str):
            try:
                body = json.loads(body_text)
            except ValueError as error:
                errors.append(f"{where}: DashboardBody is not JSON: {error}")
            else:
                if not isinstance(body, dict):
                    errors.append(f"{where}: DashboardBody is JSON but not an object")
    return errors


def main(argv):
    if len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = argv[1] if len(argv) == 2 else "-"
    try:
        if path == "-":
            calls = json.load(sys.stdin)
        else:
            with open(path, encoding="utf-8") as file:
                calls = json.load(file)
    except (OSError, ValueError) as error:
        print(f"validate-cloudwatch: cannot read {path}: {error}", file=sys.stderr)
        return 2
    errors = validate(calls)
    if errors:
        count = len(calls) if isinstance(calls, list) else 0
        print(f"validate-cloudwatch: {len(errors)} error(s) in {count} call(s):")
        for error in errors:
            print(f"  {error}")
        return 1
    print(f"validate-cloudwatch: {len(calls)} call(s) valid against the cloudwatch model")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
