//! The alarms of every released service and every generated dashboard are what CloudWatch's API
//! takes: offline, each `PutMetricAlarm` and `PutDashboard` input passes
//! `scripts/validate-cloudwatch.py` (botocore's validation against the `cloudwatch` API model);
//! through the AWS SDK for Rust, moto creates each one and reads it back as it was sent.
//!
//! Placeholders are resolved with sample values ([`sample`]), as a deployment of the stack
//! `keel-test` in `us-east-1` would resolve them. Alarms come from [`alarms::document`] (the
//! `alarms/<service>.json` form), dashboards from the generated `dashboards/<service>.json`.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{LazyLock, OnceLock};

use aws_sdk_cloudwatch::operation::put_metric_alarm::builders::PutMetricAlarmFluentBuilder;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, Metric, MetricAlarm, MetricDataQuery, MetricStat, StandardUnit, Statistic,
};
use keel_infra::{alarms, placeholders, services};
use serde_json::{json, Map, Value};

const STACK: &str = "keel-test";
const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
const PARTITION: &str = "aws";
/// The version number `${<Function>.Version.Version}` stands for.
const VERSION: &str = "7";
/// Sample values of the dashboards' price parameters.
const PRICES: [(&str, &str); 2] = [
    ("PricePerGbSecond", "0.0000166667"),
    ("PricePerMillionRequests", "0.20"),
];

/// The template's parameters and their defaults.
static TEMPLATE_DEFAULTS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    let template = keel_infra::generated()
        .into_iter()
        .find(|file| file.path.as_os_str() == "infra/template.yaml")
        .expect("the template is generated");
    let yaml = &yaml_rust2::YamlLoader::load_from_str(&template.contents).unwrap()[0];
    yaml["Parameters"]
        .as_hash()
        .into_iter()
        .flatten()
        .filter_map(|(name, parameter)| {
            let default = &parameter["Default"];
            let value = default
                .as_str()
                .map(str::to_owned)
                .or_else(|| default.as_i64().map(|n| n.to_string()))
                .or_else(|| default.as_f64().map(|n| n.to_string()))?;
            Some((name.as_str()?.to_owned(), value))
        })
        .collect()
});

/// The sample value of a placeholder, as CloudFormation would resolve it in the stack
/// `keel-test` (account `123456789012`, `us-east-1`): pseudo parameters; a function's name, ARN
/// and released version (`7`); a topic's ARN and name; a queue's URL, name and ARN (ids ending
/// `Queue` or `DeadLetters`); a table's name and ARN; the price parameters; the threshold
/// parameters and any other template parameter by its default. `None` for anything else.
fn sample(name: &str) -> Option<String> {
    let arn =
        |service: &str, resource: &str| format!("arn:{PARTITION}:{service}:{REGION}:{ACCOUNT}:{resource}");
    let (id, attribute) = match name.split_once('.') {
        Some((id, attribute)) => (id, Some(attribute)),
        None => (name, None),
    };
    let physical = format!("{STACK}-{id}");
    let queue = id.ends_with("Queue") || id.ends_with("DeadLetters");
    let value = match (id, attribute) {
        ("AWS::StackName", None) => STACK.to_owned(),
        ("AWS::Region", None) => REGION.to_owned(),
        ("AWS::AccountId", None) => ACCOUNT.to_owned(),
        ("AWS::Partition", None) => PARTITION.to_owned(),
        ("AWS::URLSuffix", None) => "amazonaws.com".to_owned(),
        (_, Some("Version.Version")) if id.ends_with("Function") => VERSION.to_owned(),
        (_, None) if id.ends_with("Function") => physical,
        (_, Some("Arn")) if id.ends_with("Function") => arn("lambda", &format!("function:{physical}")),
        (_, None | Some("TopicArn")) if id.ends_with("Topic") => arn("sns", &physical),
        (_, Some("TopicName")) if id.ends_with("Topic") => physical,
        (_, None | Some("QueueUrl")) if queue => {
            format!("https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical}")
        }
        (_, Some("QueueName")) if queue => physical,
        (_, Some("Arn")) if queue => arn("sqs", &physical),
        (_, None) if id.ends_with("Table") => physical,
        (_, Some("Arn")) if id.ends_with("Table") => arn("dynamodb", &format!("table/{physical}")),
        (_, None) => PRICES
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .chain(
                alarms::PARAMETERS
                    .iter()
                    .map(|parameter| (parameter.name.to_owned(), parameter.default.to_string())),
            )
            .chain(TEMPLATE_DEFAULTS.iter().cloned())
            .find(|(parameter, _)| parameter == id)
            .map(|(_, value)| value)?,
        _ => return None,
    };
    Some(value)
}

