//! The on-call dashboard of each released service (`dashboards/<service>.json`, drawn in
//! `dashboards/<service>.svg` by [`crate::dashboard_svg`]): a CloudWatch dashboard body, from
//! the metric catalogue and [`alarms::for_service`], so that it shows every metric the service
//! emits with the dimensions it is published with, and every alarm it has.
//!
//! Rows, top to bottom:
//!
//! - the state of every alarm of the service;
//! - **summary**: `AWS/Lambda` invocations, errors, error rate, p50/p99 duration, throttles, and
//!   Keel's cold starts;
//! - **Keel**: idempotency, concurrency slots, routed errors by sink, timeouts and crashes,
//!   HTTP 5xx answers, the platform's duration and memory, dropped telemetry;
//! - the service's **own metrics** (for the booking API, also the canary hook's failed checks);
//! - **dependencies**: the DynamoDB tables it uses and the SQS queues behind it;
//! - **canary**: errors and p99 duration by `ExecutedVersion`, and Keel's canary-critical
//!   metrics by `function_version`;
//! - **cost**: per invocation, per booking and per five minutes, from Keel's `BilledDurationMs`,
//!   [`MEMORY_MB`] and the template's price parameters;
//! - the **runbook** of every alarm.
//!
//! The template embeds each body as `Fn::Sub` of its JSON text: the only `${` sequences in it
//! are CloudFormation placeholders — `${AWS::Region}`, `${AWS::AccountId}`, `${AWS::Partition}`,
//! `${AWS::StackName}`, the function's `${<Id>Function}` (its name), the tables' `${BookingsTable}`,
//! `${IdempotencyTable}`, `${ConcurrencySlotsTable}`, the queues' `${<Queue>.QueueName}`, and the
//! parameters [`PRICE_PER_GB_SECOND`] and [`PRICE_PER_MILLION_REQUESTS`]. (No dynamic label —
//! `${PROP(…)}`, `${MAX}` — is used, as `Fn::Sub` would read it as a reference.)

use keel_catalog::keel as catalogue;
use keel_catalog::{Kind, MetricDef, VERSION_DIMENSION};
use serde_json::{json, Value};

use crate::alarms::{self, Alarm, Role, KEEL_NAMESPACE};
use crate::services::{Service, BOOKING_API, BOOKING_WORKER, CANARY_HOOK};

/// The memory of the functions in MB: the template's `MemorySize` must be this value (the cost
/// row computes GB-seconds with it).
pub const MEMORY_MB: i64 = 256;

/// The template parameter holding Lambda's price of one GB-second in USD (a string such as
/// [`DEFAULT_PRICE_PER_GB_SECOND`]); the cost row reads it as `${PricePerGbSecond}`.
pub const PRICE_PER_GB_SECOND: &str = "PricePerGbSecond";

/// A default for [`PRICE_PER_GB_SECOND`]: x86_64 in us-east-1, first pricing tier (arm64 is
/// cheaper, other regions differ).
pub const DEFAULT_PRICE_PER_GB_SECOND: &str = "0.0000166667";

/// The template parameter holding Lambda's price of one million requests in USD (a string such
/// as [`DEFAULT_PRICE_PER_MILLION_REQUESTS`]); the cost row reads it as
/// `${PricePerMillionRequests}`.
pub const PRICE_PER_MILLION_REQUESTS: &str = "PricePerMillionRequests";

/// A default for [`PRICE_PER_MILLION_REQUESTS`] (us-east-1).
pub const DEFAULT_PRICE_PER_MILLION_REQUESTS: &str = "0.20";

/// The width of the dashboard grid, in columns.
pub const GRID_COLUMNS: i64 = 24;

/// Seconds per datapoint of the graphs.
pub const PERIOD: i64 = 60;

/// Seconds per datapoint of the cost graphs.
pub const COST_PERIOD: i64 = 300;

/// The region of every metric widget.
const REGION: &str = "${AWS::Region}";

/// The sinks a routed error can land in (keel-runtime's `routing::Sink::as_str`; `relay` is
/// never a value of the dimension: a relayed envelope is counted where the extension publishes
/// it).
const SINKS: [&str; 3] = ["sns", "dlq", "log"];

/// A widget before it is placed.
struct Widget {
    kind: &'static str,
    width: i64,
    height: i64,
    properties: Value,
}

