//! The dashboards and alarms fit CloudWatch and the catalogue: each released service's dashboard
//! body is well formed (widget kinds, a 24-column grid without overlaps, metric arrays, metric-math
//! ids, only the placeholders the template substitutes); it shows every metric the service emits
//! with the dimensions the catalogue publishes it with, and every Keel metric it or the service's
//! alarms name is a catalogue entry with one of its dimension sets; every AWS metric has a
//! dimension set AWS documents for it; it lists every alarm and their runbook. The drawing of
//! each dashboard is well-formed XML naming every widget; the alarms can roll a five-minute
//! canary back and fit a deployment group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use keel_catalog::MetricDef;
use keel_infra::alarms::{self, Role};
use keel_infra::services::{Service, BOOKING_API, CANARY_HOOK, RELEASED};
use keel_infra::yaml::Node;
use keel_infra::{dashboard_svg, dashboards, template};
use regex::Regex;
use serde_json::Value;

const WIDGET_TYPES: [&str; 5] = ["metric", "text", "alarm", "log", "explorer"];

/// Metrics of one namespace and the dimension sets AWS documents for each of them.
type Documented = (
    &'static str,
    &'static [&'static str],
    &'static [&'static [&'static str]],
);

/// The dimension sets AWS documents for the metrics the dashboards and alarms read:
/// `(namespace, metrics, dimension sets)`.
const AWS_METRICS: &[Documented] = &[
    (
        "AWS/Lambda",
        &["Invocations", "Errors", "Throttles", "Duration"],
        &[
            &["FunctionName"],
            &["FunctionName", "Resource", "ExecutedVersion"],
        ],
    ),
    (
        "AWS/SQS",
        &[
            "ApproximateNumberOfMessagesVisible",
            "ApproximateAgeOfOldestMessage",
        ],
        &[&["QueueName"]],
    ),
    ("AWS/SNS", &["NumberOfNotificationsFailed"], &[&["TopicName"]]),
    (
        "AWS/DynamoDB",
        &["ReadThrottleEvents", "WriteThrottleEvents"],
        &[&["TableName"]],
    ),
    // Published per operation only.
    (
        "AWS/DynamoDB",
        &["ThrottledRequests", "SuccessfulRequestLatency"],
        &[&["TableName", "Operation"]],
    ),
];

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\$\{([^}]*)\}").unwrap());
static SEARCH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"SEARCH\('\{([^}]*)\}([^']*)',\s*'([^']+)'(?:,\s*(\d+))?\)").unwrap());
static TERM: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#"\s*([A-Za-z_]+)="([^"]*)""#).unwrap());
static ID: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z][A-Za-z0-9_]*$").unwrap());
static IDENTIFIER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b[A-Za-z_][A-Za-z0-9_]*\b").unwrap());

/// A metric a dashboard or an alarm names: a metric array, or a `SEARCH` (whose dimensions
/// without a filter are `None`: any value).
#[derive(Debug)]
struct Usage {
    namespace: String,
    name: String,
    dimensions: BTreeMap<String, Option<String>>,
    /// Where, for messages.
    at: String,
}

impl Usage {
    fn dimension_names(&self) -> BTreeSet<&str> {
        self.dimensions.keys().map(String::as_str).collect()
    }
}

fn widgets(body: &Value) -> &[Value] {
    body["widgets"].as_array().expect("a widgets array")
}

fn title(widget: &Value) -> &str {
    widget["properties"]["title"].as_str().unwrap_or("")
}