/// `value` with the placeholders of every string resolved with [`sample`].
fn resolved(value: &Value, what: &str) -> Value {
    match value {
        Value::String(text) => Value::String(
            placeholders::resolve(text, sample)
                .unwrap_or_else(|error| panic!("{what}: {error} (in {text:?})")),
        ),
        Value::Array(items) => items.iter().map(|item| resolved(item, what)).collect(),
        Value::Object(fields) => fields
            .iter()
            .map(|(key, item)| (key.clone(), resolved(item, what)))
            .collect::<Map<_, _>>()
            .into(),
        other => other.clone(),
    }
}

/// Every alarm of every released service as `PutMetricAlarm` input, resolved, taken from its
/// `alarms/<service>.json` form.
fn alarm_inputs() -> Vec<Value> {
    let mut inputs = Vec::new();
    for service in services::RELEASED {
        let document = alarms::document(&service);
        let entries = document["Alarms"]
            .as_array()
            .expect("the document lists its alarms");
        assert_eq!(
            entries.len(),
            alarms::for_service(&service).len(),
            "{}",
            service.name
        );
        for entry in entries {
            let input = &entry["PutMetricAlarm"];
            assert!(
                input.is_object(),
                "{}: an alarm without PutMetricAlarm: {entry}",
                service.name
            );
            inputs.push(resolved(
                input,
                &format!("{} alarm {}", service.name, input["AlarmName"]),
            ));
        }
    }
    assert!(!inputs.is_empty(), "the released services have no alarms");
    inputs
}

/// Every generated dashboard (`dashboards/<service>.json`): its service and its body's text,
/// resolved.
fn dashboards() -> Vec<(String, String)> {
    keel_infra::generated()
        .into_iter()
        .filter_map(|file| {
            let path = file.path.to_str()?.to_owned();
            let service = path
                .strip_prefix("dashboards/")?
                .strip_suffix(".json")?
                .to_owned();
            let body = placeholders::resolve(&file.contents, sample)
                .unwrap_or_else(|error| panic!("{path}: {error}"));
            Some((service, body))
        })
        .collect()
}

/// The `PutDashboard` input of a dashboard.
fn dashboard_input(service: &str, body: &str) -> Value {
    json!({"DashboardName": format!("{STACK}-{service}"), "DashboardBody": body})
}

/// Every call the stack's alarms and dashboards make, as `scripts/validate-cloudwatch.py` reads
/// them.
fn calls() -> Value {
    let alarms = alarm_inputs()
        .into_iter()
        .map(|input| json!({"operation": "PutMetricAlarm", "input": input}));
    let dashboards = dashboards().into_iter().map(
        |(service, body)| json!({"operation": "PutDashboard", "input": dashboard_input(&service, &body)}),
    );
    alarms.chain(dashboards).collect()
}

/// Installs the project's tools once per test process (`scripts/install-tools.sh`, which returns
/// at once when they are there).
fn install_tools() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        let output = Command::new("bash")
            .arg(keel_tests::workspace_root().join("scripts/install-tools.sh"))
            .output()
            .map_err(|error| format!("running scripts/install-tools.sh: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/install-tools.sh failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(error) = installed {
        panic!("{error}");
    }
}