impl Widget {
    /// Adds a property.
    fn with(mut self, key: &str, value: Value) -> Self {
        self.properties
            .as_object_mut()
            .expect("widget properties are an object")
            .insert(key.to_owned(), value);
        self
    }
}

/// Widgets placed row after row on the grid.
#[derive(Default)]
struct Grid {
    placed: Vec<Value>,
    y: i64,
}

impl Grid {
    /// Places `widgets` left to right from the first free row, starting a new row when the next
    /// one does not fit.
    fn row(&mut self, widgets: Vec<Widget>) {
        let (mut x, mut height) = (0, 0);
        for widget in widgets {
            assert!(widget.width <= GRID_COLUMNS, "a widget wider than the grid");
            if x + widget.width > GRID_COLUMNS {
                self.y += height;
                (x, height) = (0, 0);
            }
            self.placed.push(json!({
                "type": widget.kind,
                "x": x,
                "y": self.y,
                "width": widget.width,
                "height": widget.height,
                "properties": widget.properties,
            }));
            x += widget.width;
            height = height.max(widget.height);
        }
        self.y += height;
    }

    /// A section: a header across the grid (a row per line), then its widgets.
    fn section(&mut self, header: &str, widgets: Vec<Widget>) {
        let lines = i64::try_from(header.lines().count()).expect("a short header");
        self.row(vec![text(GRID_COLUMNS, lines, header.to_owned())]);
        self.row(widgets);
    }
}

/// A `text` widget of markdown.
fn text(width: i64, height: i64, markdown: String) -> Widget {
    Widget {
        kind: "text",
        width,
        height,
        properties: json!({ "markdown": markdown }),
    }
}

/// A time-series `metric` widget six rows high, of `metrics` with `stat` unless a line sets its
/// own, one datapoint per `period`.
fn graph(title: &str, width: i64, stat: &str, period: i64, metrics: Vec<Value>) -> Widget {
    Widget {
        kind: "metric",
        width,
        height: 6,
        properties: json!({
            "title": title,
            "view": "timeSeries",
            "stacked": false,
            "region": REGION,
            "stat": stat,
            "period": period,
            "metrics": metrics,
        }),
    }
}

/// A left y axis labelled `label`.
fn y_axis(label: &str) -> Value {
    json!({ "left": { "label": label, "showUnits": false, "min": 0 } })
}

/// A metric array: namespace, name, dimension name/value pairs, then its rendering options when
/// there are any.
fn metric(namespace: &str, name: &str, dimensions: &[(&str, String)], options: Value) -> Value {
    let mut line = vec![Value::from(namespace), Value::from(name)];
    for (dimension, value) in dimensions {
        line.push(Value::from(*dimension));
        line.push(Value::from(value.as_str()));
    }
    if options.as_object().is_some_and(|options| !options.is_empty()) {
        line.push(options);
    }
    Value::Array(line)
}

/// Keel's metric `def` of the service named `service`, with the values of its other
/// dimensions (its [`labels`](MetricDef::labels), in catalogue order).
fn keel(service: &str, def: &MetricDef, labels: &[&str], options: Value) -> Value {
    assert_eq!(
        labels.len(),
        def.labels().len(),
        "{} takes the dimensions {:?}",
        def.name,
        def.labels()
    );
    let mut dimensions = vec![("service", service.to_owned())];
    dimensions.extend(
        def.labels()
            .iter()
            .zip(labels)
            .map(|(name, value)| (*name, (*value).to_owned())),
    );
    metric(KEEL_NAMESPACE, def.name, &dimensions, options)
}

/// A `SEARCH` of the metrics named `name` published with exactly the dimensions `schema` in
/// `namespace`, narrowed by `filters` (exact values).
fn search(
    namespace: &str,
    schema: &[&str],
    name: &str,
    filters: &[(&str, &str)],
    stat: &str,
    period: i64,
) -> String {
    let filters: String = filters
        .iter()
        .map(|(dimension, value)| format!(" {dimension}=\"{value}\""))
        .collect();
    format!(
        "SEARCH('{{{namespace},{}}} MetricName=\"{name}\"{filters}', '{stat}', {period})",
        schema.join(",")
    )
}

/// A `SEARCH` of Keel's metric `def` of `service` with every value of its other dimensions,
/// with [`VERSION_DIMENSION`] too when `by_version`.
fn keel_search(service: &str, def: &MetricDef, by_version: bool, stat: &str, period: i64) -> String {
    let mut schema = def.dimensions.to_vec();
    if by_version {
        schema.push(VERSION_DIMENSION);
    }
    search(
        KEEL_NAMESPACE,
        &schema,
        def.name,
        &[("service", service)],
        stat,
        period,
    )
}

