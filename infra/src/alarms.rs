//! The alarms of each released service (`alarms/<service>.json` and the template's
//! `AWS::CloudWatch::Alarm`s, both from [`for_service`]).
//!
//! **Canary alarms** are in the service's CodeDeploy deployment group: when one goes to `ALARM`
//! while traffic shifts to a new version, CodeDeploy shifts it back. Each watches **only the
//! new version**: `AWS/Lambda` metrics with the dimensions `FunctionName`, `Resource`
//! (`<function>:live`) and `ExecutedVersion`, and Keel's canary-critical metrics with
//! `function_version` — both set to the version the stack update publishes. Every one uses
//! one-minute periods and fires on 2 breaching minutes out of 3 (1 out of 1 for a crash or a
//! timeout), so that it can fire inside a five-minute canary window.
//!
//! **Operational alarms** notify on-call (the alarm topic) and never block a release: a
//! dead-letter queue holding messages, routed errors SNS failed to deliver, throttles,
//! concurrency rejections.
//!
//! Strings may hold CloudFormation placeholders, as `Fn::Sub` reads them: `${AWS::StackName}`,
//! `${BookingApiFunction}` (the function's name), `${BookingApiFunction.Version.Version}` (the
//! new version's number), `${AlarmTopic}` (its ARN), `${ErrorTopic.TopicName}`, … The template
//! turns them into references; a tool reading `alarms/*.json` substitutes them itself (the
//! canary replay substitutes the version under test).

use serde_json::{json, Value};

use crate::services::{Service, BOOKING_API, BOOKING_WORKER};

/// Keel's EMF namespace (keel-runtime's default, which the template does not change).
pub const KEEL_NAMESPACE: &str = "Keel";

/// The alias CodeDeploy shifts traffic on.
pub const ALIAS: &str = "live";

/// The `AWS/Lambda` dimension naming the version that ran an invocation.
pub const EXECUTED_VERSION: &str = "ExecutedVersion";

/// CodeDeploy takes at most this many alarms per deployment group.
pub const MAX_DEPLOYMENT_GROUP_ALARMS: usize = 10;

/// Whether an alarm decides a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// In the deployment group: rolls a canary back.
    Canary,
    /// Notifies on-call only.
    Operational,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Canary => "canary",
            Role::Operational => "operational",
        }
    }
}

/// A metric as an alarm names it.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricRef {
    /// `AWS/Lambda`, `AWS/SQS`, `AWS/SNS` or [`KEEL_NAMESPACE`].
    pub namespace: &'static str,
    /// Its name.
    pub name: &'static str,
    /// Its dimensions, in order.
    pub dimensions: Vec<(&'static str, String)>,
}

impl MetricRef {
    fn to_json(&self) -> Value {
        json!({
            "Namespace": self.namespace,
            "MetricName": self.name,
            "Dimensions": self.dimensions_json(),
        })
    }

    fn dimensions_json(&self) -> Value {
        self.dimensions
            .iter()
            .map(|(name, value)| json!({"Name": name, "Value": value}))
            .collect()
    }
}

/// What an alarm compares with its threshold.
#[derive(Clone, Debug, PartialEq)]
pub enum Signal {
    /// One statistic (`Sum`, `Maximum`, … or a percentile such as `p99`) of one metric.
    Metric {
        /// The metric.
        metric: MetricRef,
        /// The statistic.
        stat: &'static str,
    },
    /// A metric-math expression over statistics of metrics.
    Math {
        /// The expression (its inputs by id).
        expression: &'static str,
        /// What it computes.
        label: &'static str,
        /// `(id, metric, statistic)` of each input.
        inputs: Vec<(&'static str, MetricRef, &'static str)>,
    },
}

/// A threshold the template takes as a parameter (its default is the value written in
/// `alarms/*.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThresholdParameter {
    /// The template parameter.
    pub name: &'static str,
    /// Its default.
    pub default: i64,
    /// What it sets.
    pub description: &'static str,
}

/// A canary alarm's threshold for errors per minute.
pub const CANARY_ERRORS: ThresholdParameter = ThresholdParameter {
    name: "CanaryErrorsPerMinute",
    default: 2,
    description: "Canary alarms: Lambda errors of the new version in one minute that breach",
};

/// A canary alarm's threshold for the error rate.
pub const CANARY_ERROR_RATE: ThresholdParameter = ThresholdParameter {
    name: "CanaryErrorRatePercent",
    default: 5,
    description: "Canary alarms: share of the new version's invocations failing in one minute (percent) above which a minute breaches",
};

