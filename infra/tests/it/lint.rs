//! The template passes cfn-lint (before and after its SAM translation) and checkov, and what it
//! deploys fits the code: every function carries the Keel extension layer built by
//! `scripts/package-extension.sh` (`tests/tests/it/extension.rs` checks the zip is where the
//! template looks), gets every variable its code and Keel read, and its role is least
//! privilege; Keel's tables are keyed as its stores expect, and a guarded function may do on the
//! slots table exactly what the slot store does; the booking worker reads the queue subscribed to the topic the booking API
//! publishes to, with the queue's redrive count; the canary hook is named and timed as CodeDeploy
//! and its checks need.
//!
//! The checks read the SAM translation the lint script writes, as CloudFormation will see it
//! (`Globals` merged into each function).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::LazyLock;

use keel_infra::template::{KeelTable, EXTENSION_LAYER, RELAY_ADDR, SLOT_ACTIONS};
use regex::Regex;
use serde_json::{json, Value};

/// The variables the template must set for each function, by binary: those it cannot start
/// without, and `QUEUE_MAX_RECEIVE_COUNT`, whose default would not follow the queue's redrive
/// policy.
const REQUIRED: [(&str, &[&str]); 3] = [
    ("booking-api", &["BOOKINGS_TABLE", "BOOKING_TOPIC_ARN"]),
    ("booking-worker", &["BOOKINGS_TABLE", "QUEUE_MAX_RECEIVE_COUNT"]),
    ("canary-hook", &["TARGET_FUNCTION"]),
];

/// The lint script's run: its output, and the translation it wrote when it passed.
static LINTED: LazyLock<(String, Option<Value>)> = LazyLock::new(|| {
    let root = keel_tests::workspace_root();
    let lint = Command::new("bash")
        .arg(root.join("scripts/lint-template.sh"))
        .output()
        .expect("the lint script runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let translated = lint.status.success().then(|| {
        serde_json::from_str(
            &std::fs::read_to_string(root.join("target/infra/template.translated.json")).unwrap(),
        )
        .unwrap()
    });
    (output, translated)
});

/// The SAM translation of the template; the lint must have passed.
pub(crate) fn translated() -> &'static Value {
    match &*LINTED {
        (_, Some(translated)) => translated,
        (output, None) => panic!("cfn-lint or checkov failed:\n{output}"),
    }
}

/// The translation's resources.
pub(crate) fn resources() -> &'static serde_json::Map<String, Value> {
    translated()["Resources"].as_object().unwrap()
}

/// The template's functions: logical id and binary (from the SAM template's `CodeUri`,
/// `../target/lambda/<binary>/`), each with its translated resource.
fn functions() -> Vec<(String, String, &'static Value)> {
    let root = keel_tests::workspace_root();
    let text = std::fs::read_to_string(root.join("infra/template.yaml")).unwrap();
    let template = &yaml_rust2::YamlLoader::load_from_str(&text).unwrap()[0];
    let functions: Vec<_> = template["Resources"]
        .as_hash()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|(id, r)| {
            let id = id.as_str().unwrap().to_owned();
            let code = r["Properties"]["CodeUri"].as_str().unwrap();
            let binary = code
                .strip_prefix("../target/lambda/")
                .and_then(|rest| rest.strip_suffix('/'))
                .unwrap_or_else(|| panic!("{id}: CodeUri {code} is not a cargo-lambda build"))
                .to_owned();
            let function = &resources()[&id];
            assert_eq!(function["Type"], "AWS::Lambda::Function", "{id}");
            (id, binary, function)
        })
        .collect();
    assert!(!functions.is_empty());
    functions
}

/// The function built from `binary`: logical id and translated resource.
fn function(binary: &str) -> (String, &'static Value) {
    functions()
        .into_iter()
        .find(|(_, b, _)| b == binary)
        .map(|(id, _, function)| (id, function))
        .unwrap_or_else(|| panic!("the template has no {binary} function"))
}