/// A metric-math (or search) line.
fn expression(expression: String, id: &str, label: &str) -> Value {
    json!([{ "expression": expression, "id": id, "label": label }])
}

/// A metric-math id from a metric name: its first letter lowercased.
fn id(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// The placeholder of a resource's reference (`${BookingApiFunction}`).
fn placeholder(reference: &str) -> String {
    format!("${{{reference}}}")
}

/// The statistic a metric of `kind` is graphed with by default.
fn default_stat(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "Sum",
        Kind::Gauge => "Maximum",
        Kind::Histogram => "p99",
    }
}

/// The lines of a catalogue entry of `service`: a counter's sum, a gauge's maximum, a
/// histogram's p50 and p99; an entry with dimensions besides `service` by a `SEARCH` over every
/// value of them.
fn lines(service: &str, def: &MetricDef) -> Vec<Value> {
    if !def.labels().is_empty() {
        let stat = default_stat(def.kind);
        return vec![expression(
            keel_search(service, def, false, stat, PERIOD),
            &id(def.name),
            def.name,
        )];
    }
    match def.kind {
        Kind::Histogram => ["p50", "p99"]
            .iter()
            .map(|stat| {
                keel(
                    service,
                    def,
                    &[],
                    json!({ "stat": stat, "label": format!("{} {stat}", def.name) }),
                )
            })
            .collect(),
        kind => vec![keel(
            service,
            def,
            &[],
            json!({ "stat": default_stat(kind), "label": def.name }),
        )],
    }
}

/// The function's `AWS/Lambda` metric `name` (all versions).
fn lambda(service: &Service, name: &str, options: Value) -> Value {
    metric(
        "AWS/Lambda",
        name,
        &[("FunctionName", placeholder(&service.function()))],
        options,
    )
}

fn header(service: &Service) -> Widget {
    let function = placeholder(&service.function());
    text(
        GRID_COLUMNS,
        2,
        format!(
            "# {name}: on-call\nFunction `{function}` (alias `{alias}`, released through CodeDeploy) in `{REGION}`, \
             wrapped by Keel (metrics in the `{KEEL_NAMESPACE}` namespace with `service` = `{name}`). \
             Generated by `cargo run -p keel-infra` (infra/src/dashboards.rs); its alarms are in alarms/{name}.json, \
             their runbook at the bottom.",
            name = service.name,
            alias = alarms::ALIAS,
        ),
    )
}

/// An alarm's ARN.
fn alarm_arn(alarm: &Alarm) -> String {
    format!(
        "arn:${{AWS::Partition}}:cloudwatch:${{AWS::Region}}:${{AWS::AccountId}}:alarm:{}",
        alarm.name
    )
}

fn alarm_status(service: &Service, alarms: &[Alarm]) -> Widget {
    let rows = i64::try_from(alarms.len().div_ceil(4)).expect("a few alarms");
    Widget {
        kind: "alarm",
        width: GRID_COLUMNS,
        height: 2 + rows,
        properties: json!({
            "title": format!("Alarms of {}", service.name),
            "alarms": alarms.iter().map(alarm_arn).collect::<Vec<_>>(),
            "sortBy": "stateUpdatedTimestamp",
        }),
    }
}

fn summary(service: &Service) -> Vec<Widget> {
    let function = placeholder(&service.function());
    vec![
        graph(
            "Invocations and errors",
            6,
            "Sum",
            PERIOD,
            vec![
                lambda(service, "Invocations", json!({})),
                lambda(service, "Errors", json!({})),
            ],
        ),
        graph(
            "Error rate (%)",
            6,
            "Sum",
            PERIOD,
            vec![
                lambda(
                    service,
                    "Invocations",
                    json!({ "id": "invocations", "visible": false }),
                ),
                lambda(service, "Errors", json!({ "id": "errors", "visible": false })),
                expression("100*errors/invocations".into(), "errorRate", "Error rate (%)"),
            ],
        )
        .with("yAxis", y_axis("%")),
        graph(
            "Duration p50 / p99 (ms)",
            6,
            "p99",
            PERIOD,
            vec![
                lambda(
                    service,
                    "Duration",
                    json!({ "stat": "p50", "label": "Duration p50" }),
                ),
                lambda(
                    service,
                    "Duration",
                    json!({ "stat": "p99", "label": "Duration p99" }),
                ),
            ],
        )
        .with("yAxis", y_axis("ms")),
        graph(
            "Throttles and cold starts",
            6,
            "Sum",
            PERIOD,
            vec![
                lambda(service, "Throttles", json!({})),
                keel(
                    service.name,
                    &catalogue::COLD_START,
                    &[&function],
                    json!({ "label": "ColdStart" }),
                ),
            ],
        ),
    ]
}