/// Runs `scripts/validate-cloudwatch.py` on `calls`: whether it passed them, and what it printed.
fn validate(calls: &Value) -> (bool, String) {
    install_tools();
    let python = keel_tests::venv().join("bin/python");
    let mut child = Command::new(&python)
        .arg(keel_tests::workspace_root().join("scripts/validate-cloudwatch.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("running {}: {error}", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(calls.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

#[test]
fn every_released_service_has_a_generated_dashboard() {
    let dashboards: BTreeSet<String> = dashboards().into_iter().map(|(service, _)| service).collect();
    assert!(
        !dashboards.is_empty(),
        "keel_infra::generated() holds no dashboards/<service>.json"
    );
    for service in services::RELEASED {
        assert!(
            dashboards.contains(service.name),
            "no dashboards/{}.json among the generated dashboards {dashboards:?}",
            service.name
        );
    }
}

#[test]
fn alarms_and_dashboards_are_valid_cloudwatch_api_inputs() {
    let calls = calls();
    let (passed, output) = validate(&calls);
    assert!(passed, "{output}");
    assert!(
        output.contains(&format!("{} call(s) valid", calls.as_array().unwrap().len())),
        "{output}"
    );
}

#[test]
fn the_validator_catches_inputs_cloudwatch_refuses() {
    // A generated alarm, valid (the test above), then broken one way at a time.
    let valid = alarm_inputs().remove(0);
    let broken = |name: &str, change: &dyn Fn(&mut Map<String, Value>)| {
        let mut input = valid.clone();
        let fields = input.as_object_mut().unwrap();
        fields.insert("AlarmName".into(), name.into());
        change(fields);
        input
    };
    let bad_type = broken("keel-test-bad-type", &|fields| {
        fields.insert("EvaluationPeriods".into(), "x".into());
    });
    let unknown_member = broken("keel-test-unknown-member", &|fields| {
        fields.insert("Treshold".into(), 1.into());
    });
    let bad_enum = broken("keel-test-bad-enum", &|fields| {
        fields.insert("ComparisonOperator".into(), "GreaterThan".into());
    });
    let no_name = broken("", &|fields| {
        fields.remove("AlarmName");
    });
    let calls = json!([
        {"operation": "PutMetricAlarm", "input": bad_type},
        {"operation": "PutMetricAlarm", "input": unknown_member},
        {"operation": "PutMetricAlarm", "input": bad_enum},
        {"operation": "PutMetricAlarm", "input": no_name},
        {"operation": "PutDashboard",
         "input": {"DashboardName": "keel-test-not-json", "DashboardBody": "{\"widgets\": ["}},
        {"operation": "PutDashboard", "input": {"DashboardName": "keel-test-no-body"}},
        {"operation": "PutDashboard", "input": dashboard_input("fine", "{\"widgets\": []}")},
    ]);
    let (passed, output) = validate(&calls);
    assert!(!passed, "the validator passed bad inputs:\n{output}");
    for expected in [
        "PutMetricAlarm 'keel-test-bad-type': Invalid type for parameter EvaluationPeriods",
        "PutMetricAlarm 'keel-test-unknown-member': Unknown parameter in input: \"Treshold\"",
        "PutMetricAlarm 'keel-test-bad-enum': input.ComparisonOperator: 'GreaterThan' is not one of",
        "(PutMetricAlarm, no AlarmName): Missing required parameter in input: \"AlarmName\"",
        "PutDashboard 'keel-test-not-json': DashboardBody is not JSON",
        "PutDashboard 'keel-test-no-body': Missing required parameter in input: \"DashboardBody\"",
    ] {
        assert!(output.contains(expected), "missing {expected:?} in:\n{output}");
    }
    assert!(
        !output.contains("keel-test-fine"),
        "a valid dashboard was reported:\n{output}"
    );
}

/// The members of a JSON object, read one by one: [`Fields::finish`] fails on any member not
/// read, so that a member the conversion does not know is never dropped silently.
struct Fields<'a> {
    what: String,
    fields: &'a Map<String, Value>,
    read: BTreeSet<&'a str>,
}

impl<'a> Fields<'a> {
    fn new(what: impl Into<String>, value: &'a Value) -> Result<Self, String> {
        let what = what.into();
        let fields = value
            .as_object()
            .ok_or_else(|| format!("{what}: not an object: {value}"))?;
        Ok(Self {
            what,
            fields,
            read: BTreeSet::new(),
        })
    }

    fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.what)
    }

    fn get(&mut self, key: &'a str) -> Option<&'a Value> {
        self.read.insert(key);
        self.fields.get(key)
    }

    fn typed<T>(
        &mut self,
        key: &'a str,
        kind: &str,
        convert: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => convert(value)
                .map(Some)
                .ok_or_else(|| format!("{}: not {kind}: {value}", self.path(key))),
        }
    }

    fn string(&mut self, key: &'a str) -> Result<Option<String>, String> {
        self.typed(key, "a string", |v| v.as_str().map(str::to_owned))
    }

    fn int(&mut self, key: &'a str) -> Result<Option<i32>, String> {
        self.typed(key, "a 32-bit integer", |v| {
            v.as_i64().and_then(|n| i32::try_from(n).ok())
        })
    }

    fn float(&mut self, key: &'a str) -> Result<Option<f64>, String> {
        self.typed(key, "a number", Value::as_f64)
    }

    fn boolean(&mut self, key: &'a str) -> Result<Option<bool>, String> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    fn strings(&mut self, key: &'a str) -> Result<Option<Vec<String>>, String> {
        self.typed(key, "a list of strings", |v| {
            v.as_array()?
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
    }

    /// A list, each item converted by `convert` (given its path).
    fn list<T>(
        &mut self,
        key: &'a str,
        convert: impl Fn(String, &'a Value) -> Result<T, String>,
    ) -> Result<Option<Vec<T>>, String> {
        let path = self.path(key);
        match self.typed(key, "a list", Value::as_array)? {
            None => Ok(None),
            Some(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| convert(format!("{path}[{i}]"), item))
                .collect::<Result<Vec<T>, String>>()
                .map(Some),
        }
    }

    /// An object, converted by `convert` (given its path).
    fn object<T>(
        &mut self,
        key: &'a str,
        convert: impl FnOnce(String, &'a Value) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        let path = self.path(key);
        self.get(key).map(|value| convert(path, value)).transpose()
    }

    /// An SDK enum: fails on a value the SDK does not know.
    fn known<T: for<'s> From<&'s str>>(&mut self, key: &'a str, known: &[&str]) -> Result<Option<T>, String> {
        match self.string(key)? {
            Some(value) if !known.contains(&value.as_str()) => {
                Err(format!("{}: {value:?} is not one of {known:?}", self.path(key)))
            }
            value => Ok(value.as_deref().map(T::from)),
        }
    }

    /// Fails on any member not read.
    fn finish(self) -> Result<(), String> {
        let unknown: Vec<&String> = self
            .fields
            .keys()
            .filter(|key| !self.read.contains(key.as_str()))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: the conversion to the SDK does not know {unknown:?}; \
                 add them to infra/tests/it/cloudwatch.rs",
                self.what
            ))
        }
    }
}

fn dimension(what: String, value: &Value) -> Result<Dimension, String> {
    let mut fields = Fields::new(what, value)?;
    let dimension = Dimension::builder()
        .set_name(fields.string("Name")?)
        .set_value(fields.string("Value")?)
        .build();
    fields.finish()?;
    Ok(dimension)
}

fn metric(what: String, value: &Value) -> Result<Metric, String> {
    let mut fields = Fields::new(what, value)?;
    let metric = Metric::builder()
        .set_namespace(fields.string("Namespace")?)
        .set_metric_name(fields.string("MetricName")?)
        .set_dimensions(fields.list("Dimensions", dimension)?)
        .build();
    fields.finish()?;
    Ok(metric)
}

fn metric_stat(what: String, value: &Value) -> Result<MetricStat, String> {
    let mut fields = Fields::new(what, value)?;
    let stat = MetricStat::builder()
        .set_metric(fields.object("Metric", metric)?)
        .set_period(fields.int("Period")?)
        .set_stat(fields.string("Stat")?)
        .set_unit(fields.known("Unit", StandardUnit::values())?)
        .build();
    fields.finish()?;
    Ok(stat)
}

fn metric_data_query(what: String, value: &Value) -> Result<MetricDataQuery, String> {
    let mut fields = Fields::new(what, value)?;
    let query = MetricDataQuery::builder()
        .set_id(fields.string("Id")?)
        .set_metric_stat(fields.object("MetricStat", metric_stat)?)
        .set_expression(fields.string("Expression")?)
        .set_label(fields.string("Label")?)
        .set_return_data(fields.boolean("ReturnData")?)
        .set_period(fields.int("Period")?)
        .set_account_id(fields.string("AccountId")?)
        .build();
    fields.finish()?;
    Ok(query)
}

/// The `PutMetricAlarm` call of `input` (its JSON form), member by member; fails on a member
/// it does not know or of the wrong type.
fn put_metric_alarm(
    client: &aws_sdk_cloudwatch::Client,
    input: &Value,
) -> Result<PutMetricAlarmFluentBuilder, String> {
    let mut fields = Fields::new(format!("PutMetricAlarm {}", input["AlarmName"]), input)?;
    let call = client
        .put_metric_alarm()
        .set_alarm_name(fields.string("AlarmName")?)
        .set_alarm_description(fields.string("AlarmDescription")?)
        .set_actions_enabled(fields.boolean("ActionsEnabled")?)
        .set_alarm_actions(fields.strings("AlarmActions")?)
        .set_ok_actions(fields.strings("OKActions")?)
        .set_insufficient_data_actions(fields.strings("InsufficientDataActions")?)
        .set_namespace(fields.string("Namespace")?)
        .set_metric_name(fields.string("MetricName")?)
        .set_dimensions(fields.list("Dimensions", dimension)?)
        .set_statistic(fields.known("Statistic", Statistic::values())?)
        .set_extended_statistic(fields.string("ExtendedStatistic")?)
        .set_period(fields.int("Period")?)
        .set_unit(fields.known("Unit", StandardUnit::values())?)
        .set_metrics(fields.list("Metrics", metric_data_query)?)
        .set_evaluation_periods(fields.int("EvaluationPeriods")?)
        .set_datapoints_to_alarm(fields.int("DatapointsToAlarm")?)
        .set_threshold(fields.float("Threshold")?)
        .set_threshold_metric_id(fields.string("ThresholdMetricId")?)
        .set_comparison_operator(fields.known("ComparisonOperator", ComparisonOperator::values())?)
        .set_treat_missing_data(fields.string("TreatMissingData")?)
        .set_evaluate_low_sample_count_percentile(fields.string("EvaluateLowSampleCountPercentile")?);
    fields.finish()?;
    Ok(call)
}

/// Inserts `key` when `value` is set (a list: when it is not empty).
fn put(fields: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    match value {
        Some(Value::Array(items)) if items.is_empty() => {}
        Some(value) => {
            fields.insert(key.to_owned(), value);
        }
        None => {}
    }
}

fn dimensions_json(dimensions: Option<&[Dimension]>) -> Option<Value> {
    dimensions.map(|dimensions| {
        dimensions
            .iter()
            .map(|d| json!({"Name": d.name(), "Value": d.value()}))
            .collect()
    })
}

fn metric_data_query_json(query: &MetricDataQuery) -> Value {
    let mut fields = Map::new();
    put(&mut fields, "Id", query.id().map(Value::from));
    put(
        &mut fields,
        "MetricStat",
        query.metric_stat().map(|stat| {
            let mut out = Map::new();
            put(
                &mut out,
                "Metric",
                stat.metric().map(|metric| {
                    let mut out = Map::new();
                    put(&mut out, "Namespace", metric.namespace().map(Value::from));
                    put(&mut out, "MetricName", metric.metric_name().map(Value::from));
                    put(
                        &mut out,
                        "Dimensions",
                        dimensions_json(metric.dimensions.as_deref()),
                    );
                    out.into()
                }),
            );
            put(&mut out, "Period", stat.period().map(Value::from));
            put(&mut out, "Stat", stat.stat().map(Value::from));
            put(&mut out, "Unit", stat.unit().map(|u| u.as_str().into()));
            out.into()
        }),
    );
    put(&mut fields, "Expression", query.expression().map(Value::from));
    put(&mut fields, "Label", query.label().map(Value::from));
    put(&mut fields, "ReturnData", query.return_data().map(Value::from));
    put(&mut fields, "Period", query.period().map(Value::from));
    put(&mut fields, "AccountId", query.account_id().map(Value::from));
    fields.into()
}

/// A described alarm in the form of `PutMetricAlarm` input (what CloudWatch keeps of it; empty
/// lists left out).
fn alarm_json(alarm: &MetricAlarm) -> Value {
    let strings = |list: &[String]| Some(list.iter().map(|s| Value::from(s.as_str())).collect());
    let mut fields = Map::new();
    put(&mut fields, "AlarmName", alarm.alarm_name().map(Value::from));
    put(
        &mut fields,
        "AlarmDescription",
        alarm.alarm_description().map(Value::from),
    );
    put(
        &mut fields,
        "ActionsEnabled",
        alarm.actions_enabled().map(Value::from),
    );
    put(&mut fields, "AlarmActions", strings(alarm.alarm_actions()));
    put(&mut fields, "OKActions", strings(alarm.ok_actions()));
    put(
        &mut fields,
        "InsufficientDataActions",
        strings(alarm.insufficient_data_actions()),
    );
    put(&mut fields, "Namespace", alarm.namespace().map(Value::from));
    put(&mut fields, "MetricName", alarm.metric_name().map(Value::from));
    put(
        &mut fields,
        "Dimensions",
        dimensions_json(Some(alarm.dimensions())),
    );
    put(
        &mut fields,
        "Statistic",
        alarm.statistic().map(|s| s.as_str().into()),
    );
    put(
        &mut fields,
        "ExtendedStatistic",
        alarm.extended_statistic().map(Value::from),
    );
    put(&mut fields, "Period", alarm.period().map(Value::from));
    put(&mut fields, "Unit", alarm.unit().map(|u| u.as_str().into()));
    put(
        &mut fields,
        "Metrics",
        Some(alarm.metrics().iter().map(metric_data_query_json).collect()),
    );
    put(
        &mut fields,
        "EvaluationPeriods",
        alarm.evaluation_periods().map(Value::from),
    );
    put(
        &mut fields,
        "DatapointsToAlarm",
        alarm.datapoints_to_alarm().map(Value::from),
    );
    put(&mut fields, "Threshold", alarm.threshold().map(Value::from));
    put(
        &mut fields,
        "ThresholdMetricId",
        alarm.threshold_metric_id().map(Value::from),
    );
    put(
        &mut fields,
        "ComparisonOperator",
        alarm.comparison_operator().map(|c| c.as_str().into()),
    );
    put(
        &mut fields,
        "TreatMissingData",
        alarm.treat_missing_data().map(Value::from),
    );
    put(
        &mut fields,
        "EvaluateLowSampleCountPercentile",
        alarm.evaluate_low_sample_count_percentile().map(Value::from),
    );
    fields.into()
}

/// What CloudWatch keeps of a `PutMetricAlarm` input: the threshold as a double, actions
/// enabled unless disabled.
fn as_kept(input: &Value) -> Value {
    let mut input = input.clone();
    let fields = input.as_object_mut().unwrap();
    if let Some(threshold) = fields.get("Threshold").and_then(Value::as_f64) {
        fields.insert("Threshold".into(), threshold.into());
    }
    fields.entry("ActionsEnabled").or_insert(true.into());
    input
}

/// The fields on which `sent` and `read` differ, one line each.
fn differences(sent: &Value, read: &Value) -> String {
    let empty = Map::new();
    let sent = sent.as_object().unwrap_or(&empty);
    let read = read.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = sent.keys().chain(read.keys()).collect();
    keys.into_iter()
        .filter(|key| sent.get(*key) != read.get(*key))
        .map(|key| {
            let show = |value: Option<&Value>| value.map_or("(absent)".to_owned(), Value::to_string);
            format!(
                "  {key}: sent {}, read back {}",
                show(sent.get(key)),
                show(read.get(key))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_conversion_to_the_sdk_takes_every_member_and_refuses_unknown_ones() {
    let config = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatch::config::Region::new(REGION))
        .build();
    let client = aws_sdk_cloudwatch::Client::from_conf(config);
    let inputs = alarm_inputs();
    let math = inputs
        .iter()
        .find(|input| input.get("Metrics").is_some())
        .expect("an alarm on metric math");
    let percentile = inputs
        .iter()
        .find(|input| input.get("ExtendedStatistic").is_some())
        .expect("an alarm on a percentile");
    for input in [math, percentile] {
        let call = put_metric_alarm(&client, input).unwrap();
        let built = call.as_input();
        assert_eq!(built.get_alarm_name().as_deref(), input["AlarmName"].as_str());
        assert_eq!(*built.get_threshold(), input["Threshold"].as_f64());
        assert_eq!(
            built.get_metrics().as_ref().map_or(0, Vec::len),
            input["Metrics"].as_array().map_or(0, Vec::len)
        );
    }

    let mut unknown = math.clone();
    unknown["Metrics"][0]["MetricStat"]["Metric"]["Region"] = json!(REGION);
    let error = put_metric_alarm(&client, &unknown).unwrap_err();
    assert!(
        error.contains(".Metrics[0].MetricStat.Metric: the conversion to the SDK does not know [\"Region\"]"),
        "{error}"
    );
    let mut unknown = percentile.clone();
    unknown["Tags"] = json!([]);
    let error = put_metric_alarm(&client, &unknown).unwrap_err();
    assert!(error.contains("does not know [\"Tags\"]"), "{error}");

    let mut wrong = percentile.clone();
    wrong["Statistic"] = json!("Median");
    let error = put_metric_alarm(&client, &wrong).unwrap_err();
    assert!(error.contains(".Statistic: \"Median\" is not one of"), "{error}");
    let mut wrong = percentile.clone();
    wrong["EvaluationPeriods"] = json!("3");
    let error = put_metric_alarm(&client, &wrong).unwrap_err();
    assert!(
        error.contains(".EvaluationPeriods: not a 32-bit integer: \"3\""),
        "{error}"
    );
}

#[test]
fn alarms_and_dashboards_read_back_from_cloudwatch_as_sent() {
    install_tools();
    let moto = keel_tests::Moto::start().expect("moto starts");
    let runtime = keel_tests::runtime().unwrap();
    let client = moto.cloudwatch();
    let inputs = alarm_inputs();
    let names: BTreeSet<&str> = inputs
        .iter()
        .map(|input| input["AlarmName"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), inputs.len(), "two alarms share a name");
    let dashboards = dashboards();

    runtime.block_on(async {
        for input in &inputs {
            put_metric_alarm(&client, input)
                .unwrap_or_else(|error| panic!("{error}"))
                .send()
                .await
                .unwrap_or_else(|error| {
                    panic!(
                        "PutMetricAlarm {}: {}",
                        input["AlarmName"],
                        aws_sdk_cloudwatch::error::DisplayErrorContext(error)
                    )
                });
        }
        for (service, body) in &dashboards {
            let name = format!("{STACK}-{service}");
            let output = client
                .put_dashboard()
                .dashboard_name(&name)
                .dashboard_body(body)
                .send()
                .await
                .unwrap_or_else(|error| {
                    panic!(
                        "PutDashboard {name}: {}",
                        aws_sdk_cloudwatch::error::DisplayErrorContext(error)
                    )
                });
            assert!(
                output.dashboard_validation_messages().is_empty(),
                "PutDashboard {name}: {:?}",
                output.dashboard_validation_messages()
            );
        }

        // Every alarm, page by page.
        let mut read = Vec::new();
        let mut next_token = None;
        loop {
            let page = client
                .describe_alarms()
                .alarm_name_prefix(format!("{STACK}-"))
                .set_next_token(next_token)
                .send()
                .await
                .unwrap_or_else(|error| {
                    panic!(
                        "DescribeAlarms: {}",
                        aws_sdk_cloudwatch::error::DisplayErrorContext(error)
                    )
                });
            read.extend(page.metric_alarms().iter().map(alarm_json));
            next_token = page.next_token().map(str::to_owned);
            if next_token.is_none() {
                break;
            }
        }
        let read_names: BTreeSet<&str> = read
            .iter()
            .filter_map(|alarm| alarm["AlarmName"].as_str())
            .collect();
        assert_eq!(read_names, names, "the alarms read back are not those sent");
        assert_eq!(read.len(), inputs.len(), "alarms read back: {read_names:?}");
        let mismatches: Vec<String> = inputs
            .iter()
            .filter_map(|sent| {
                let back = read
                    .iter()
                    .find(|alarm| alarm["AlarmName"] == sent["AlarmName"])?;
                let sent = as_kept(sent);
                (sent != *back).then(|| format!("{}:\n{}", sent["AlarmName"], differences(&sent, back)))
            })
            .collect();
        assert!(
            mismatches.is_empty(),
            "alarms read back differ from what was sent:\n{}",
            mismatches.join("\n")
        );

        for (service, body) in &dashboards {
            let name = format!("{STACK}-{service}");
            let output = client
                .get_dashboard()
                .dashboard_name(&name)
                .send()
                .await
                .unwrap_or_else(|error| {
                    panic!(
                        "GetDashboard {name}: {}",
                        aws_sdk_cloudwatch::error::DisplayErrorContext(error)
                    )
                });
            assert_eq!(output.dashboard_name(), Some(name.as_str()));
            let sent: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{name}: {e}"));
            let back: Value = serde_json::from_str(output.dashboard_body().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{name} read back: {e}: {:?}", output.dashboard_body()));
            assert_eq!(
                back, sent,
                "{name}: the body read back differs from the body sent"
            );
        }
    });
}