/// The statements of the role of `function`: its own policies and the policies attached to it.
fn role_statements(function: &Value) -> Vec<&'static Value> {
    let resources = resources();
    let role_id = function["Properties"]["Role"]["Fn::GetAtt"][0].as_str().unwrap();
    let role = &resources[role_id];
    assert_eq!(role["Type"], "AWS::IAM::Role", "{role_id}");
    let mut statements: Vec<&Value> = role["Properties"]["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().unwrap())
        .collect();
    statements.extend(
        resources
            .values()
            .filter(|r| r["Type"] == "AWS::IAM::Policy")
            .filter(|p| {
                p["Properties"]["Roles"]
                    .as_array()
                    .unwrap()
                    .contains(&serde_json::json!({ "Ref": role_id }))
            })
            .flat_map(|p| p["Properties"]["PolicyDocument"]["Statement"].as_array().unwrap()),
    );
    statements
}

/// The actions of a statement.
fn actions(statement: &Value) -> Vec<&str> {
    match &statement["Action"] {
        Value::String(action) => vec![action.as_str()],
        actions => actions
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect(),
    }
}

/// Whether `statements` allow `action` on `resource` (one of a statement's resources).
fn allows(statements: &[&Value], action: &str, resource: &Value) -> bool {
    statements.iter().any(|statement| {
        statement["Effect"] == "Allow"
            && actions(statement).contains(&action)
            && match &statement["Resource"] {
                Value::Array(resources) => resources.contains(resource),
                one => one == resource,
            }
    })
}

/// `{Fn::GetAtt: [id, Arn]}`.
fn arn_of(id: &str) -> Value {
    serde_json::json!({ "Fn::GetAtt": [id, "Arn"] })
}

/// `{Ref: id}`.
fn ref_to(id: &str) -> Value {
    serde_json::json!({ "Ref": id })
}

/// A function's environment variables.
fn variables(function: &Value) -> &serde_json::Map<String, Value> {
    function["Properties"]["Environment"]["Variables"]
        .as_object()
        .unwrap_or_else(|| panic!("no environment: {function}"))
}

/// The value of a variable that must be set.
fn var<'a>(variables: &'a serde_json::Map<String, Value>, name: &str) -> &'a Value {
    variables
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not set: {variables:?}"))
}

/// A whole number a variable holds.
fn number(variables: &serde_json::Map<String, Value>, name: &str) -> u64 {
    let value = var(variables, name);
    value
        .as_str()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not a whole number: {value}"))
}