fn keel_row(service: &Service) -> Vec<Widget> {
    let name = service.name;
    let counters = |defs: &[&MetricDef]| -> Vec<Value> {
        defs.iter()
            .filter(|def| service.emits(def))
            .map(|def| keel(name, def, &[], json!({ "label": def.name })))
            .collect()
    };
    let mut widgets = vec![graph(
        "Idempotency",
        6,
        "Sum",
        PERIOD,
        counters(&[
            &catalogue::IDEMPOTENCY_REPLAY,
            &catalogue::IDEMPOTENCY_IN_PROGRESS_CONFLICT,
            &catalogue::IDEMPOTENCY_KEY_REUSED,
            &catalogue::IDEMPOTENCY_STORE_ERROR,
        ]),
    )];
    if service.guarded {
        widgets.extend([
            graph(
                "Concurrency slots",
                6,
                "Sum",
                PERIOD,
                counters(&[&catalogue::CONCURRENCY_ACQUIRED, &catalogue::CONCURRENCY_REJECTED]),
            ),
            graph(
                "Concurrency wait (ms)",
                6,
                "p99",
                PERIOD,
                lines(name, &catalogue::CONCURRENCY_WAIT_MS),
            )
            .with("yAxis", y_axis("ms")),
        ]);
    }
    widgets.extend([
        graph(
            "Telemetry dropped",
            6,
            "Sum",
            PERIOD,
            counters(&[&catalogue::TELEMETRY_DROPPED]),
        ),
        graph(
            "Routed errors by sink",
            6,
            "Sum",
            PERIOD,
            SINKS
                .iter()
                .map(|sink| {
                    keel(
                        name,
                        &catalogue::ROUTED_ERROR,
                        &[sink],
                        json!({ "label": format!("RoutedError {sink}") }),
                    )
                })
                .collect(),
        ),
        graph(
            if service.http {
                "Failed invocations, timeouts, crashes, HTTP 5xx"
            } else {
                "Failed invocations, timeouts, crashes"
            },
            6,
            "Sum",
            PERIOD,
            counters(&[
                &catalogue::INVOCATION_ERROR,
                &catalogue::INVOCATION_TIMEOUT,
                &catalogue::RUNTIME_CRASH,
                &catalogue::HTTP_SERVER_ERROR,
            ]),
        ),
        graph(
            "Platform duration (ms)",
            6,
            "p99",
            PERIOD,
            vec![
                keel(
                    name,
                    &catalogue::INVOCATION_DURATION_MS,
                    &[],
                    json!({ "stat": "p50", "label": "DurationMs p50" }),
                ),
                keel(
                    name,
                    &catalogue::INVOCATION_DURATION_MS,
                    &[],
                    json!({ "stat": "p99", "label": "DurationMs p99" }),
                ),
                keel(
                    name,
                    &catalogue::BILLED_DURATION_MS,
                    &[],
                    json!({ "stat": "Average", "label": "BilledDurationMs avg" }),
                ),
                keel(
                    name,
                    &catalogue::BILLED_DURATION_MS,
                    &[],
                    json!({ "stat": "p99", "label": "BilledDurationMs p99" }),
                ),
            ],
        )
        .with("yAxis", y_axis("ms")),
        graph(
            "Memory (MB) and init (ms)",
            6,
            "Maximum",
            PERIOD,
            vec![
                keel(
                    name,
                    &catalogue::MAX_MEMORY_USED_MB,
                    &[],
                    json!({ "stat": "Maximum", "label": "MaxMemoryUsedMB max" }),
                ),
                keel(
                    name,
                    &catalogue::INIT_DURATION_MS,
                    &[],
                    json!({ "stat": "p99", "label": "InitDurationMs p99", "yAxis": "right" }),
                ),
            ],
        )
        .with(
            "yAxis",
            json!({
                "left": { "label": "MB", "showUnits": false, "min": 0 },
                "right": { "label": "ms", "showUnits": false, "min": 0 },
            }),
        )
        .with(
            "annotations",
            json!({ "horizontal": [{ "label": format!("MemorySize {MEMORY_MB} MB"), "value": MEMORY_MB }] }),
        ),
    ]);
    widgets
}