/// The booking API's canary p99 duration threshold.
pub const API_P99: ThresholdParameter = ThresholdParameter {
    name: "BookingApiP99DurationMs",
    default: 2_000,
    description:
        "Canary alarm: p99 duration of the new booking API version (ms) above which a minute breaches",
};

/// The booking worker's canary p99 duration threshold.
pub const WORKER_P99: ThresholdParameter = ThresholdParameter {
    name: "BookingWorkerP99DurationMs",
    default: 15_000,
    description: "Canary alarm: p99 duration of the new booking worker version on one batch (ms) above which a minute breaches",
};

/// Concurrency rejections in five minutes that notify on-call.
pub const CONCURRENCY_REJECTIONS: ThresholdParameter = ThresholdParameter {
    name: "ConcurrencyRejectionsPer5Minutes",
    default: 20,
    description: "Operational alarm: booking requests refused by the per-resource concurrency guard in five minutes that notify on-call",
};

/// Every threshold parameter, in the template's order.
pub const PARAMETERS: [ThresholdParameter; 5] = [
    CANARY_ERRORS,
    CANARY_ERROR_RATE,
    API_P99,
    WORKER_P99,
    CONCURRENCY_REJECTIONS,
];

/// One alarm.
#[derive(Clone, Debug, PartialEq)]
pub struct Alarm {
    /// Its logical id in the template.
    pub id: String,
    /// Its role.
    pub role: Role,
    /// `AlarmName` (with `${AWS::StackName}`).
    pub name: String,
    /// `AlarmDescription`.
    pub description: String,
    /// What it watches.
    pub signal: Signal,
    /// Seconds per datapoint.
    pub period: i64,
    /// N: the datapoints evaluated.
    pub evaluation_periods: i64,
    /// M: how many of them must breach.
    pub datapoints_to_alarm: i64,
    /// The threshold (the parameter's default when it has one).
    pub threshold: i64,
    /// The template parameter that sets the threshold, if one does.
    pub threshold_parameter: Option<ThresholdParameter>,
    /// `GreaterThanOrEqualToThreshold`, …
    pub comparison: &'static str,
    /// `notBreaching`, `breaching`, `ignore` or `missing`.
    pub treat_missing_data: &'static str,
    /// Why.
    pub treat_missing_data_reason: &'static str,
    /// For a percentile: `evaluate` or `ignore` when samples are few, and why.
    pub low_sample_count_percentile: Option<(&'static str, &'static str)>,
    /// What it means and what to do, for the dashboard's runbook.
    pub runbook: &'static str,
}

/// The placeholder of a resource's reference (`${BookingApiFunction}`).
fn placeholder(reference: &str) -> String {
    format!("${{{reference}}}")
}

/// The `AWS/Lambda` dimensions of the version being released through the alias.
fn new_version_dimensions(service: &Service) -> Vec<(&'static str, String)> {
    let function = service.function();
    vec![
        ("FunctionName", placeholder(&function)),
        ("Resource", format!("${{{function}}}:{ALIAS}")),
        (
            EXECUTED_VERSION,
            placeholder(&format!("{function}.Version.Version")),
        ),
    ]
}

/// Keel's metric `name` of the version being released (`service`, `function_version`).
fn keel_new_version(service: &Service, name: &'static str) -> MetricRef {
    MetricRef {
        namespace: KEEL_NAMESPACE,
        name,
        dimensions: vec![
            ("service", service.name.to_owned()),
            (
                keel_catalog::VERSION_DIMENSION,
                placeholder(&format!("{}.Version.Version", service.function())),
            ),
        ],
    }
}

fn lambda(service: &Service, name: &'static str) -> MetricRef {
    MetricRef {
        namespace: "AWS/Lambda",
        name,
        dimensions: new_version_dimensions(service),
    }
}

const NO_DATA_IS_NO_FAILURE: &str = "no datapoint means no invocation of the new version in that minute (Lambda publishes Errors and Duration only for invoked versions) or, for Keel's counters, nothing to count: neither is a failure, and `missing` would leave the alarm in INSUFFICIENT_DATA, which CodeDeploy does not act on";

/// A canary alarm of `service` named `<Id>Canary<what>Alarm`.
#[allow(clippy::too_many_arguments)]
fn canary(
    service: &Service,
    what: &str,
    description: String,
    signal: Signal,
    threshold: (i64, Option<ThresholdParameter>),
    comparison: &'static str,
    m_of_n: (i64, i64),
    runbook: &'static str,
) -> Alarm {
    Alarm {
        id: format!("{}Canary{what}Alarm", service.id),
        role: Role::Canary,
        name: format!("${{AWS::StackName}}-{}-canary-{}", service.name, kebab(what)),
        description,
        signal,
        period: 60,
        evaluation_periods: m_of_n.1,
        datapoints_to_alarm: m_of_n.0,
        threshold: threshold.0,
        threshold_parameter: threshold.1,
        comparison,
        treat_missing_data: "notBreaching",
        treat_missing_data_reason: NO_DATA_IS_NO_FAILURE,
        low_sample_count_percentile: None,
        runbook,
    }
}

