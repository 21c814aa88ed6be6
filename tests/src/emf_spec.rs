//! A validator for CloudWatch Embedded Metric Format documents, written from the specification
//! ("Specification: Embedded metric format", CloudWatch User Guide) rather than from Keel's
//! writer, so that tests catch a document CloudWatch would drop silently.

use serde_json::{Map, Value};

/// Units the specification allows.
pub const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Largest log event CloudWatch Logs accepts, in bytes.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Whether `line` claims to be EMF (a JSON object with an `_aws` member).
pub fn is_emf(line: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v.get("_aws").is_some())
}

/// Validates one log line as an EMF document; returns the parsed document or every violation.
pub fn validate_line(line: &str) -> Result<Value, Vec<String>> {
    if line.len() > MAX_EVENT_BYTES {
        return Err(vec![format!(
            "document has {} bytes (at most {MAX_EVENT_BYTES})",
            line.len()
        )]);
    }
    let document: Value = serde_json::from_str(line).map_err(|e| vec![format!("not JSON: {e}")])?;
    validate(&document)?;
    Ok(document)
}

/// Validates a parsed EMF document.
pub fn validate(document: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let Some(root) = document.as_object() else {
        return Err(vec!["the root is not an object".into()]);
    };
    let Some(aws) = root.get("_aws").and_then(Value::as_object) else {
        return Err(vec!["`_aws` is missing or not an object".into()]);
    };
    match aws.get("Timestamp") {
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            let ms = n.as_u64().unwrap_or_default();
            // Milliseconds, not seconds: 2001-09-09 .. 2286-11-20.
            if !(1_000_000_000_000..10_000_000_000_000).contains(&ms) {
                errors.push(format!("_aws.Timestamp {ms} is not epoch milliseconds"));
            }
        }
        other => errors.push(format!("_aws.Timestamp must be an integer, found {other:?}")),
    }
    match aws.get("CloudWatchMetrics").and_then(Value::as_array) {
        Some(directives) if !directives.is_empty() => {
            for (i, directive) in directives.iter().enumerate() {
                validate_directive(root, directive, &format!("CloudWatchMetrics[{i}]"), &mut errors);
            }
        }
        _ => errors.push("_aws.CloudWatchMetrics must be a non-empty array".into()),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_name(what: &str, name: &Value, errors: &mut Vec<String>) -> Option<String> {
    match name.as_str() {
        Some(s) if !s.trim().is_empty() && s.chars().count() <= 255 => Some(s.to_owned()),
        _ => {
            errors.push(format!(
                "{what} must be a string of 1 to 255 characters, found {name}"
            ));
            None
        }
    }
}

fn validate_directive(root: &Map<String, Value>, directive: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(directive) = directive.as_object() else {
        errors.push(format!("{at} is not an object"));
        return;
    };
    for key in directive.keys() {
        if !["Namespace", "Dimensions", "Metrics"].contains(&key.as_str()) {
            errors.push(format!("{at} has the unknown member {key:?}"));
        }
    }
    match directive.get("Namespace") {
        Some(ns) => {
            if let Some(ns) = check_name(&format!("{at}.Namespace"), ns, errors) {
                if ns
                    .chars()
                    .any(|c| !(c.is_ascii_alphanumeric() || ".-_/#: ".contains(c)))
                {
                    errors.push(format!(
                        "{at}.Namespace {ns:?} holds characters CloudWatch refuses"
                    ));
                }
            }
        }
        None => errors.push(format!("{at}.Namespace is missing")),
    }
    match directive.get("Dimensions").and_then(Value::as_array) {
        Some(sets) if !sets.is_empty() => {
            for (i, set) in sets.iter().enumerate() {
                let Some(set) = set.as_array() else {
                    errors.push(format!("{at}.Dimensions[{i}] is not an array"));
                    continue;
                };
                if set.len() > 30 {
                    errors.push(format!(
                        "{at}.Dimensions[{i}] has {} dimensions (at most 30)",
                        set.len()
                    ));
                }
                for reference in set {
                    let Some(name) = check_name(&format!("{at}.Dimensions[{i}] entry"), reference, errors)
                    else {
                        continue;
                    };
                    match root.get(&name) {
                        Some(Value::String(v)) if !v.trim().is_empty() && v.chars().count() <= 1024 => {}
                        Some(other) => errors.push(format!(
                            "dimension {name:?} must be a string of 1 to 1024 characters at the root, found {other}"
                        )),
                        None => errors.push(format!("dimension {name:?} is not a member of the root")),
                    }
                }
            }
        }
        _ => errors.push(format!(
            "{at}.Dimensions must be a non-empty array of dimension sets"
        )),
    }
    let Some(metrics) = directive.get("Metrics").and_then(Value::as_array) else {
        errors.push(format!("{at}.Metrics is missing or not an array"));
        return;
    };
    if metrics.len() > 100 {
        errors.push(format!(
            "{at}.Metrics has {} definitions (at most 100)",
            metrics.len()
        ));
    }
    let mut seen = Vec::new();
    for (i, metric) in metrics.iter().enumerate() {
        let here = format!("{at}.Metrics[{i}]");
        let Some(metric) = metric.as_object() else {
            errors.push(format!("{here} is not an object"));
            continue;
        };
        for key in metric.keys() {
            if !["Name", "Unit", "StorageResolution"].contains(&key.as_str()) {
                errors.push(format!("{here} has the unknown member {key:?}"));
            }
        }
        if let Some(unit) = metric.get("Unit") {
            if !unit.as_str().is_some_and(|u| UNITS.contains(&u)) {
                errors.push(format!("{here}.Unit {unit} is not a CloudWatch unit"));
            }
        }
        if let Some(resolution) = metric.get("StorageResolution") {
            if !(resolution == 1 || resolution == 60) {
                errors.push(format!(
                    "{here}.StorageResolution must be 1 or 60, found {resolution}"
                ));
            }
        }
        let Some(name) = metric
            .get("Name")
            .and_then(|n| check_name(&format!("{here}.Name"), n, errors))
        else {
            continue;
        };
        if seen.contains(&name) {
            errors.push(format!("metric {name:?} is defined twice in {at}"));
        }
        match root.get(&name) {
            Some(Value::Number(_)) => {}
            Some(Value::Array(values)) => {
                if values.is_empty() || values.len() > 100 {
                    errors.push(format!("metric {name:?} has {} values (1 to 100)", values.len()));
                }
                if !values.iter().all(Value::is_number) {
                    errors.push(format!("metric {name:?} has a value that is not a number"));
                }
            }
            Some(other) => errors.push(format!(
                "metric {name:?} must be a number or an array of numbers, found {other}"
            )),
            None => errors.push(format!("metric {name:?} is not a member of the root")),
        }
        seen.push(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "_aws": {"Timestamp": 1_795_259_848_036u64, "CloudWatchMetrics": [{
                "Namespace": "Keel", "Dimensions": [["service"]],
                "Metrics": [{"Name": "Latency", "Unit": "Milliseconds", "StorageResolution": 1}]
            }]},
            "service": "booking-api", "Latency": [1, 2.5]
        })
    }

    #[test]
    fn accepts_the_specification_example() {
        assert_eq!(validate(&valid()), Ok(()));
    }

    #[test]
    fn catches_each_violation() {
        type Breakage = fn(&mut Value);
        let cases: [(&str, Breakage); 8] = [
            ("seconds timestamp", |d| {
                d["_aws"]["Timestamp"] = json!(1_795_259_848u64)
            }),
            ("missing dimension", |d| {
                d.as_object_mut().unwrap().remove("service");
            }),
            ("missing metric", |d| {
                d.as_object_mut().unwrap().remove("Latency");
            }),
            ("bad unit", |d| {
                d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("Nanoseconds")
            }),
            ("bad resolution", |d| {
                d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["StorageResolution"] = json!(5)
            }),
            ("string value", |d| d["Latency"] = json!("fast")),
            ("101 values", |d| d["Latency"] = json!(vec![1; 101])),
            ("numeric dimension", |d| d["service"] = json!(3)),
        ];
        for (what, break_it) in cases {
            let mut document = valid();
            break_it(&mut document);
            assert!(validate(&document).is_err(), "{what} was accepted");
        }
    }
}