/// The service's own entries, grouped into widgets by title; an entry no group names gets a
/// widget of its own.
fn own_groups(service: &Service) -> Vec<(String, Vec<&'static MetricDef>)> {
    use booking_metrics::{api, worker};
    let mut groups: Vec<(String, Vec<&'static MetricDef>)> = if *service == BOOKING_API {
        vec![
            (
                "Bookings created and cancelled".into(),
                vec![&api::BOOKING_CREATED, &api::BOOKING_CANCELLED],
            ),
            (
                "Requests refused: conflicts, invalid".into(),
                vec![&api::BOOKING_CONFLICT, &api::VALIDATION_FAILED],
            ),
        ]
    } else if *service == BOOKING_WORKER {
        vec![
            (
                "Bookings confirmed / rejected".into(),
                vec![&worker::BOOKING_CONFIRMED, &worker::BOOKING_REJECTED],
            ),
            (
                "Requests skipped by reason".into(),
                vec![&worker::BOOKING_CONFIRMATION_SKIPPED],
            ),
            (
                "Records failed by reason".into(),
                vec![&worker::BOOKING_CONFIRMATION_FAILED],
            ),
            (
                "Confirmation lag (ms)".into(),
                vec![&worker::BOOKING_CONFIRMATION_LAG_MS],
            ),
        ]
    } else {
        Vec::new()
    };
    for def in service.own {
        if !groups
            .iter()
            .any(|(_, defs)| defs.iter().any(|d| d.name == def.name))
        {
            groups.push((def.name.to_owned(), vec![*def]));
        }
    }
    groups
}

fn own_row(service: &Service) -> Vec<Widget> {
    let mut widgets: Vec<(String, Vec<Value>)> = own_groups(service)
        .into_iter()
        .map(|(title, defs)| {
            let metrics = defs.iter().flat_map(|def| lines(service.name, def)).collect();
            (title, metrics)
        })
        .collect();
    if *service == BOOKING_API {
        // The canary hook checks each new booking API version before traffic shifts to it.
        let metrics = CANARY_HOOK
            .own
            .iter()
            .flat_map(|def| lines(CANARY_HOOK.name, def))
            .collect();
        widgets.push(("Canary hook: failed checks".into(), metrics));
    }
    let width = match widgets.len() {
        1 => 24,
        2 => 12,
        3 => 8,
        _ => 6,
    };
    widgets
        .into_iter()
        .map(|(title, metrics)| graph(&title, width, "Sum", PERIOD, metrics))
        .collect()
}

/// The DynamoDB tables the service uses: `(what, logical id)`.
fn tables(service: &Service) -> Vec<(&'static str, &'static str)> {
    let mut tables = vec![("bookings", "BookingsTable"), ("idempotency", "IdempotencyTable")];
    if *service == BOOKING_API {
        tables.push(("slots", "ConcurrencySlotsTable"));
    }
    tables
}

/// The SQS queues behind the service: `(what, logical id)`.
fn queues(service: &Service) -> Vec<(&'static str, &'static str)> {
    let mut queues = Vec::new();
    if *service == BOOKING_WORKER {
        queues.extend([
            ("booking queue", "BookingQueue"),
            ("booking DLQ", "BookingQueueDeadLetters"),
        ]);
    }
    queues.push(("error DLQ", "ErrorDeadLetterQueue"));
    queues
}