/// The source of `functions/<binary>`, every `.rs` file under `src/`.
fn source_of(binary: &str) -> String {
    fn read(dir: &Path, into: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                read(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                into.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut source = String::new();
    read(
        &keel_tests::workspace_root()
            .join("functions")
            .join(binary)
            .join("src"),
        &mut source,
    );
    source
}

/// The variables a function's own code reads (`std::env::var("…")` and its helpers named `var`
/// or `required`), except the `AWS_*` ones Lambda sets.
fn variables_read_by(binary: &str) -> BTreeSet<String> {
    static READ: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#"\b(?:var|required)\(\s*"([A-Z][A-Z0-9_]*)""#).unwrap());
    READ.captures_iter(&source_of(binary))
        .map(|c| c[1].to_owned())
        .filter(|name| !name.starts_with("AWS_"))
        .collect()
}

/// Whether a function's code configures a concurrency guard from the environment: a
/// `ConcurrencyGuard::…(…)` chain calling `.with_env()`, which reads `KEEL_CONCURRENCY_TABLE`.
fn guards_from_env(source: &str) -> bool {
    static WITH_ENV: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\bConcurrencyGuard::\w+\([^;]*?\.with_env\(\)").unwrap());
    WITH_ENV.is_match(source)
}

/// The logical id of the table a variable refers to (`{Ref: <table>}`).
fn table_of(variables: &serde_json::Map<String, Value>, name: &str) -> &'static str {
    let target = var(variables, name)["Ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} does not refer to a table: {variables:?}"));
    let (table, resource) = resources()
        .get_key_value(target)
        .unwrap_or_else(|| panic!("{name} refers to {target}, which the template lacks"));
    assert_eq!(resource["Type"], "AWS::DynamoDB::Table", "{name}: {table}");
    table
}

/// The actions `statements` allow on the table `table` (on its ARN, or on anything under it).
fn actions_on(statements: &[&Value], table: &str) -> BTreeSet<String> {
    statements
        .iter()
        .filter(|statement| statement["Effect"] == "Allow")
        .filter(|statement| statement["Resource"].to_string().contains(table))
        .flat_map(|statement| actions(statement))
        .map(str::to_owned)
        .collect()
}

#[test]
fn guards_from_env_recognises_a_guard_configured_from_the_environment() {
    assert!(guards_from_env(
        "let guard = ConcurrencyGuard::per_key(api::resource_of, LIMIT)\n        .with_env()\n        .await?;"
    ));
    assert!(guards_from_env(
        r#"ConcurrencyGuard::per_pointer("/resource_id", 5).with_env().await?"#
    ));
    assert!(!guards_from_env(
        r#"let guard = ConcurrencyGuard::global("partner", 5); Idempotency::from_env().await?;"#
    ));
    assert!(!guards_from_env(
        "use keel_runtime::concurrency::ConcurrencyGuard;\nlet x = config.with_env();"
    ));
}

#[test]
fn the_template_lints_clean() {
    let (output, _) = &*LINTED;
    translated();
    assert!(output.contains("Failed checks: 0"), "{output}");
}

#[test]
fn the_template_deploys_every_function() {
    let root = keel_tests::workspace_root();
    let mut binaries: Vec<String> = std::fs::read_dir(root.join("functions"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("src/main.rs").is_file())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    binaries.sort();
    let mut deployed: Vec<String> = functions().into_iter().map(|(_, binary, _)| binary).collect();
    deployed.sort();
    assert_eq!(deployed, binaries);
    let required: Vec<&str> = REQUIRED.iter().map(|(binary, _)| *binary).collect();
    assert_eq!(deployed, required, "REQUIRED lists every function");
}

#[test]
fn every_function_carries_the_extension_layer_and_a_least_privilege_role() {
    let resources = resources();
    for (name, _, function) in functions() {
        let properties = &function["Properties"];
        let layers = properties["Layers"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no layers"));
        // One layer, the extension built for the stack's architecture.
        assert_eq!(layers.len(), 1, "{name}: {layers:?}");
        // SAM names a layer version after its content: `KeelExtensionLayer<hash>`.
        let id = layers[0]["Ref"].as_str().unwrap_or_default();
        assert!(id.starts_with(EXTENSION_LAYER), "{name}: {layers:?}");
        let layer = &resources[id];
        assert_eq!(layer["Type"], "AWS::Lambda::LayerVersion", "{name}: {id}");
        assert!(layer["Properties"]["LayerName"]
            .to_string()
            .contains("keel-extension"));
        assert_eq!(
            layer["Properties"]["CompatibleArchitectures"][0]["Ref"],
            "Architecture"
        );
        assert_eq!(properties["Architectures"][0]["Ref"], "Architecture");

        // Least privilege: no managed policies, no wildcard actions; a wildcard resource only
        // for X-Ray, which has no resource-level permissions.
        let role = &resources[properties["Role"]["Fn::GetAtt"][0].as_str().unwrap()];
        assert!(
            role["Properties"]["ManagedPolicyArns"].is_null(),
            "{name}: {role}"
        );
        for statement in role_statements(function) {
            let actions = actions(statement);
            assert!(actions.iter().all(|a| !a.contains('*')), "{name}: {statement}");
            if statement["Resource"] == "*" {
                assert!(
                    actions.iter().all(|a| a.starts_with("xray:")),
                    "{name}: {statement}"
                );
            }
        }
    }
}

#[test]
fn every_function_gets_every_variable_its_code_and_keel_read() {
    let translated = translated();
    let resources = resources();
    for (name, binary, function) in functions() {
        let variables = variables(function);
        let missing = |wanted: &mut dyn Iterator<Item = &str>| -> Vec<String> {
            wanted
                .filter(|v| {
                    !variables
                        .get(*v)
                        .is_some_and(|value| value != "" && !value.is_null())
                })
                .map(str::to_owned)
                .collect()
        };

        let (_, required) = REQUIRED
            .iter()
            .find(|(b, _)| *b == binary)
            .unwrap_or_else(|| panic!("{binary} is not in REQUIRED"));
        let unset = missing(&mut required.iter().copied());
        assert!(
            unset.is_empty(),
            "{name} ({binary}) needs {unset:?}: {variables:?}"
        );

        // Whatever else its own code reads (optional variables with defaults included): a new
        // variable fails here until the template sets it.
        let read = variables_read_by(&binary);
        assert!(
            required.iter().all(|v| read.contains(*v)),
            "{binary} reads {read:?}, not all of {required:?}"
        );
        let unset = missing(&mut read.iter().map(String::as_str));
        assert!(unset.is_empty(), "{name} ({binary}) reads {unset:?}, unset");

        // Keel: the service name, the log level, where errors are routed (the relay the
        // extension serves, else the topic, else the queue), and the idempotency records of a
        // function that keeps them.
        assert_eq!(var(variables, "KEEL_SERVICE"), binary.as_str(), "{name}");
        assert_eq!(var(variables, "KEEL_LOG_LEVEL"), &ref_to("LogLevel"), "{name}");
        assert_eq!(var(variables, "KEEL_EXTENSION_ADDR"), RELAY_ADDR, "{name}");
        assert_eq!(
            var(variables, "KEEL_ERROR_TOPIC_ARN"),
            &ref_to("ErrorTopic"),
            "{name}"
        );
        assert_eq!(
            var(variables, "KEEL_DLQ_URL"),
            &ref_to("ErrorDeadLetterQueue"),
            "{name}"
        );
        let source = source_of(&binary);
        if source.contains("Idempotency::from_env") {
            assert_eq!(
                var(variables, "KEEL_IDEMPOTENCY_TABLE"),
                &ref_to("IdempotencyTable"),
                "{name}"
            );
        }
        // A concurrency guard configured from the environment counts in memory, within one
        // execution environment, unless it gets the slots table; a function without one gets
        // neither the table nor access to it.
        if guards_from_env(&source) {
            assert_eq!(
                var(variables, "KEEL_CONCURRENCY_TABLE"),
                &ref_to("ConcurrencySlotsTable"),
                "{name}"
            );
        } else {
            assert!(
                !variables.contains_key("KEEL_CONCURRENCY_TABLE"),
                "{name} ({binary}) guards nothing from the environment: {variables:?}"
            );
        }

        // What a variable refers to is in the template, and the role may use it.
        for (variable, value) in variables {
            if let Some(target) = value["Ref"].as_str() {
                assert!(
                    resources.contains_key(target) || translated["Parameters"].get(target).is_some(),
                    "{name}: {variable} refers to {target}, which the template lacks"
                );
            }
        }
        let statements = role_statements(function);
        assert!(
            allows(&statements, "sns:Publish", &ref_to("ErrorTopic")),
            "{name}"
        );
        assert!(
            allows(&statements, "sqs:SendMessage", &arn_of("ErrorDeadLetterQueue")),
            "{name}"
        );
        assert!(allows(&statements, "kms:Decrypt", &arn_of("KeelKey")), "{name}");
        if variables.contains_key("KEEL_IDEMPOTENCY_TABLE") {
            for action in [
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
            ] {
                assert!(
                    allows(&statements, action, &arn_of("IdempotencyTable")),
                    "{name}: {action}"
                );
            }
        }
        if variables.contains_key("KEEL_CONCURRENCY_TABLE") {
            for action in SLOT_ACTIONS {
                assert!(
                    allows(&statements, action, &arn_of("ConcurrencySlotsTable")),
                    "{name}: {action}"
                );
            }
        }
    }
}

#[test]
fn keels_tables_are_keyed_and_expire_as_its_stores_expect() {
    let runtime = [
        (
            "KEEL_IDEMPOTENCY_TABLE",
            keel_infra::template::IDEMPOTENCY_TABLE,
            keel_runtime::idempotency::TABLE,
        ),
        (
            "KEEL_CONCURRENCY_TABLE",
            keel_infra::template::SLOT_TABLE,
            keel_runtime::concurrency::SLOT_TABLE,
        ),
    ];
    for (variable, template, expected) in runtime {
        // The generator's copy of the runtime's definition.
        assert_eq!(
            template,
            KeelTable {
                key_attribute: expected.key_attribute,
                ttl_attribute: expected.ttl_attribute,
            },
            "{variable}"
        );

        // The table the functions are given: keyed, expiring and kept as the runtime expects.
        let (_, function) = functions()
            .into_iter()
            .map(|(id, _, function)| (id, function))
            .find(|(_, function)| variables(function).contains_key(variable))
            .unwrap_or_else(|| panic!("no function gets {variable}"));
        let id = table_of(variables(function), variable);
        let table = &resources()[id];
        let properties = &table["Properties"];
        assert_eq!(
            properties["KeySchema"],
            serde_json::json!([{ "AttributeName": expected.key_attribute, "KeyType": "HASH" }]),
            "{id}"
        );
        assert_eq!(
            properties["AttributeDefinitions"],
            serde_json::json!([{ "AttributeName": expected.key_attribute, "AttributeType": "S" }]),
            "{id}"
        );
        assert_eq!(
            properties["TimeToLiveSpecification"],
            serde_json::json!({ "AttributeName": expected.ttl_attribute, "Enabled": true }),
            "{id}"
        );
        assert_eq!(properties["BillingMode"], "PAY_PER_REQUEST", "{id}");
        assert_eq!(
            properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true,
            "{id}"
        );
        assert_eq!(
            properties["SSESpecification"],
            serde_json::json!({ "SSEEnabled": true, "SSEType": "KMS", "KMSMasterKeyId": ref_to("KeelKey") }),
            "{id}"
        );
        // What it holds expires by itself.
        assert_eq!(table["DeletionPolicy"], "Delete", "{id}");
    }
}

#[test]
fn a_guarded_function_may_do_on_the_slots_table_exactly_what_the_slot_store_does() {
    // The calls Keel's DynamoDB slot store makes (`self.client.put_item()…`), as IAM actions.
    let store =
        std::fs::read_to_string(keel_tests::workspace_root().join("runtime/src/concurrency/dynamodb.rs"))
            .unwrap();
    let calls: BTreeSet<String> = Regex::new(r"\.client\s*\.([a-z_]+)\(\)")
        .unwrap()
        .captures_iter(&store)
        .map(|c| {
            let operation: String = c[1]
                .split('_')
                .map(|word| {
                    let mut chars = word.chars();
                    chars
                        .next()
                        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                        .unwrap_or_default()
                })
                .collect();
            format!("dynamodb:{operation}")
        })
        .collect();
    assert!(!calls.is_empty(), "no DynamoDB calls found in the slot store");
    let granted: BTreeSet<String> = SLOT_ACTIONS.iter().map(|a| (*a).to_owned()).collect();
    assert_eq!(granted, calls, "SLOT_ACTIONS are the slot store's calls");

    let mut guarded = 0;
    for (name, _, function) in functions() {
        let variables = variables(function);
        let on_slots = actions_on(&role_statements(function), "ConcurrencySlotsTable");
        if variables.contains_key("KEEL_CONCURRENCY_TABLE") {
            guarded += 1;
            assert_eq!(
                table_of(variables, "KEEL_CONCURRENCY_TABLE"),
                "ConcurrencySlotsTable"
            );
            assert_eq!(on_slots, calls, "{name}");
        } else {
            assert!(on_slots.is_empty(), "{name} may {on_slots:?} on the slots table");
        }
    }
    assert!(guarded > 0, "no function gets the slots table");
}

#[test]
fn the_worker_reads_the_queue_subscribed_to_the_topic_the_api_publishes_to() {
    let resources = resources();
    let (_, api) = function("booking-api");
    let (worker_id, worker) = function("booking-worker");
    let api_variables = variables(api);
    let worker_variables = variables(worker);
    assert_eq!(
        var(worker_variables, "BOOKINGS_TABLE"),
        var(api_variables, "BOOKINGS_TABLE")
    );
    let topic = var(api_variables, "BOOKING_TOPIC_ARN")["Ref"].as_str().unwrap();

    // The worker's one event source: a queue, answered with the records that failed.
    let mappings: Vec<&Value> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::Lambda::EventSourceMapping")
        // Through the alias CodeDeploy shifts.
        .filter(|m| m["Properties"]["FunctionName"] == ref_to(&format!("{worker_id}Aliaslive")))
        .collect();
    assert_eq!(mappings.len(), 1, "{mappings:?}");
    let mapping = &mappings[0]["Properties"];
    assert_eq!(
        mapping["FunctionResponseTypes"],
        serde_json::json!(["ReportBatchItemFailures"])
    );
    assert_eq!(mapping["BatchSize"], 10);
    assert!(
        mapping["MaximumBatchingWindowInSeconds"].as_u64().is_some(),
        "{mapping}"
    );
    let queue_id = mapping["EventSourceArn"]["Fn::GetAtt"][0].as_str().unwrap();
    let queue = &resources[queue_id]["Properties"];

    // Visible again only after six times the worker's timeout; QUEUE_MAX_RECEIVE_COUNT is the
    // count after which the queue moves a message to its dead-letter queue, encrypted and kept
    // 14 days.
    let timeout = worker["Properties"]["Timeout"].as_u64().unwrap();
    assert!(
        queue["VisibilityTimeout"].as_u64().unwrap() >= 6 * timeout,
        "{queue}"
    );
    let redrive = &queue["RedrivePolicy"];
    assert_eq!(
        redrive["maxReceiveCount"].as_u64().unwrap(),
        number(worker_variables, "QUEUE_MAX_RECEIVE_COUNT"),
        "the worker routes a record when the queue moves it"
    );
    let dead_letters = &resources[redrive["deadLetterTargetArn"]["Fn::GetAtt"][0].as_str().unwrap()];
    assert_eq!(dead_letters["Properties"]["MessageRetentionPeriod"], 1_209_600);
    for queue in [queue, &dead_letters["Properties"]] {
        assert_eq!(queue["KmsMasterKeyId"], ref_to("KeelKey"), "{queue}");
    }

    // Subscribed to the booking topic; only that topic may send to it, and SNS may use the key.
    let queue_arn = arn_of(queue_id);
    assert!(
        resources.values().any(|r| r["Type"] == "AWS::SNS::Subscription"
            && r["Properties"]["TopicArn"] == ref_to(topic)
            && r["Properties"]["Protocol"] == "sqs"
            && r["Properties"]["Endpoint"] == queue_arn),
        "{queue_id} is not subscribed to {topic}"
    );
    let policies: Vec<&Value> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::SQS::QueuePolicy")
        .filter(|p| {
            p["Properties"]["Queues"]
                .as_array()
                .unwrap()
                .contains(&ref_to(queue_id))
        })
        .collect();
    assert_eq!(policies.len(), 1);
    let statements = policies[0]["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    assert!(!statements.is_empty());
    for statement in statements {
        assert_eq!(
            statement["Principal"],
            serde_json::json!({"Service": "sns.amazonaws.com"})
        );
        assert_eq!(actions(statement), ["sqs:SendMessage"]);
        assert_eq!(statement["Resource"], queue_arn);
        assert_eq!(
            statement["Condition"]["ArnEquals"]["aws:SourceArn"],
            ref_to(topic)
        );
    }
    let key = &resources["KeelKey"]["Properties"]["KeyPolicy"]["Statement"];
    assert!(
        key.as_array()
            .unwrap()
            .iter()
            .any(|s| s["Principal"]["Service"] == "sns.amazonaws.com"
                && ["kms:GenerateDataKey*", "kms:Decrypt"]
                    .iter()
                    .all(|a| actions(s).contains(a))),
        "{key}"
    );

    // The worker's role reads the queue and settles bookings: exactly the calls it makes.
    let statements = role_statements(worker);
    for action in [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    ] {
        assert!(allows(&statements, action, &queue_arn), "{action}");
    }
    let table_id = var(worker_variables, "BOOKINGS_TABLE")["Ref"].as_str().unwrap();
    let expected: BTreeSet<String> = [
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:ConditionCheckItem",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(actions_on(&statements, table_id), expected);
}

#[test]
fn the_canary_hook_is_named_for_codedeploy_and_checks_the_api_within_its_time() {
    let (api_id, _) = function("booking-api");
    let (_, hook) = function("canary-hook");
    let properties = &hook["Properties"];
    // CodeDeploy's managed role for Lambda invokes only functions named `CodeDeployHook_*`.
    let name = properties["FunctionName"]["Fn::Sub"]
        .as_str()
        .or(properties["FunctionName"].as_str())
        .unwrap();
    assert!(name.starts_with("CodeDeployHook_"), "{name}");

    // Its two checks run one after the other, each in full, and leave it the time it keeps for
    // its report.
    let variables = variables(hook);
    assert!(
        var(variables, "TARGET_FUNCTION").to_string().contains(&api_id),
        "{variables:?}"
    );
    let reserve = Regex::new(r"const REPORT_RESERVE: Duration = Duration::from_millis\(([0-9_]+)\)")
        .unwrap()
        .captures(&source_of("canary-hook"))
        .map(|c| c[1].replace('_', "").parse::<u64>().unwrap())
        .expect("canary-hook keeps REPORT_RESERVE for its report");
    assert_eq!(reserve, keel_infra::template::CANARY_REPORT_MARGIN_MS as u64);
    let check_ms = number(variables, "CANARY_CHECK_TIMEOUT_MS");
    let timeout_ms = properties["Timeout"].as_u64().unwrap() * 1000;
    assert!(
        2 * check_ms + reserve <= timeout_ms,
        "two checks of {check_ms} ms and the report do not fit in {timeout_ms} ms"
    );

    let statements = role_statements(hook);
    assert!(allows(&statements, "lambda:InvokeFunction", &arn_of(&api_id)));
    assert!(allows(
        &statements,
        "lambda:InvokeFunction",
        &serde_json::json!({ "Fn::Sub": format!("${{{api_id}.Arn}}:*") })
    ));
    assert!(statements.iter().any(|s| actions(s)
        .contains(&"codedeploy:PutLifecycleEventHookExecutionStatus")
        && s["Resource"] != "*"));
}

#[test]
fn the_template_points_the_functions_at_the_relay_the_extension_serves() {
    assert_eq!(RELAY_ADDR, keel_runtime::routing::DEFAULT_RELAY_ADDR);
}

#[test]
fn every_route_but_health_needs_a_jwt_and_an_issuer_needs_its_audience() {
    let api = resources()
        .values()
        .find(|resource| resource["Type"] == "AWS::ApiGatewayV2::Api")
        .expect("the HTTP API");
    let body = &api["Properties"]["Body"];
    let paths = body["paths"].as_object().unwrap();
    assert!(paths.contains_key("/health") && paths.len() > 1, "{paths:?}");
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let scheme = if path == "/health" { "NONE" } else { "BookingJwt" };
            assert_eq!(operation["security"], json!([{ scheme: [] }]), "{method} {path}");
        }
    }
    let authorizer = &body["components"]["securitySchemes"]["BookingJwt"]["x-amazon-apigateway-authorizer"];
    assert_eq!(authorizer["type"], "jwt", "{authorizer}");
    // A JwtIssuer without its JwtAudience is refused before anything is created.
    let rule = &translated()["Rules"]["JwtAudienceWithIssuer"];
    assert_eq!(
        rule["RuleCondition"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "JwtIssuer"}, ""]}]}),
        "{rule}"
    );
    assert_eq!(
        rule["Assertions"][0]["Assert"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "JwtAudience"}, ""]}]}),
        "{rule}"
    );
}