/// The placeholders a service's dashboard may hold: those `Fn::Sub` resolves in the template.
fn allowed_placeholders(service: &Service) -> BTreeSet<String> {
    let mut allowed: BTreeSet<String> = [
        "AWS::Region",
        "AWS::AccountId",
        "AWS::StackName",
        "AWS::Partition",
        "BookingQueueDeadLetters.QueueName",
        "BookingQueue.QueueName",
        "ErrorDeadLetterQueue.QueueName",
        "BookingsTable",
        "IdempotencyTable",
        "ConcurrencySlotsTable",
        dashboards::PRICE_PER_GB_SECOND,
        dashboards::PRICE_PER_MILLION_REQUESTS,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    allowed.insert(service.function());
    allowed
}

/// The searches in `expression`, as usages.
fn searches(expression: &str, at: &str) -> Vec<Usage> {
    assert_eq!(
        SEARCH.find_iter(expression).count(),
        expression.matches("SEARCH(").count(),
        "{at}: a SEARCH not of the form SEARCH('{{schema}} Name=\"value\"…', 'stat', period): {expression}"
    );
    SEARCH
        .captures_iter(expression)
        .map(|search| {
            let mut schema = search[1].split(',').map(str::trim);
            let namespace = schema.next().expect("a namespace").to_owned();
            let mut dimensions: BTreeMap<String, Option<String>> =
                schema.map(|name| (name.to_owned(), None)).collect();
            let terms = &search[2];
            assert!(
                TERM.replace_all(terms, "").trim().is_empty(),
                "{at}: search terms other than Name=\"value\": {terms}"
            );
            let mut name = None;
            for term in TERM.captures_iter(terms) {
                if &term[1] == "MetricName" {
                    name = Some(term[2].to_owned());
                } else {
                    let value = dimensions
                        .get_mut(&term[1])
                        .unwrap_or_else(|| panic!("{at}: filter on {} outside the schema", &term[1]));
                    *value = Some(term[2].to_owned());
                }
            }
            if let Some(period) = search.get(4) {
                let period: i64 = period.as_str().parse().unwrap();
                assert!(period > 0 && period % 60 == 0, "{at}: search period {period}");
            }
            Usage {
                namespace,
                name: name.unwrap_or_else(|| panic!("{at}: a search without MetricName: {expression}")),
                dimensions,
                at: at.to_owned(),
            }
        })
        .collect()
}

/// Checks one metric widget's `metrics` (arrays well formed, ids lowercase-first and unique,
/// expressions referring to ids of the widget) and returns the metrics it names.
fn metric_widget(widget: &Value, at: &str) -> Vec<Usage> {
    let properties = &widget["properties"];
    assert!(!title(widget).is_empty(), "{at}: a metric widget without a title");
    assert_eq!(properties["region"], "${AWS::Region}", "{at}");
    let period = properties["period"]
        .as_i64()
        .unwrap_or_else(|| panic!("{at}: no period"));
    assert!(period > 0 && period % 60 == 0, "{at}: period {period}");
    let lines = properties["metrics"]
        .as_array()
        .unwrap_or_else(|| panic!("{at}: no metrics"));
    assert!((1..=100).contains(&lines.len()), "{at}: {} metrics", lines.len());
    let mut usages = Vec::new();
    let mut ids = BTreeSet::new();
    let mut expressions = Vec::new();
    for line in lines {
        let items = line
            .as_array()
            .unwrap_or_else(|| panic!("{at}: a metric that is not an array: {line}"));
        let options = match items.as_slice() {
            [Value::Object(options)] if options.contains_key("expression") => {
                let expression = options["expression"].as_str().expect("an expression string");
                assert!(
                    options.contains_key("id"),
                    "{at}: an expression without an id: {expression}"
                );
                expressions.push(expression.to_owned());
                usages.extend(searches(expression, at));
                options
            }
            [Value::String(namespace), Value::String(name), rest @ ..] => {
                let (pairs, options) = match rest {
                    [pairs @ .., Value::Object(options)] => (pairs, Some(options)),
                    pairs => (pairs, None),
                };
                assert!(
                    pairs.len() % 2 == 0,
                    "{at}: dimensions not in name/value pairs: {line}"
                );
                let mut dimensions = BTreeMap::new();
                for pair in pairs.chunks(2) {
                    let (Some(key), Some(value)) = (pair[0].as_str(), pair[1].as_str()) else {
                        panic!("{at}: a dimension that is not a string pair: {line}");
                    };
                    assert!(
                        dimensions
                            .insert(key.to_owned(), Some(value.to_owned()))
                            .is_none(),
                        "{at}: dimension {key} twice: {line}"
                    );
                }
                usages.push(Usage {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    dimensions,
                    at: at.to_owned(),
                });
                match options {
                    Some(options) => options,
                    None => continue,
                }
            }
            _ => panic!("{at}: a malformed metric: {line}"),
        };
        for key in options.keys() {
            assert!(
                [
                    "expression",
                    "id",
                    "label",
                    "stat",
                    "period",
                    "visible",
                    "yAxis",
                    "color",
                    "region",
                    "accountId"
                ]
                .contains(&key.as_str()),
                "{at}: unknown rendering property {key}"
            );
        }
        if let Some(id) = options.get("id") {
            let id = id.as_str().expect("a string id");
            assert!(
                ID.is_match(id),
                "{at}: id {id} must start with a lowercase letter"
            );
            assert!(ids.insert(id.to_owned()), "{at}: id {id} twice");
        }
    }
    // A math expression reads ids of its widget; functions are upper case.
    for expression in &expressions {
        let without_searches = SEARCH.replace_all(expression, "");
        let stripped = PLACEHOLDER.replace_all(&without_searches, "0");
        for identifier in IDENTIFIER.find_iter(&stripped) {
            let identifier = identifier.as_str();
            if identifier.starts_with(|c: char| c.is_ascii_lowercase()) {
                assert!(
                    ids.contains(identifier),
                    "{at}: {expression} reads {identifier}, not an id here"
                );
            }
        }
    }
    usages
}

/// Checks the layout and every widget of `body`; returns the metrics it names.
fn check_body(service: &Service, body: &Value) -> Vec<Usage> {
    let widgets = widgets(body);
    assert!(!widgets.is_empty() && widgets.len() <= 500);
    let mut boxes = Vec::new();
    let mut usages = Vec::new();
    for (i, widget) in widgets.iter().enumerate() {
        let kind = widget["type"].as_str().expect("a type");
        let at = format!("{}: widget {i} ({kind} {:?})", service.name, title(widget));
        assert!(WIDGET_TYPES.contains(&kind), "{at}: unknown type");
        let [x, y, width, height] = ["x", "y", "width", "height"]
            .map(|key| widget[key].as_i64().unwrap_or_else(|| panic!("{at}: no {key}")));
        assert!(x >= 0 && y >= 0, "{at}");
        assert!((1..=24).contains(&width) && (1..=1000).contains(&height), "{at}");
        assert!(
            x + width <= dashboards::GRID_COLUMNS,
            "{at}: beyond the 24 columns"
        );
        for (j, (x2, y2, w2, h2)) in boxes.iter().enumerate() {
            let overlap = x < x2 + w2 && *x2 < x + width && y < y2 + h2 && *y2 < y + height;
            assert!(!overlap, "{at} overlaps widget {j}");
        }
        boxes.push((x, y, width, height));
        match kind {
            "metric" => usages.extend(metric_widget(widget, &at)),
            "text" => assert!(widget["properties"]["markdown"].is_string(), "{at}"),
            "alarm" => {
                let alarms = widget["properties"]["alarms"].as_array().expect("alarms");
                assert!((1..=100).contains(&alarms.len()), "{at}");
            }
            _ => {}
        }
    }
    usages
}

/// Every catalogue entry of every function: `(the service emitting it, entry)`.
fn catalogue() -> Vec<(&'static str, &'static MetricDef)> {
    let mut all = Vec::new();
    for service in RELEASED.iter().chain([&CANARY_HOOK]) {
        all.extend(service.metrics().map(|def| (service.name, def)));
    }
    all
}

/// What `service`'s dashboard must show: `(service dimension, entry)`.
fn expected(service: &Service) -> Vec<(&'static str, &'static MetricDef)> {
    let mut expected: Vec<_> = service.metrics().map(|def| (service.name, def)).collect();
    if *service == BOOKING_API {
        expected.extend(CANARY_HOOK.own.iter().map(|def| (CANARY_HOOK.name, *def)));
    }
    expected
}

/// A Keel metric named by `service`'s dashboard or alarms is a catalogue entry `service` emits
/// (or the canary hook's, on the booking API's dashboard) with one of its dimension sets.
fn check_keel_usage(service: &Service, usage: &Usage) {
    let at = &usage.at;
    let defs: Vec<_> = catalogue()
        .into_iter()
        .filter(|(_, def)| def.name == usage.name)
        .collect();
    assert!(
        !defs.is_empty(),
        "{at}: Keel metric {} is not in the catalogue",
        usage.name
    );
    let dimension_names = usage.dimension_names();
    let value = usage.dimensions.get("service").cloned().flatten();
    let fits = expected(service).iter().any(|(emitter, def)| {
        def.name == usage.name
            && value.as_deref() == Some(*emitter)
            && def
                .dimension_sets()
                .iter()
                .any(|set| set.iter().copied().collect::<BTreeSet<_>>() == dimension_names)
    });
    assert!(
        fits,
        "{at}: Keel {} with {:?}: not a dimension set {service} publishes it with ({:?})",
        usage.name,
        usage.dimensions,
        defs.iter()
            .map(|(s, def)| (s, def.dimension_sets()))
            .collect::<Vec<_>>(),
        service = service.name
    );
}

fn check_aws_usage(usage: &Usage) {
    let names = usage.dimension_names();
    let documented = AWS_METRICS.iter().any(|(namespace, metrics, sets)| {
        *namespace == usage.namespace
            && metrics.contains(&usage.name.as_str())
            && sets
                .iter()
                .any(|set| set.iter().copied().collect::<BTreeSet<_>>() == names)
    });
    assert!(
        documented,
        "{}: {} {} with {names:?}: not a documented dimension set",
        usage.at, usage.namespace, usage.name
    );
}

fn alarm_usages(service: &Service) -> Vec<Usage> {
    alarms::for_service(service)
        .iter()
        .flat_map(|alarm| {
            alarm
                .metrics()
                .into_iter()
                .map(|metric| Usage {
                    namespace: metric.namespace.to_owned(),
                    name: metric.name.to_owned(),
                    dimensions: metric
                        .dimensions
                        .iter()
                        .map(|(name, value)| ((*name).to_owned(), Some(value.clone())))
                        .collect(),
                    at: format!("alarm {}", alarm.id),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn each_dashboard_is_a_well_formed_body_with_known_placeholders() {
    for service in RELEASED {
        let body = dashboards::body(&service);
        check_body(&service, &body);
        let text = serde_json::to_string(&body).unwrap();
        let allowed = allowed_placeholders(&service);
        let found: Vec<&str> = PLACEHOLDER
            .captures_iter(&text)
            .map(|c| c.get(1).unwrap().as_str())
            .collect();
        assert_eq!(
            found.len(),
            text.matches("${").count(),
            "{}: a `${{` that is not a placeholder",
            service.name
        );
        for placeholder in found {
            assert!(
                allowed.contains(placeholder),
                "{}: ${{{placeholder}}}",
                service.name
            );
        }
    }
}

#[test]
fn the_resources_the_dashboards_name_are_in_the_template() {
    let template = template::template();
    let Some(Node::Map(resources)) = template.get("Resources") else {
        panic!("no Resources");
    };
    for service in RELEASED {
        let text = serde_json::to_string(&dashboards::body(&service)).unwrap();
        for placeholder in PLACEHOLDER.captures_iter(&text) {
            let reference = &placeholder[1];
            let resource = reference.split('.').next().unwrap();
            if reference.starts_with("AWS::")
                || [
                    dashboards::PRICE_PER_GB_SECOND,
                    dashboards::PRICE_PER_MILLION_REQUESTS,
                ]
                .contains(&reference)
            {
                continue;
            }
            assert!(
                resources.iter().any(|(id, _)| id == resource),
                "{}: ${{{reference}}} names no resource of the template",
                service.name
            );
        }
    }
}

#[test]
fn each_dashboard_shows_every_metric_of_its_service_with_its_catalogue_dimensions() {
    for service in RELEASED {
        let usages = check_body(&service, &dashboards::body(&service));
        for (emitter, def) in expected(&service) {
            let wanted: BTreeSet<&str> = def.dimensions.iter().copied().collect();
            let shown = usages.iter().any(|usage| {
                usage.namespace == alarms::KEEL_NAMESPACE
                    && usage.name == def.name
                    && usage.dimension_names() == wanted
                    && usage.dimensions["service"].as_deref() == Some(emitter)
            });
            assert!(
                shown,
                "{}: {} (service {emitter}, {:?}) is not on the dashboard",
                service.name, def.name, def.dimensions
            );
        }
    }
}

#[test]
fn every_metric_the_dashboards_and_alarms_name_is_published_so() {
    for service in RELEASED {
        let mut usages = check_body(&service, &dashboards::body(&service));
        usages.extend(alarm_usages(&service));
        for usage in &usages {
            if usage.namespace == alarms::KEEL_NAMESPACE {
                check_keel_usage(&service, usage);
            } else {
                check_aws_usage(usage);
            }
        }
    }
}

#[test]
fn each_dashboard_lists_every_alarm_and_its_runbook() {
    for service in RELEASED {
        let body = dashboards::body(&service);
        let alarms = alarms::for_service(&service);
        let listed: Vec<&Value> = widgets(&body).iter().filter(|w| w["type"] == "alarm").collect();
        assert_eq!(listed.len(), 1, "{}: one alarm widget", service.name);
        let arns: Vec<&str> = listed[0]["properties"]["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|arn| arn.as_str().unwrap())
            .collect();
        let expected: Vec<String> = alarms
            .iter()
            .map(|alarm| {
                format!(
                    "arn:${{AWS::Partition}}:cloudwatch:${{AWS::Region}}:${{AWS::AccountId}}:alarm:{}",
                    alarm.name
                )
            })
            .collect();
        assert_eq!(arns, expected, "{}", service.name);
        let markdown: String = widgets(&body)
            .iter()
            .filter_map(|w| w["properties"]["markdown"].as_str())
            .collect::<Vec<_>>()
            .join("\n");
        for alarm in &alarms {
            for text in [&alarm.name, &alarm.description, alarm.runbook] {
                assert!(
                    markdown.contains(text),
                    "{}: the runbook lacks {text}",
                    service.name
                );
            }
            let role = match alarm.role {
                Role::Canary => "Canary: rolls a release back",
                Role::Operational => "Operational: notifies on-call",
            };
            assert!(
                markdown.contains(&format!("### {}\n**{role}", alarm.name)),
                "{}: {} without its role",
                service.name,
                alarm.name
            );
        }
    }
}

#[test]
fn cost_is_computed_from_billed_duration_memory_and_prices() {
    let gb_second = format!("${{{}}}", dashboards::PRICE_PER_GB_SECOND);
    let request = format!("${{{}}}", dashboards::PRICE_PER_MILLION_REQUESTS);
    for service in RELEASED {
        let body = dashboards::body(&service);
        let expressions: Vec<&str> = widgets(&body)
            .iter()
            .filter(|w| title(w).starts_with("Cost per"))
            .flat_map(|w| w["properties"]["metrics"].as_array().unwrap())
            .filter_map(|line| line[0]["expression"].as_str())
            .collect();
        let memory = dashboards::MEMORY_MB;
        assert!(
            expressions
                .contains(&format!("billedAvg/1000*{memory}/1024*{gb_second}+{request}/1000000").as_str()),
            "{}: {expressions:?}",
            service.name
        );
        assert!(
            expressions.contains(
                &format!("billedMs/1000*{memory}/1024*{gb_second}+invocations*{request}/1000000").as_str()
            ),
            "{}: {expressions:?}",
            service.name
        );
        assert!(
            expressions.contains(&"cost/bookings"),
            "{}: {expressions:?}",
            service.name
        );
    }
}

#[test]
fn the_cost_row_uses_the_templates_memory_size() {
    let template = template::template();
    let memory = template
        .get("Globals")
        .and_then(|globals| globals.get("Function"))
        .and_then(|function| function.get("MemorySize"));
    assert_eq!(memory, Some(&Node::Int(dashboards::MEMORY_MB)));
}

/// `svg` is well-formed XML with an `svg` root: every token parses and elements nest.
fn check_well_formed(svg: &str) {
    use xmlparser::{ElementEnd, Token, Tokenizer};
    let mut open: Vec<String> = Vec::new();
    let mut roots = 0;
    for token in Tokenizer::from(svg) {
        match token.unwrap_or_else(|error| panic!("not XML: {error}")) {
            Token::ElementStart { local, .. } => {
                if open.is_empty() {
                    roots += 1;
                    assert_eq!(local.as_str(), "svg", "the root element");
                }
                open.push(local.as_str().to_owned());
            }
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open => {}
                ElementEnd::Empty => {
                    open.pop();
                }
                ElementEnd::Close(_, local) => {
                    assert_eq!(
                        open.pop().as_deref(),
                        Some(local.as_str()),
                        "mismatched </{local}>"
                    );
                }
            },
            _ => {}
        }
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
    assert_eq!(roots, 1);
}

#[test]
fn each_drawing_is_well_formed_and_names_every_widget() {
    for service in RELEASED {
        let body = dashboards::body(&service);
        let svg = dashboard_svg::render(&body, service.name);
        assert_eq!(svg, dashboard_svg::render(&body, service.name), "deterministic");
        check_well_formed(&svg);
        assert_eq!(svg.matches("<g class=\"widget ").count(), widgets(&body).len());
        for widget in widgets(&body) {
            let title = title(widget);
            if widget["type"] != "text" {
                assert!(
                    svg.contains(&format!("<title>{}</title>", dashboard_svg::escape(title))),
                    "{}: {title}",
                    service.name
                );
            }
        }
    }
}

#[test]
fn the_drawing_escapes_xml() {
    let body = serde_json::json!({ "widgets": [
        { "type": "metric", "x": 0, "y": 0, "width": 6, "height": 6,
          "properties": { "title": "a < b & \"c\"", "metrics": [["N", "M<&>", { "label": "'x' > y" }]] } },
        { "type": "text", "x": 6, "y": 0, "width": 6, "height": 2, "properties": { "markdown": "# <b>&</b>\n]]> --" } },
        { "type": "alarm", "x": 12, "y": 0, "width": 12, "height": 3, "properties": { "title": "A&A", "alarms": ["arn:aws:cloudwatch:r:1:alarm:x<y"] } },
    ]});
    let svg = dashboard_svg::render(&body, "T & <T>");
    check_well_formed(&svg);
    assert!(svg.contains("<title>a &lt; b &amp; &quot;c&quot;</title>"));
}

/// The period of a `PutMetricAlarm` input: its own, or its metric queries'.
fn alarm_period(input: &Value) -> i64 {
    input["Period"].as_i64().unwrap_or_else(|| {
        input["Metrics"]
            .as_array()
            .expect("a period or metric queries")
            .iter()
            .filter_map(|query| query["MetricStat"]["Period"].as_i64())
            .max()
            .expect("a metric query with a period")
    })
}

#[test]
fn the_alarm_documents_fit_codedeploy_and_a_five_minute_canary() {
    for service in RELEASED {
        let document = alarms::document(&service);
        let entries = document["Alarms"].as_array().expect("Alarms");
        let canary: Vec<&Value> = entries.iter().filter(|alarm| alarm["Role"] == "canary").collect();
        assert!(!canary.is_empty(), "{}", service.name);
        assert!(
            canary.len() <= alarms::MAX_DEPLOYMENT_GROUP_ALARMS,
            "{}: {} canary alarms",
            service.name,
            canary.len()
        );
        let mut names = BTreeSet::new();
        for alarm in entries {
            let input = &alarm["PutMetricAlarm"];
            let name = input["AlarmName"].as_str().unwrap();
            assert!(names.insert(name), "{name} twice");
            let m = input["DatapointsToAlarm"].as_i64().unwrap();
            let n = input["EvaluationPeriods"].as_i64().unwrap();
            assert!(1 <= m && m <= n, "{name}: {m} of {n}");
            if alarm["Role"] == "canary" {
                let period = alarm_period(input);
                assert!(
                    m * period <= 300,
                    "{name}: {m} × {period} s cannot fire in a five-minute canary"
                );
            }
        }
    }
}

#[test]
fn every_catalogue_metric_is_on_a_dashboard() {
    let shown: Vec<&str> = RELEASED
        .iter()
        .flat_map(|service| expected(service).into_iter().map(|(_, def)| def.name))
        .collect();
    let own = RELEASED
        .iter()
        .chain([&CANARY_HOOK])
        .flat_map(|service| service.own.iter());
    for def in keel_catalog::keel::ALL.iter().chain(own) {
        assert!(shown.contains(&def.name), "{} is on no dashboard", def.name);
    }
}