/// `ErrorRate` → `error-rate`.
fn kebab(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn canary_alarms(service: &Service) -> Vec<Alarm> {
    let name = service.name;
    let p99 = if *service == BOOKING_API {
        API_P99
    } else {
        WORKER_P99
    };
    let mut alarms = vec![
        canary(
            service,
            "Errors",
            format!("{name}: Lambda errors of the version being released reach CanaryErrorsPerMinute in 2 of 3 minutes"),
            Signal::Metric {
                metric: lambda(service, "Errors"),
                stat: "Sum",
            },
            (CANARY_ERRORS.default, Some(CANARY_ERRORS)),
            "GreaterThanOrEqualToThreshold",
            (2, 3),
            "The new version fails invocations. CodeDeploy shifts traffic back to the previous version by itself: read the new version's ERROR lines (filter on function_version) and the routed error envelopes on the error topic, fix, release again.",
        ),
        canary(
            service,
            "ErrorRate",
            format!("{name}: more than CanaryErrorRatePercent of the version being released's invocations fail, in 2 of 3 minutes"),
            Signal::Math {
                expression: "100 * FILL(errors, 0) / invocations",
                label: "Error rate of the new version (%)",
                inputs: vec![
                    ("errors", lambda(service, "Errors"), "Sum"),
                    ("invocations", lambda(service, "Invocations"), "Sum"),
                ],
            },
            (CANARY_ERROR_RATE.default, Some(CANARY_ERROR_RATE)),
            "GreaterThanThreshold",
            (2, 3),
            "A share of the new version's invocations fail (a few errors at low canary traffic are a large share). CodeDeploy rolls back by itself; compare the error types of the two versions in the logs.",
        ),
        {
            let mut alarm = canary(
                service,
                "DurationP99",
                format!("{name}: p99 duration of the version being released above {} in 2 of 3 minutes", p99.name),
                Signal::Metric {
                    metric: lambda(service, "Duration"),
                    stat: "p99",
                },
                (p99.default, Some(p99)),
                "GreaterThanThreshold",
                (2, 3),
                "The new version is slower than the release allows. CodeDeploy rolls back by itself; compare p99 by ExecutedVersion on the canary row and the dependency latencies.",
            );
            alarm.low_sample_count_percentile = Some((
                "evaluate",
                "a canary gets a tenth of the traffic, often fewer than the 100 samples a p99 needs to be statistically significant; `ignore` would keep such minutes from ever breaching and let a slow version through, so they are evaluated against a threshold set with room",
            ));
            alarm
        },
    ];
    if service.http {
        alarms.push(canary(
            service,
            "ServerErrors",
            format!("{name}: HTTP 5xx answers of the version being released (Keel's store failures, which Lambda counts as successes) in 2 of 3 minutes"),
            Signal::Metric {
                metric: keel_new_version(service, keel_catalog::keel::HTTP_SERVER_ERROR.name),
                stat: "Sum",
            },
            (1, None),
            "GreaterThanOrEqualToThreshold",
            (2, 3),
            "The new version answers 503: its idempotency or concurrency-slot store fails (a table missing, a permission missing from its role, throttling). CodeDeploy rolls back by itself; read the WARN/ERROR lines with error.type IdempotencyStoreUnavailable or ConcurrencyStoreUnavailable.",
        ));
    }
    alarms.extend([
        canary(
            service,
            "Timeouts",
            format!("{name}: an invocation of the version being released timed out"),
            Signal::Metric {
                metric: keel_new_version(service, keel_catalog::keel::INVOCATION_TIMEOUT.name),
                stat: "Sum",
            },
            (1, None),
            "GreaterThanOrEqualToThreshold",
            (1, 1),
            "The new version ran out of time: the extension saw platform.runtimeDone with status timeout and routed an envelope. CodeDeploy rolls back by itself; the envelope names the request.",
        ),
        canary(
            service,
            "Crashes",
            format!("{name}: the runtime of the version being released crashed"),
            Signal::Metric {
                metric: keel_new_version(service, keel_catalog::keel::RUNTIME_CRASH.name),
                stat: "Sum",
            },
            (1, None),
            "GreaterThanOrEqualToThreshold",
            (1, 1),
            "The new version's runtime failed (platform.runtimeDone with status failure): the process exited or was killed — a panic outside the handler, running out of memory. CodeDeploy rolls back by itself; the envelope on the error topic holds the reason.",
        ),
    ]);
    alarms
}

/// An operational alarm: notifies, never blocks a release.
#[allow(clippy::too_many_arguments)]
fn operational(
    id: &str,
    name: String,
    description: String,
    metric: MetricRef,
    stat: &'static str,
    period: i64,
    threshold: (i64, Option<ThresholdParameter>),
    runbook: &'static str,
) -> Alarm {
    Alarm {
        id: format!("{id}Alarm"),
        role: Role::Operational,
        name,
        description,
        signal: Signal::Metric { metric, stat },
        period,
        evaluation_periods: 1,
        datapoints_to_alarm: 1,
        threshold: threshold.0,
        threshold_parameter: threshold.1,
        comparison: "GreaterThanOrEqualToThreshold",
        treat_missing_data: "notBreaching",
        treat_missing_data_reason: "no datapoint means nothing happened to count (no throttle, no rejection, no message, no failed delivery)",
        low_sample_count_percentile: None,
        runbook,
    }
}

fn throttles(service: &Service) -> Alarm {
    operational(
        &format!("{}Throttles", service.id),
        format!("${{AWS::StackName}}-{}-throttles", service.name),
        format!("{}: invocations throttled (concurrency limit reached)", service.name),
        MetricRef {
            namespace: "AWS/Lambda",
            name: "Throttles",
            dimensions: vec![("FunctionName", placeholder(&service.function()))],
        },
        "Sum",
        300,
        (1, None),
        "Lambda refused invocations: the account's or the function's concurrency is exhausted. Check ConcurrentExecutions, raise the limit or reserved concurrency, or find what holds environments busy (p99 duration).",
    )
}

fn queue_holds_messages(
    id: &str,
    name: &str,
    queue: &str,
    description: String,
    runbook: &'static str,
) -> Alarm {
    operational(
        id,
        format!("${{AWS::StackName}}-{name}"),
        description,
        MetricRef {
            namespace: "AWS/SQS",
            name: "ApproximateNumberOfMessagesVisible",
            dimensions: vec![("QueueName", placeholder(&format!("{queue}.QueueName")))],
        },
        "Maximum",
        300,
        (1, None),
        runbook,
    )
}

fn operational_alarms(service: &Service) -> Vec<Alarm> {
    let mut alarms = vec![throttles(service)];
    if *service == BOOKING_API {
        alarms.extend([
            operational(
                "BookingApiConcurrencyRejections",
                "${AWS::StackName}-booking-api-concurrency-rejections".into(),
                "booking-api: booking requests refused by the per-resource concurrency guard (HTTP 429) reach ConcurrencyRejectionsPer5Minutes in five minutes".into(),
                MetricRef {
                    namespace: KEEL_NAMESPACE,
                    name: keel_catalog::keel::CONCURRENCY_REJECTED.name,
                    dimensions: vec![("service", service.name.to_owned())],
                },
                "Sum",
                300,
                (CONCURRENCY_REJECTIONS.default, Some(CONCURRENCY_REJECTIONS)),
                "Many requests for the same resources at once: callers are told to retry (Retry-After). Look for a client retrying in a loop, or raise the guard's limit if the resource can take it.",
            ),
            operational(
                "ErrorTopicDeliveryFailures",
                "${AWS::StackName}-error-topic-delivery-failures".into(),
                "Routed error envelopes (every function's) that the error topic failed to deliver to a subscriber".into(),
                MetricRef {
                    namespace: "AWS/SNS",
                    name: "NumberOfNotificationsFailed",
                    dimensions: vec![("TopicName", placeholder("ErrorTopic.TopicName"))],
                },
                "Sum",
                300,
                (1, None),
                "On-call is not receiving routed errors: a subscription is failing (an endpoint down, an SQS queue's policy or KMS key refusing SNS). Fix the subscription; the envelopes themselves are in the functions' logs.",
            ),
            queue_holds_messages(
                "ErrorDeadLetters",
                "error-dead-letters",
                "ErrorDeadLetterQueue",
                "Routed error envelopes (every function's) that SNS did not take wait in the error dead-letter queue".into(),
                "Errors were routed while the error topic refused them (throttling, KMS, permissions). Read them from the queue (each is a whole envelope), then find why the topic refused.",
            ),
        ]);
    }
    if *service == BOOKING_WORKER {
        alarms.push(queue_holds_messages(
            "BookingQueueDeadLetters",
            "booking-queue-dead-letters",
            "BookingQueueDeadLetters",
            "booking-worker: booking messages failed on every receive and wait in the booking queue's dead-letter queue".into(),
            "Bookings stay PENDING: their messages failed on each of their receives (each failure was routed to on-call with its reason). Fix the cause, then redrive the dead-letter queue to the booking queue.",
        ));
    }
    alarms
}

/// The alarms of `service`: its canary alarms, then its operational ones.
pub fn for_service(service: &Service) -> Vec<Alarm> {
    let mut alarms = canary_alarms(service);
    alarms.extend(operational_alarms(service));
    alarms
}

impl Alarm {
    /// The alarm as `PutMetricAlarm` input (placeholders unresolved), notifying the alarm
    /// topic.
    pub fn put_metric_alarm(&self) -> Value {
        let mut input = json!({
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "ActionsEnabled": true,
            "AlarmActions": [placeholder("AlarmTopic")],
        });
        let fields = input.as_object_mut().expect("an object");
        if self.role == Role::Operational {
            fields.insert("OKActions".into(), json!([placeholder("AlarmTopic")]));
        }
        match &self.signal {
            Signal::Metric { metric, stat } => {
                fields.insert("Namespace".into(), metric.namespace.into());
                fields.insert("MetricName".into(), metric.name.into());
                fields.insert("Dimensions".into(), metric.dimensions_json());
                let key = if stat.starts_with('p') {
                    "ExtendedStatistic"
                } else {
                    "Statistic"
                };
                fields.insert(key.into(), (*stat).into());
                fields.insert("Period".into(), self.period.into());
            }
            Signal::Math {
                expression,
                label,
                inputs,
            } => {
                let mut queries: Vec<Value> = inputs
                    .iter()
                    .map(|(id, metric, stat)| {
                        json!({
                            "Id": id,
                            "MetricStat": {"Metric": metric.to_json(), "Period": self.period, "Stat": stat},
                            "ReturnData": false,
                        })
                    })
                    .collect();
                queries.push(json!({
                    "Id": "result",
                    "Expression": expression,
                    "Label": label,
                    "ReturnData": true,
                }));
                fields.insert("Metrics".into(), queries.into());
            }
        }
        fields.insert("EvaluationPeriods".into(), self.evaluation_periods.into());
        fields.insert("DatapointsToAlarm".into(), self.datapoints_to_alarm.into());
        fields.insert("Threshold".into(), self.threshold.into());
        fields.insert("ComparisonOperator".into(), self.comparison.into());
        fields.insert("TreatMissingData".into(), self.treat_missing_data.into());
        if let Some((how, _)) = self.low_sample_count_percentile {
            fields.insert("EvaluateLowSampleCountPercentile".into(), how.into());
        }
        input
    }

    /// The metrics it reads.
    pub fn metrics(&self) -> Vec<&MetricRef> {
        match &self.signal {
            Signal::Metric { metric, .. } => vec![metric],
            Signal::Math { inputs, .. } => inputs.iter().map(|(_, metric, _)| metric).collect(),
        }
    }
}

/// `alarms/<service>.json`: each alarm's `PutMetricAlarm` input with what the template and
/// a reader need beside it (its role, logical id, threshold parameter, why it treats missing
/// data as it does, its runbook).
pub fn document(service: &Service) -> Value {
    let alarms: Vec<Value> = for_service(service)
        .iter()
        .map(|alarm| {
            let mut entry = json!({
                "LogicalId": alarm.id,
                "Role": alarm.role.as_str(),
                "PutMetricAlarm": alarm.put_metric_alarm(),
                "TreatMissingDataReason": alarm.treat_missing_data_reason,
                "Runbook": alarm.runbook,
            });
            let fields = entry.as_object_mut().expect("an object");
            if let Some(parameter) = alarm.threshold_parameter {
                fields.insert("ThresholdParameter".into(), parameter.name.into());
            }
            if let Some((_, why)) = alarm.low_sample_count_percentile {
                fields.insert("EvaluateLowSampleCountPercentileReason".into(), why.into());
            }
            entry
        })
        .collect();
    json!({
        "Service": service.name,
        "Function": service.function(),
        "Alias": ALIAS,
        "Placeholders": {
            "${AWS::StackName}": "the stack's name",
            format!("${{{}}}", service.function()): "the function's name",
            format!("${{{}.Version.Version}}", service.function()): "the number of the version being released (the canary replay: the version under test)",
            "${AlarmTopic}": "the alarm topic's ARN",
            "${<Resource>.QueueName}": "that queue's name",
            "${ErrorTopic.TopicName}": "the error topic's name",
        },
        "Alarms": alarms,
    })
}