fn dependencies(service: &Service) -> Vec<Widget> {
    let tables = tables(service);
    let queues = queues(service);
    let table_search = |metric: &str, stat: &str, suffix: &str| -> Vec<Value> {
        tables
            .iter()
            .map(|(what, table)| {
                expression(
                    search(
                        "AWS/DynamoDB",
                        &["TableName", "Operation"],
                        metric,
                        &[("TableName", &placeholder(table))],
                        stat,
                        PERIOD,
                    ),
                    &format!("{}{suffix}", id(table)),
                    what,
                )
            })
            .collect()
    };
    let queue_metric = |metric_name: &str| -> Vec<Value> {
        queues
            .iter()
            .map(|(what, queue)| {
                metric(
                    "AWS/SQS",
                    metric_name,
                    &[("QueueName", placeholder(&format!("{queue}.QueueName")))],
                    json!({ "label": what }),
                )
            })
            .collect()
    };
    vec![
        graph(
            "DynamoDB throttle events",
            8,
            "Sum",
            PERIOD,
            tables
                .iter()
                .flat_map(|(what, table)| {
                    ["Read", "Write"].map(|kind| {
                        metric(
                            "AWS/DynamoDB",
                            &format!("{kind}ThrottleEvents"),
                            &[("TableName", placeholder(table))],
                            json!({ "label": format!("{what} {} throttled", kind.to_lowercase()) }),
                        )
                    })
                })
                .collect(),
        ),
        graph(
            "DynamoDB throttles by operation",
            8,
            "Sum",
            PERIOD,
            table_search("ThrottledRequests", "Sum", "Throttled"),
        ),
        graph(
            "DynamoDB latency by operation",
            8,
            "Average",
            PERIOD,
            table_search("SuccessfulRequestLatency", "Average", "Latency"),
        )
        .with("yAxis", y_axis("ms")),
        graph(
            "SQS messages visible",
            12,
            "Maximum",
            PERIOD,
            queue_metric("ApproximateNumberOfMessagesVisible"),
        ),
        graph(
            "SQS age of oldest message (s)",
            12,
            "Maximum",
            PERIOD,
            queue_metric("ApproximateAgeOfOldestMessage"),
        )
        .with("yAxis", y_axis("s")),
    ]
}

fn canary_row(service: &Service) -> Vec<Widget> {
    let function = placeholder(&service.function());
    let by_version = |metric: &str, stat: &str| {
        search(
            "AWS/Lambda",
            &["FunctionName", "Resource", "ExecutedVersion"],
            metric,
            &[("FunctionName", &function)],
            stat,
            PERIOD,
        )
    };
    vec![
        graph(
            "Invocations and errors by version",
            8,
            "Sum",
            PERIOD,
            vec![
                expression(
                    by_version("Invocations", "Sum"),
                    "invocationsByVersion",
                    "Invocations",
                ),
                expression(by_version("Errors", "Sum"), "errorsByVersion", "Errors"),
            ],
        ),
        graph(
            "Duration p99 by version (ms)",
            8,
            "p99",
            PERIOD,
            vec![expression(
                by_version("Duration", "p99"),
                "durationByVersion",
                "Duration p99",
            )],
        )
        .with("yAxis", y_axis("ms")),
        graph(
            "Keel canary metrics by version",
            8,
            "Sum",
            PERIOD,
            service
                .metrics()
                .filter(|def| def.canary && def.kind == Kind::Counter)
                .map(|def| {
                    expression(
                        keel_search(service.name, def, true, default_stat(def.kind), PERIOD),
                        &format!("{}ByVersion", id(def.name)),
                        def.name,
                    )
                })
                .collect(),
        ),
    ]
}

/// The entry counting the service's bookings, for the cost per booking.
fn bookings(service: &Service) -> Option<&'static MetricDef> {
    if *service == BOOKING_API {
        Some(&booking_metrics::api::BOOKING_CREATED)
    } else if *service == BOOKING_WORKER {
        Some(&booking_metrics::worker::BOOKING_CONFIRMED)
    } else {
        None
    }
}

/// The compute price of one billed millisecond, as a metric-math factor.
fn price_per_ms() -> String {
    format!("/1000*{MEMORY_MB}/1024*{}", placeholder(PRICE_PER_GB_SECOND))
}

/// The price of one request, as a metric-math term.
fn price_per_request() -> String {
    format!("{}/1000000", placeholder(PRICE_PER_MILLION_REQUESTS))
}

fn cost_row(service: &Service) -> Vec<Widget> {
    let name = service.name;
    let total = |visible: bool| -> Vec<Value> {
        vec![
            keel(
                name,
                &catalogue::BILLED_DURATION_MS,
                &[],
                json!({ "id": "billedMs", "stat": "Sum", "visible": false }),
            ),
            lambda(
                service,
                "Invocations",
                json!({ "id": "invocations", "stat": "Sum", "visible": false }),
            ),
            json!([{
                "expression": format!("billedMs{}+invocations*{}", price_per_ms(), price_per_request()),
                "id": "cost",
                "label": format!("USD per {} minutes", COST_PERIOD / 60),
                "visible": visible,
            }]),
        ]
    };
    let mut widgets = vec![graph(
        "Cost per invocation (USD)",
        8,
        "Average",
        COST_PERIOD,
        vec![
            keel(
                name,
                &catalogue::BILLED_DURATION_MS,
                &[],
                json!({ "id": "billedAvg", "stat": "Average", "visible": false }),
            ),
            expression(
                format!("billedAvg{}+{}", price_per_ms(), price_per_request()),
                "perInvocation",
                "USD per invocation",
            ),
        ],
    )];
    if let Some(def) = bookings(service) {
        let mut metrics = total(false);
        metrics.push(keel(
            name,
            def,
            &[],
            json!({ "id": "bookings", "stat": "Sum", "visible": false }),
        ));
        metrics.push(expression(
            "cost/bookings".into(),
            "perBooking",
            &format!("USD per booking ({})", def.name),
        ));
        widgets.push(graph("Cost per booking (USD)", 8, "Sum", COST_PERIOD, metrics));
    }
    widgets.push(graph(
        &format!("Cost per {} minutes (USD)", COST_PERIOD / 60),
        8,
        "Sum",
        COST_PERIOD,
        total(true),
    ));
    widgets
}

fn cost_header(service: &Service) -> String {
    let per_booking = bookings(service)
        .map(|def| format!(", per booking = that cost / `{}`", def.name))
        .unwrap_or_default();
    format!(
        "## Cost (estimate, Lambda only)\nPer invocation = average `BilledDurationMs` / 1000 × {MEMORY_MB} MB / 1024 × \
         `{PRICE_PER_GB_SECOND}` + `{PRICE_PER_MILLION_REQUESTS}` / 10⁶; per {} minutes = billed ms / 1000 × {MEMORY_MB} / 1024 × \
         price + invocations × request price / 10⁶{per_booking}. Tables, queues, topics and logs are not counted.",
        COST_PERIOD / 60,
    )
}

fn runbook(service: &Service, alarms: &[Alarm]) -> Widget {
    let mut markdown = format!(
        "## Runbook: alarms of {}\nA **canary** alarm is in the CodeDeploy deployment group: in `ALARM` while traffic shifts \
         to a new version, CodeDeploy shifts it back. An **operational** alarm notifies on-call (the alarm topic) and never \
         blocks a release.\n",
        service.name
    );
    for alarm in alarms {
        let role = match alarm.role {
            Role::Canary => "Canary: rolls a release back",
            Role::Operational => "Operational: notifies on-call, no rollback",
        };
        markdown.push_str(&format!(
            "\n### {}\n**{role}.** {}\n\n{}\n",
            alarm.name, alarm.description, alarm.runbook
        ));
    }
    let height = 3 + 3 * i64::try_from(alarms.len()).expect("a few alarms");
    text(GRID_COLUMNS, height, markdown)
}

/// The dashboard body of `service` (one of [`crate::services::RELEASED`]), placeholders
/// unresolved: the template puts it in an `AWS::CloudWatch::Dashboard` as `Fn::Sub` of its
/// JSON text.
pub fn body(service: &Service) -> Value {
    let alarms = alarms::for_service(service);
    let function = placeholder(&service.function());
    let mut grid = Grid::default();
    grid.row(vec![header(service)]);
    grid.row(vec![alarm_status(service, &alarms)]);
    grid.section(
        &format!("## Summary: `{function}` (AWS/Lambda, every version)"),
        summary(service),
    );
    grid.section(
        "## Keel: idempotency, concurrency, routed errors, platform",
        keel_row(service),
    );
    let own = if *service == BOOKING_API {
        format!(
            "## {}: its own metrics, and the canary hook's checks",
            service.name
        )
    } else {
        format!("## {}: its own metrics", service.name)
    };
    grid.section(&own, own_row(service));
    grid.section(
        "## Dependencies: DynamoDB tables, SQS queues",
        dependencies(service),
    );
    grid.section(
        &format!(
            "## Canary: the versions behind alias `{}` (CodeDeploy shifts traffic to the new one; its alarms watch it alone)",
            alarms::ALIAS
        ),
        canary_row(service),
    );
    grid.section(&cost_header(service), cost_row(service));
    grid.row(vec![runbook(service, &alarms)]);
    json!({
        "start": "-PT3H",
        "periodOverride": "inherit",
        "widgets": grid.placed,
    })
}
