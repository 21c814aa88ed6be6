//! The SAM template (`infra/template.yaml`): the three booking functions — the booking API, the
//! booking worker and the canary hook —, the Keel extension layer every function carries, what
//! they read and write — the bookings table, the booking topic and the queue subscribed to it —
//! and what Keel routes and stores to — the idempotency table, the concurrency-slots table of the
//! booking API's guard, the error topic and the dead-letter queue —, all under one
//! customer-managed KMS key, with least-privilege roles: each function may touch only its own
//! tables, topics, queues, key and log group.
//!
//! Every function is written by one helper: one binary of `functions/`, its `KEEL_SERVICE`, the
//! variables its code reads, its role and its log group. Paths are relative to `infra/`:
//! functions come from `cargo lambda build --release` (with `--arm64` for arm64;
//! `target/lambda/<function>/bootstrap`), the layers from `scripts/package-extension.sh`
//! (`target/layers/keel-extension-<architecture>.zip`). The `Architecture` parameter picks the
//! functions' instruction set and the layer they carry.

use crate::services::{Service, BOOKING_API, BOOKING_WORKER};
use crate::yaml::{list, map, s, Node};

/// Where the relay listens in the execution environment (`KEEL_EXTENSION_ADDR`).
pub const RELAY_ADDR: &str = "127.0.0.1:9124";

/// The Lambda architectures the template deploys to.
pub const ARCHITECTURES: [&str; 2] = ["x86_64", "arm64"];

/// The parameters whose values reach the functions (their configuration or environment): a
/// released function's version digest covers them (`scripts/deploy.sh` lists the same).
pub const FUNCTION_PARAMETERS: [&str; 2] = ["Architecture", "LogLevel"];

/// The logical id of the Keel extension layer the functions carry.
pub const EXTENSION_LAYER: &str = "KeelExtensionLayer";

/// The layer zip a deployment uploads, relative to `infra/`: the zip of the architecture
/// deployed, which `scripts/package-extension.sh --deploy <architecture>` copies there (so a
/// deployment needs only that architecture's build).
pub const DEPLOYED_LAYER_ZIP: &str = "../target/layers/keel-extension.zip";

/// The CodeDeploy deployment configurations a release may use (`DeploymentType`): canaries and
/// linear shifts watched by the canary alarms, or all at once.
pub const DEPLOYMENT_TYPES: [&str; 8] = [
    "Canary10Percent5Minutes",
    "Canary10Percent10Minutes",
    "Canary10Percent15Minutes",
    "Canary10Percent30Minutes",
    "Linear10PercentEvery1Minute",
    "Linear10PercentEvery2Minutes",
    "Linear10PercentEvery3Minutes",
    "AllAtOnce",
];

/// The default deployment configuration: a tenth of the traffic for five minutes, then all.
pub const DEFAULT_DEPLOYMENT_TYPE: &str = "Canary10Percent5Minutes";

/// Seconds a function may run unless it says otherwise (the `Globals` timeout): the booking
/// API's.
pub const FUNCTION_TIMEOUT_SECONDS: i64 = 10;

/// Seconds the booking worker may run on one batch. Records are confirmed one after the other,
/// each with a few DynamoDB calls (its idempotency record, the conditional write) of at most 3 s
/// each.
pub const WORKER_TIMEOUT_SECONDS: i64 = 30;

/// Records the booking worker is handed at once.
pub const WORKER_BATCH_SIZE: i64 = 10;

/// How long the event source waits to fill a batch before invoking the worker.
pub const WORKER_BATCHING_WINDOW_SECONDS: i64 = 1;

/// Receives of a booking message before the booking queue moves it to its dead-letter queue:
/// the queue's `maxReceiveCount` and the worker's `QUEUE_MAX_RECEIVE_COUNT` (the worker routes
/// a record to on-call when it fails on that receive).
pub const MAX_RECEIVE_COUNT: i64 = 3;

/// The booking queue's visibility timeout: six times the worker's timeout, as AWS recommends for
/// a queue a Lambda function reads, so that a batch still being processed, or retried by the
/// event source, is not delivered again meanwhile.
pub const QUEUE_VISIBILITY_TIMEOUT_SECONDS: i64 = 6 * WORKER_TIMEOUT_SECONDS;

/// The longest SQS keeps a message (14 days): dead letters wait that long to be looked at.
const DEAD_LETTER_RETENTION_SECONDS: i64 = 1_209_600;

/// Each canary check's time (`CANARY_CHECK_TIMEOUT_MS`): as long as the booking API may run.
pub const CANARY_CHECK_TIMEOUT_MS: i64 = FUNCTION_TIMEOUT_SECONDS * 1000;

/// What the canary hook keeps of its time for its report to CodeDeploy, after the checks.
pub const CANARY_REPORT_MARGIN_MS: i64 = 5_500;

/// Seconds the canary hook may run: its two checks in full, one after the other, then the
/// report.
pub const HOOK_TIMEOUT_SECONDS: i64 = 30;

const _: () = assert!(2 * CANARY_CHECK_TIMEOUT_MS + CANARY_REPORT_MARGIN_MS <= HOOK_TIMEOUT_SECONDS * 1000);

/// A table one of Keel's stores keeps its items in: a string partition key and a TTL attribute
/// (epoch seconds). These are the facts of keel-runtime's `TableDefinition`s, repeated here so
/// that the generator does not build the runtime; a test checks that they agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeelTable {
    /// The partition key (string).
    pub key_attribute: &'static str,
    /// The TTL attribute (epoch seconds).
    pub ttl_attribute: &'static str,
}

/// The idempotency records' table (`keel_runtime::idempotency::TABLE`): key `id`
/// (`<function>#<hash>`), TTL `expiration`.
pub const IDEMPOTENCY_TABLE: KeelTable = KeelTable {
    key_attribute: "id",
    ttl_attribute: "expiration",
};

/// The concurrency slots' table (`keel_runtime::concurrency::SLOT_TABLE`): key `id`
/// (`<key>#<n>`), TTL `expiration` (an hour after the slot's lease).
pub const SLOT_TABLE: KeelTable = KeelTable {
    key_attribute: "id",
    ttl_attribute: "expiration",
};

/// What Keel's DynamoDB slot store does on the slots table: take a slot with a conditional
/// `PutItem`, free it with a conditional `DeleteItem`.
pub const SLOT_ACTIONS: [&str; 2] = ["dynamodb:PutItem", "dynamodb:DeleteItem"];

/// The layer zip built for `architecture`, relative to `infra/` (as
/// `scripts/package-extension.sh` names it).
pub fn layer_zip(architecture: &str) -> String {
    format!("../target/layers/keel-extension-{architecture}.zip")
}

/// `{Ref: name}`.
pub fn reference(name: &str) -> Node {
    map([("Ref", s(name))])
}

/// `{Fn::GetAtt: [resource, attribute]}`.
pub fn get_att(resource: &str, attribute: &str) -> Node {
    map([("Fn::GetAtt", list([s(resource), s(attribute)]))])
}

/// `{Fn::Sub: text}`.
pub fn sub(text: &str) -> Node {
    map([("Fn::Sub", s(text))])
}

/// A mapping from `(key, value)` pairs of any number.
fn entries<K: Into<String>>(entries: impl IntoIterator<Item = (K, Node)>) -> Node {
    Node::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// A resource of type `kind` with `properties`.
pub(crate) fn resource(kind: &str, properties: Node) -> Node {
    map([("Type", s(kind)), ("Properties", properties)])
}

/// A resource of type `kind` with `properties`, created only when `condition` holds.
pub(crate) fn conditional_resource(condition: &str, kind: &str, properties: Node) -> Node {
    map([
        ("Type", s(kind)),
        ("Condition", s(condition)),
        ("Properties", properties),
    ])
}

/// One IAM statement allowing `actions` on `resource`.
fn allow<const N: usize>(actions: [&str; N], resource: Node) -> Node {
    map([
        ("Effect", s("Allow")),
        ("Action", Node::List(actions.iter().map(|a| s(*a)).collect())),
        ("Resource", resource),
    ])
}

/// A policy document of `statements`.
fn policy_document(statements: Vec<Node>) -> Node {
    map([
        ("Version", s("2012-10-17")),
        ("Statement", Node::List(statements)),
    ])
}

/// A checkov finding this template does not follow, and why.
fn checkov_skip(id: &str, why: &str) -> Node {
    map([("id", s(id)), ("comment", s(why))])
}

/// The whole template.
pub fn template() -> Node {
    map([
        ("AWSTemplateFormatVersion", s("2010-09-09")),
        ("Transform", s("AWS::Serverless-2016-10-31")),
        (
            "Description",
            s("Keel booking functions (API, worker, canary hook) with the Keel extension layer, the bookings, idempotency and concurrency-slot tables, the booking topic and queue, and where their errors are routed"),
        ),
        ("Parameters", parameters()),
        (
            "Rules",
            map([(
                "JwtAudienceWithIssuer",
                map([
                    (
                        "RuleCondition",
                        not_empty("JwtIssuer"),
                    ),
                    (
                        "Assertions",
                        list([map([
                            (
                                "Assert",
                                not_empty("JwtAudience"),
                            ),
                            (
                                "AssertDescription",
                                s("JwtAudience is required with JwtIssuer: the authorizer accepts only tokens for that audience"),
                            ),
                        ])]),
                    ),
                ]),
            )]),
        ),
        (
            "Conditions",
            map([
                (
                    "CreateUserPool",
                    map([("Fn::Equals", list([reference("JwtIssuer"), s("")]))]),
                ),
                (
                    "HasAlarmEmail",
                    not_empty("AlarmEmail"),
                ),
            ]),
        ),
        ("Globals", globals()),
        ("Resources", resources()),
        ("Outputs", outputs()),
    ])
}

/// A parameter of type `kind` with `settings` (its default, its allowed values or pattern, …)
/// and what it sets.
fn parameter<const N: usize>(
    kind: &str,
    settings: [(&str, Node); N],
    description: impl Into<String>,
) -> Node {
    let mut all = vec![("Type", s(kind))];
    all.extend(settings);
    all.push(("Description", s(description)));
    entries(all)
}

/// The values a string parameter may take.
fn allowed(values: &[&str]) -> (&'static str, Node) {
    (
        "AllowedValues",
        Node::List(values.iter().map(|v| s(*v)).collect()),
    )
}

/// A price in USD, as CloudWatch metric math takes it.
const PRICE_PATTERN: &str = "^[0-9]+(\\.[0-9]+)?$";

fn parameters() -> Node {
    let mut parameters: Vec<(String, Node)> = vec![
        ("Architecture".into(), parameter("String", [("Default", s("x86_64")), allowed(&ARCHITECTURES)], "Instruction set of the functions and of the Keel extension layer they carry")),
        ("LogLevel".into(), parameter("String", [("Default", s("INFO")), allowed(&["TRACE", "DEBUG", "INFO", "WARN", "ERROR"])], "KEEL_LOG_LEVEL of every function")),
        ("LogRetentionDays".into(), parameter("Number", [("Default", 30.into()), ("AllowedValues", list([7.into(), 14.into(), 30.into(), 90.into(), 365.into()]))], "How long function logs and API access logs are kept")),
        ("JwtIssuer".into(), parameter("String", [("Default", s("")), ("AllowedPattern", s("^(https://.+)?$"))], "Issuer of the JWTs the booking API accepts (its `iss`), e.g. https://cognito-idp.<region>.amazonaws.com/<pool id>; empty: the stack creates a Cognito user pool and accepts its tokens")),
        ("JwtAudience".into(), parameter("String", [("Default", s(""))], "Audience of those JWTs (`aud`, or a Cognito app client id); required with JwtIssuer, ignored when JwtIssuer is empty (the stack's user pool client is the audience)")),
        ("ApiThrottlingRateLimit".into(), parameter("Number", [("Default", 100.into()), ("MinValue", 1.into())], "Requests per second the HTTP API's stage lets through (steady state)")),
        ("ApiThrottlingBurstLimit".into(), parameter("Number", [("Default", 200.into()), ("MinValue", 1.into())], "Requests the HTTP API's stage lets through in a burst")),
        ("DeploymentType".into(), parameter("String", [("Default", s(DEFAULT_DEPLOYMENT_TYPE)), allowed(&DEPLOYMENT_TYPES)], "How CodeDeploy shifts traffic to a new version of the booking API and worker (the canary alarms roll it back)")),
        ("AlarmEmail".into(), parameter("String", [("Default", s(""))], "E-mail address the alarm topic notifies (confirm the subscription); empty: none")),
        ("PricePerGbSecond".into(), parameter("String", [("Default", s(crate::dashboards::DEFAULT_PRICE_PER_GB_SECOND)), ("AllowedPattern", s(PRICE_PATTERN))], "Lambda's price per GB-second of the architecture deployed (USD), for the dashboards' cost row")),
        ("PricePerMillionRequests".into(), parameter("String", [("Default", s(crate::dashboards::DEFAULT_PRICE_PER_MILLION_REQUESTS)), ("AllowedPattern", s(PRICE_PATTERN))], "Lambda's price per million requests (USD), for the dashboards' cost row")),
    ];
    parameters.extend(crate::services::RELEASED.iter().map(|service| {
        (
            version_digest_parameter(service),
            parameter(
                "String",
                [("AllowedPattern", s("^[0-9a-f]{64}$"))],
                format!("SHA-256 over what a {} version is made of (its bootstrap, the extension layer zip, the values of {}, the template's definition of the function), computed by scripts/version-digest.sh (scripts/deploy.sh runs it): a new value publishes a new version and releases it through CodeDeploy", service.name, FUNCTION_PARAMETERS.join(" and ")),
            ),
        )
    }));
    parameters.extend(crate::alarms::PARAMETERS.iter().map(|threshold| {
        (
            threshold.name.to_owned(),
            parameter(
                "Number",
                // At least 1: Lambda publishes `Errors = 0` for every minute a version runs,
                // and 0 would breach on every one of them.
                [("Default", threshold.default.into()), ("MinValue", 1.into())],
                threshold.description,
            ),
        )
    }));
    entries(parameters)
}

fn globals() -> Node {
    map([(
        "Function",
        map([
            ("Runtime", s("provided.al2023")),
            ("Handler", s("bootstrap")),
            ("Architectures", list([reference("Architecture")])),
            ("MemorySize", crate::dashboards::MEMORY_MB.into()),
            ("Timeout", FUNCTION_TIMEOUT_SECONDS.into()),
            ("Tracing", s("Active")),
            ("KmsKeyArn", get_att("KeelKey", "Arn")),
            // Every function runs beside the Keel extension and hands its errors to it.
            ("Layers", list([reference(EXTENSION_LAYER)])),
            (
                "Environment",
                map([(
                    "Variables",
                    map([
                        ("KEEL_LOG_LEVEL", reference("LogLevel")),
                        ("KEEL_EXTENSION_ADDR", s(RELAY_ADDR)),
                        ("KEEL_ERROR_TOPIC_ARN", reference("ErrorTopic")),
                        ("KEEL_DLQ_URL", reference("ErrorDeadLetterQueue")),
                    ]),
                )]),
            ),
        ]),
    )])
}

fn resources() -> Node {
    let mut resources: Vec<(String, Node)> = vec![
        ("KeelKey".into(), kms_key()),
        (EXTENSION_LAYER.into(), extension_layer_version()),
        ("IdempotencyTable".into(), idempotency_table()),
        ("ConcurrencySlotsTable".into(), concurrency_slots_table()),
        ("BookingsTable".into(), bookings_table()),
        ("BookingTopic".into(), topic("Booking events (BookingRequested)")),
    ];
    resources.extend(booking_queue());
    resources.extend([
        ("ErrorTopic".into(), topic("Keel routed errors")),
        // Envelopes SNS did not take.
        ("ErrorDeadLetterQueue".into(), dead_letter_queue()),
    ]);
    resources.extend(booking_api().resources());
    resources.extend([
        ("BookingHttpApi".into(), http_api()),
        (
            "BookingApiAccessLogs".into(),
            log_group(sub("/keel/${AWS::StackName}/booking-api-access")),
        ),
    ]);
    resources.extend(user_pool());
    resources.extend(booking_worker().resources());
    resources.extend(canary_hook().resources());
    resources.extend(crate::monitoring::resources());
    Node::Map(resources)
}

/// The Keel extension layer, built for the stack's architecture.
fn extension_layer_version() -> Node {
    resource(
        "AWS::Serverless::LayerVersion",
        map([
            ("LayerName", sub("${AWS::StackName}-keel-extension-${Architecture}")),
            (
                "Description",
                s("Keel extension: publishes relayed errors after the response, reports timeouts, crashes and platform metrics"),
            ),
            ("ContentUri", s(DEPLOYED_LAYER_ZIP)),
            // Built against glibc ≤ 2.34 (the layer test checks): AL2023, not AL2 (2.26).
            ("CompatibleRuntimes", list([s("provided.al2023")])),
            ("CompatibleArchitectures", list([reference("Architecture")])),
            ("LicenseInfo", s("Apache-2.0")),
            // Versions stay for rollbacks to the functions that used them.
            ("RetentionPolicy", s("Retain")),
        ]),
    )
}

/// The key for the tables, the topics, the queues, the logs and the functions' environment.
fn kms_key() -> Node {
    let account = map([("AWS", sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root"))]);
    let logs = map([("Service", sub("logs.${AWS::Region}.amazonaws.com"))]);
    let sns = map([("Service", s("sns.amazonaws.com"))]);
    let cloudwatch = map([("Service", s("cloudwatch.amazonaws.com"))]);
    resource("AWS::KMS::Key", map([
                ("Description", s("Keel: booking tables, topics and queues, routed errors, logs and function environments")),
                ("EnableKeyRotation", true.into()),
                (
                    "KeyPolicy",
                    map([
                        ("Version", s("2012-10-17")),
                        (
                            "Statement",
                            list([
                                map([
                                    ("Sid", s("AccountAdministersTheKey")),
                                    ("Effect", s("Allow")),
                                    ("Principal", account),
                                    ("Action", s("kms:*")),
                                    ("Resource", s("*")),
                                ]),
                                map([
                                    ("Sid", s("LogsEncryptThisStacksLogGroups")),
                                    ("Effect", s("Allow")),
                                    ("Principal", logs),
                                    (
                                        "Action",
                                        list([
                                            s("kms:Encrypt*"),
                                            s("kms:Decrypt*"),
                                            s("kms:ReEncrypt*"),
                                            s("kms:GenerateDataKey*"),
                                            s("kms:Describe*"),
                                        ]),
                                    ),
                                    ("Resource", s("*")),
                                    (
                                        "Condition",
                                        map([(
                                            "ArnLike",
                                            map([(
                                                "kms:EncryptionContext:aws:logs:arn",
                                                sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:*"),
                                            )]),
                                        )]),
                                    ),
                                ]),
                                // SNS encrypts what the booking topic delivers to the booking
                                // queue with this key. The condition cannot name the topic: the
                                // topic is encrypted with this key, so a reference to it here
                                // would be a circular dependency; it names this account's topics
                                // in this region, and the queue's policy admits only the booking
                                // topic.
                                map([
                                    ("Sid", s("SnsDeliversToThisStacksEncryptedQueues")),
                                    ("Effect", s("Allow")),
                                    ("Principal", sns),
                                    (
                                        "Action",
                                        list([s("kms:GenerateDataKey*"), s("kms:Decrypt")]),
                                    ),
                                    ("Resource", s("*")),
                                    (
                                        "Condition",
                                        map([(
                                            "ArnLike",
                                            map([(
                                                "aws:SourceArn",
                                                sub("arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:*"),
                                            )]),
                                        )]),
                                    ),
                                ]),
                                // CloudWatch publishes alarms to the alarm topic, which is
                                // encrypted with this key. The statement is AWS's documented
                                // one, without a condition: CloudWatch's calls to KMS are not
                                // documented to carry the alarm's ARN, and a condition they
                                // failed would drop every notification silently. Which alarms
                                // may publish is the topic policy's to say (this stack's).
                                map([
                                    ("Sid", s("CloudWatchAlarmsPublishToTheEncryptedAlarmTopic")),
                                    ("Effect", s("Allow")),
                                    ("Principal", cloudwatch),
                                    (
                                        "Action",
                                        list([s("kms:GenerateDataKey*"), s("kms:Decrypt")]),
                                    ),
                                    ("Resource", s("*")),
                                ]),
                            ]),
                        ),
                    ]),
                ),
            ]))
}

/// A DynamoDB table billed per request, with point-in-time recovery, encrypted with the key:
/// `properties` (attributes, keys, indexes, TTL) between the billing mode and those settings;
/// `policy` is what happens to its items when the stack or the table goes (`Delete` or
/// `Retain`).
fn table<const N: usize>(policy: &str, properties: [(&str, Node); N]) -> Node {
    let mut all = vec![("BillingMode", s("PAY_PER_REQUEST"))];
    all.extend(properties);
    all.extend([
        (
            "PointInTimeRecoverySpecification",
            map([("PointInTimeRecoveryEnabled", true.into())]),
        ),
        (
            "SSESpecification",
            map([
                ("SSEEnabled", true.into()),
                ("SSEType", s("KMS")),
                ("KMSMasterKeyId", reference("KeelKey")),
            ]),
        ),
    ]);
    map([
        ("Type", s("AWS::DynamoDB::Table")),
        ("DeletionPolicy", s(policy)),
        ("UpdateReplacePolicy", s(policy)),
        ("Properties", entries(all)),
    ])
}

/// `{AttributeName: name, AttributeType: S}`.
fn string_attribute(name: &str) -> Node {
    map([("AttributeName", s(name)), ("AttributeType", s("S"))])
}

/// `{AttributeName: name, KeyType: kind}`.
fn key(name: &str, kind: &str) -> Node {
    map([("AttributeName", s(name)), ("KeyType", s(kind))])
}

/// A table of one of Keel's stores: its string partition key, items removed by TTL. What it holds
/// expires by itself: nothing to keep when the stack or the table goes.
fn keel_table(definition: KeelTable) -> Node {
    table(
        "Delete",
        [
            (
                "AttributeDefinitions",
                list([string_attribute(definition.key_attribute)]),
            ),
            ("KeySchema", list([key(definition.key_attribute, "HASH")])),
            (
                "TimeToLiveSpecification",
                map([
                    ("AttributeName", s(definition.ttl_attribute)),
                    ("Enabled", true.into()),
                ]),
            ),
        ],
    )
}

/// The idempotency records of the functions that keep them (keyed by `<function>#<hash>`; they
/// live an hour).
fn idempotency_table() -> Node {
    keel_table(IDEMPOTENCY_TABLE)
}

/// The slots of the concurrency guards configured from the environment (`<key>#<n>`, leased
/// until the invocation's deadline, removed by TTL an hour later when never freed): shared by
/// every execution environment, so that a guard's limit holds across all of them.
fn concurrency_slots_table() -> Node {
    keel_table(SLOT_TABLE)
}

/// The bookings table: key `pk` (bookings and resources), GSI `by-customer`.
fn bookings_table() -> Node {
    // Bookings are the business's records: kept if the stack goes.
    table(
        "Retain",
        [
            (
                "AttributeDefinitions",
                list([
                    string_attribute("pk"),
                    string_attribute("customer_id"),
                    string_attribute("created_at"),
                ]),
            ),
            ("KeySchema", list([key("pk", "HASH")])),
            (
                "GlobalSecondaryIndexes",
                list([map([
                    ("IndexName", s("by-customer")),
                    (
                        "KeySchema",
                        list([key("customer_id", "HASH"), key("created_at", "RANGE")]),
                    ),
                    ("Projection", map([("ProjectionType", s("ALL"))])),
                ])]),
            ),
        ],
    )
}

/// An SNS topic encrypted with the key.
fn topic(display_name: &str) -> Node {
    resource(
        "AWS::SNS::Topic",
        map([
            ("DisplayName", s(display_name)),
            ("KmsMasterKeyId", reference("KeelKey")),
        ]),
    )
}

/// An SQS queue encrypted with the key, with `properties` first.
fn queue<const N: usize>(properties: [(&str, Node); N]) -> Node {
    let mut all = Vec::from(properties);
    all.extend([
        ("KmsMasterKeyId", reference("KeelKey")),
        ("KmsDataKeyReusePeriodSeconds", 300.into()),
    ]);
    resource("AWS::SQS::Queue", entries(all))
}

/// A dead-letter queue: messages kept as long as SQS keeps any, to be looked at.
fn dead_letter_queue() -> Node {
    queue([("MessageRetentionPeriod", DEAD_LETTER_RETENTION_SECONDS.into())])
}

/// The booking queue, subscribed to the booking topic (raw delivery: a body is the
/// `BookingRequested` message), that the booking worker reads; what it fails to process
/// [`MAX_RECEIVE_COUNT`] times moves to its dead-letter queue.
fn booking_queue() -> [(String, Node); 4] {
    let sns = map([("Service", s("sns.amazonaws.com"))]);
    [
        (
            "BookingQueue".into(),
            queue([
                ("VisibilityTimeout", QUEUE_VISIBILITY_TIMEOUT_SECONDS.into()),
                (
                    "RedrivePolicy",
                    map([
                        ("deadLetterTargetArn", get_att("BookingQueueDeadLetters", "Arn")),
                        ("maxReceiveCount", MAX_RECEIVE_COUNT.into()),
                    ]),
                ),
            ]),
        ),
        ("BookingQueueDeadLetters".into(), dead_letter_queue()),
        (
            "BookingQueuePolicy".into(),
            resource(
                "AWS::SQS::QueuePolicy",
                map([
                    ("Queues", list([reference("BookingQueue")])),
                    (
                        "PolicyDocument",
                        policy_document(vec![map([
                            ("Sid", s("BookingTopicDelivers")),
                            ("Effect", s("Allow")),
                            ("Principal", sns),
                            ("Action", list([s("sqs:SendMessage")])),
                            ("Resource", get_att("BookingQueue", "Arn")),
                            (
                                "Condition",
                                map([("ArnEquals", map([("aws:SourceArn", reference("BookingTopic"))]))]),
                            ),
                        ])]),
                    ),
                ]),
            ),
        ),
        (
            "BookingQueueSubscription".into(),
            resource(
                "AWS::SNS::Subscription",
                map([
                    ("TopicArn", reference("BookingTopic")),
                    ("Protocol", s("sqs")),
                    ("Endpoint", get_att("BookingQueue", "Arn")),
                    ("RawMessageDelivery", true.into()),
                ]),
            ),
        ),
    ]
}

/// A function of `functions/` as the template deploys it, wrapped by Keel: the Keel extension
/// layer, the relay's address and where errors are routed come from `Globals`; this adds its
/// `KEEL_SERVICE`, its idempotency records when it keeps them, its concurrency slots when it
/// guards, its own variables, and its role, log group and log policy.
struct KeelFunction {
    /// The logical ids' stem: `<id>Function`, `<id>Role`, `<id>LogGroup`, `<id>LogPolicy`.
    id: &'static str,
    /// The binary (`functions/<binary>`, built by cargo-lambda); also its `KEEL_SERVICE`.
    binary: &'static str,
    description: &'static str,
    /// Whether it keeps idempotency records (`Idempotency::from_env`) in `IdempotencyTable`.
    idempotent: bool,
    /// Whether it configures a concurrency guard from the environment
    /// (`ConcurrencyGuard::with_env`): its slots are then in `ConcurrencySlotsTable`.
    guarded: bool,
    /// The variables its own code reads.
    variables: Vec<(&'static str, Node)>,
    /// What its own code may do.
    statements: Vec<Node>,
    /// Further properties of the function (name, timeout, events).
    properties: Vec<(&'static str, Node)>,
    /// Why it needs no dead-letter queue for asynchronous invocations (checkov's CKV_AWS_116).
    no_async_dlq: &'static str,
    /// How its new versions are released, when CodeDeploy releases them.
    release: Option<Release>,
}

/// What the template says a released service's versions are made of — the `Globals` of every
/// function and the function's own properties, but how it is released — as YAML: what
/// `scripts/deploy.sh` digests with the code, the layer and the parameters (`keel-infra
/// --version-inputs <service>`), so that a change to them in the template publishes a version
/// too. `None` for a service the template does not release.
pub fn version_inputs(service: &str) -> Option<String> {
    let service = crate::services::RELEASED.iter().find(|s| s.name == service)?;
    let template = template();
    let function = template
        .get("Resources")?
        .get(&service.function())?
        .get("Properties")?;
    let Node::Map(properties) = function else {
        return None;
    };
    let made_of: Vec<(String, Node)> = properties
        .iter()
        .filter(|(key, _)| {
            !matches!(
                key.as_str(),
                "AutoPublishAlias" | "AutoPublishCodeSha256" | "DeploymentPreference"
            )
        })
        .cloned()
        .collect();
    let inputs = map([
        ("Globals", template.get("Globals")?.clone()),
        ("Properties", Node::Map(made_of)),
    ]);
    Some(inputs.to_yaml())
}

/// The parameter holding `service`'s version digest (`BookingApiVersionDigest`).
pub fn version_digest_parameter(service: &Service) -> String {
    format!("{}VersionDigest", service.id)
}

/// A function released through CodeDeploy: every change publishes a version behind the alias
/// [`alarms::ALIAS`](crate::alarms::ALIAS), and traffic shifts to it as `DeploymentType` says,
/// rolled back by the service's canary alarms.
struct Release {
    /// The service whose canary alarms watch the shift.
    service: Service,
    /// The `PreTraffic` hook checking a new version before any traffic reaches it.
    pre_traffic_hook: Option<&'static str>,
}

impl Release {
    /// `AutoPublishAlias`, `AutoPublishCodeSha256` and `DeploymentPreference`.
    fn properties(&self) -> [(&'static str, Node); 3] {
        let alarms = crate::monitoring::canary_alarm_ids(&self.service)
            .iter()
            .map(|id| reference(id))
            .collect();
        let mut preference = vec![
            ("Type", reference("DeploymentType")),
            ("Alarms", Node::List(alarms)),
        ];
        if let Some(hook) = self.pre_traffic_hook {
            preference.push(("Hooks", map([("PreTraffic", reference(hook))])));
        }
        [
            ("AutoPublishAlias", s(crate::alarms::ALIAS)),
            // When given, SAM names the version after this value alone (else after the code's
            // location, environment and memory — never after the layers, nor parameter values
            // in the environment): the digest covers all a version is made of, so that a new
            // extension or log level publishes a version and runs a canary like new code.
            (
                "AutoPublishCodeSha256",
                reference(&version_digest_parameter(&self.service)),
            ),
            ("DeploymentPreference", entries(preference)),
        ]
    }
}

impl KeelFunction {
    /// The function, its role, its log group and the policy writing to it.
    fn resources(self) -> [(String, Node); 4] {
        let id = self.id;
        let mut variables = vec![("KEEL_SERVICE", s(self.binary))];
        let mut statements = Vec::new();
        if self.idempotent {
            variables.push(("KEEL_IDEMPOTENCY_TABLE", reference("IdempotencyTable")));
            statements.push(allow(
                [
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                ],
                get_att("IdempotencyTable", "Arn"),
            ));
        }
        if self.guarded {
            variables.push(("KEEL_CONCURRENCY_TABLE", reference("ConcurrencySlotsTable")));
            statements.push(allow(SLOT_ACTIONS, get_att("ConcurrencySlotsTable", "Arn")));
        }
        variables.extend(self.variables);
        statements.extend(self.statements);
        let mut properties = vec![
            ("Description", s(self.description)),
            ("CodeUri", s(format!("../target/lambda/{}/", self.binary))),
            ("Environment", map([("Variables", entries(variables))])),
            ("Role", get_att(&format!("{id}Role"), "Arn")),
        ];
        properties.extend(self.properties);
        if let Some(release) = &self.release {
            properties.extend(release.properties());
        }
        let function = map([
            ("Type", s("AWS::Serverless::Function")),
            (
                "Metadata",
                map([(
                    "checkov",
                    map([(
                        "skip",
                        list([
                            checkov_skip("CKV_AWS_116", self.no_async_dlq),
                            checkov_skip("CKV_AWS_117", "calls only AWS service endpoints; there are no VPC resources to reach"),
                            checkov_skip("CKV_AWS_115", "reserved concurrency takes a share of the account's limit: a per-account decision"),
                        ]),
                    )]),
                )]),
            ),
            ("Properties", entries(properties)),
        ]);
        [
            (format!("{id}Function"), function),
            (format!("{id}Role"), function_role(statements)),
            (
                format!("{id}LogGroup"),
                log_group(sub(&format!("/aws/lambda/${{{id}Function}}"))),
            ),
            (
                format!("{id}LogPolicy"),
                log_policy(&format!("{id}Role"), &format!("{id}LogGroup")),
            ),
        ]
    }
}

/// A function's role: `statements`, plus what every Keel function does — route its errors to
/// the error topic, else the dead-letter queue, use the key (the topic, the queue and its own
/// environment are encrypted with it), and send X-Ray traces (no resource-level permissions);
/// its log group's permissions come with [`log_policy`] (the log group is named after the
/// function, which needs the role first).
fn function_role(mut statements: Vec<Node>) -> Node {
    statements.extend([
        allow(["sns:Publish"], reference("ErrorTopic")),
        allow(["sqs:SendMessage"], get_att("ErrorDeadLetterQueue", "Arn")),
        allow(["kms:Decrypt", "kms:GenerateDataKey"], get_att("KeelKey", "Arn")),
        allow(["xray:PutTraceSegments", "xray:PutTelemetryRecords"], s("*")),
    ]);
    resource(
        "AWS::IAM::Role",
        map([
            (
                "AssumeRolePolicyDocument",
                policy_document(vec![map([
                    ("Effect", s("Allow")),
                    ("Principal", map([("Service", s("lambda.amazonaws.com"))])),
                    ("Action", s("sts:AssumeRole")),
                ])]),
            ),
            (
                "Policies",
                list([map([
                    ("PolicyName", s("function")),
                    ("PolicyDocument", policy_document(statements)),
                ])]),
            ),
        ]),
    )
}

/// Writing to `log_group` only, for `role`.
fn log_policy(role: &str, log_group: &str) -> Node {
    resource(
        "AWS::IAM::Policy",
        map([
            ("PolicyName", s("logs")),
            ("Roles", list([reference(role)])),
            (
                "PolicyDocument",
                policy_document(vec![allow(
                    ["logs:CreateLogStream", "logs:PutLogEvents"],
                    get_att(log_group, "Arn"),
                )]),
            ),
        ]),
    )
}

fn log_group(name: Node) -> Node {
    resource(
        "AWS::Logs::LogGroup",
        map([
            ("LogGroupName", name),
            ("RetentionInDays", reference("LogRetentionDays")),
            ("KmsKeyId", get_att("KeelKey", "Arn")),
        ]),
    )
}

/// The booking API, behind the HTTP API.
fn booking_api() -> KeelFunction {
    KeelFunction {
        id: "BookingApi",
        binary: "booking-api",
        description: "Booking API (HTTP API), wrapped by Keel",
        idempotent: true,
        // One guard per `resource_id` of a new booking.
        guarded: true,
        variables: vec![
            ("BOOKINGS_TABLE", reference("BookingsTable")),
            ("BOOKING_TOPIC_ARN", reference("BookingTopic")),
            // Each log line carries API Gateway's request id, as its access logs do.
            ("KEEL_CORRELATION_ID_POINTER", s("/requestContext/requestId")),
        ],
        statements: vec![
            // Bookings: transactions are made of these actions.
            allow(
                ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                get_att("BookingsTable", "Arn"),
            ),
            allow(["dynamodb:Query"], sub("${BookingsTable.Arn}/index/by-customer")),
            allow(["sns:Publish"], reference("BookingTopic")),
        ],
        properties: vec![("Events", api_routes())],
        no_async_dlq: "invoked synchronously by the HTTP API: failed requests are answered, and routed to the error topic or the dead-letter queue by Keel; an asynchronous-invocation DLQ would never be used",
        release: Some(Release {
            service: BOOKING_API,
            pre_traffic_hook: Some("CanaryHookFunction"),
        }),
    }
}

/// The booking worker, reading the booking queue: it settles (confirms or rejects) the bookings
/// the API created.
fn booking_worker() -> KeelFunction {
    KeelFunction {
        id: "BookingWorker",
        binary: "booking-worker",
        description: "Booking worker: settles requested bookings from the booking queue, wrapped by Keel",
        // At most once per SQS message id.
        idempotent: true,
        guarded: false,
        variables: vec![
            ("BOOKINGS_TABLE", reference("BookingsTable")),
            ("QUEUE_MAX_RECEIVE_COUNT", s(MAX_RECEIVE_COUNT.to_string())),
        ],
        statements: vec![
            // Confirming is a conditional UpdateItem, with a GetItem when the failed condition
            // brings no item back; UpdateItem and ConditionCheckItem also make a transaction
            // over a booking and its resource's item (`RESOURCE#…`).
            allow(
                [
                    "dynamodb:GetItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:ConditionCheckItem",
                ],
                get_att("BookingsTable", "Arn"),
            ),
            // The event source mapping reads the queue with the function's role.
            allow(
                [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                ],
                get_att("BookingQueue", "Arn"),
            ),
        ],
        properties: vec![
            ("Timeout", WORKER_TIMEOUT_SECONDS.into()),
            (
                "Events",
                map([(
                    "BookingQueue",
                    resource(
                        "SQS",
                        map([
                            ("Queue", get_att("BookingQueue", "Arn")),
                            ("BatchSize", WORKER_BATCH_SIZE.into()),
                            (
                                "MaximumBatchingWindowInSeconds",
                                WORKER_BATCHING_WINDOW_SECONDS.into(),
                            ),
                            // The worker answers with the records that failed; SQS retries
                            // only those.
                            ("FunctionResponseTypes", list([s("ReportBatchItemFailures")])),
                        ]),
                    ),
                )]),
            ),
        ],
        no_async_dlq: "invoked synchronously by the SQS event source mapping: failed records go back to the booking queue, whose redrive policy moves them to BookingQueueDeadLetters; an asynchronous-invocation DLQ would never be used",
        release: Some(Release {
            service: BOOKING_WORKER,
            pre_traffic_hook: None,
        }),
    }
}

/// The canary hook: checks a new version of the booking API (`TARGET_FUNCTION`, the version the
/// stack update publishes) before CodeDeploy shifts traffic to it, and reports to the booking
/// API's deployment group.
fn canary_hook() -> KeelFunction {
    KeelFunction {
        id: "CanaryHook",
        binary: "canary-hook",
        description: "Canary hook: CodeDeploy PreTraffic checks of a new booking API version, wrapped by Keel",
        idempotent: false,
        guarded: false,
        variables: vec![
            ("TARGET_FUNCTION", reference("BookingApiFunction.Version")),
            ("CANARY_CHECK_TIMEOUT_MS", s(CANARY_CHECK_TIMEOUT_MS.to_string())),
        ],
        statements: vec![
            // The function and any of its versions or aliases.
            allow(
                ["lambda:InvokeFunction"],
                list([
                    get_att("BookingApiFunction", "Arn"),
                    sub("${BookingApiFunction.Arn}:*"),
                ]),
            ),
            // Only the booking API's deployment group (SAM names the application and the
            // group).
            allow(
                ["codedeploy:PutLifecycleEventHookExecutionStatus"],
                sub("arn:${AWS::Partition}:codedeploy:${AWS::Region}:${AWS::AccountId}:deploymentgroup:${ServerlessDeploymentApplication}/${BookingApiFunctionDeploymentGroup}"),
            ),
        ],
        properties: vec![
            // CodeDeploy's managed role for Lambda deployments (AWSCodeDeployRoleForLambda) may
            // invoke only functions named `CodeDeployHook_*`. Function names have at most 64
            // characters: stack names of at most 37 fit.
            (
                "FunctionName",
                sub("CodeDeployHook_${AWS::StackName}-booking-api"),
            ),
            ("Timeout", HOOK_TIMEOUT_SECONDS.into()),
        ],
        no_async_dlq: "a CodeDeploy lifecycle hook: a failed run is routed to on-call by Keel, and CodeDeploy fails the deployment when the hook reports no status; an event replayed from a DLQ would report on a deployment already decided",
        // The hook is deployed as it is: it decides releases, it is not released itself.
        release: None,
    }
}

/// Whether the string parameter `name` is set: `Fn::Not [Fn::Equals [Ref name, ""]]`, for a
/// condition or a rule.
fn not_empty(name: &str) -> Node {
    map([(
        "Fn::Not",
        list([map([("Fn::Equals", list([reference(name), s("")]))])]),
    )])
}

/// `if_user_pool` when the stack creates the user pool (no `JwtIssuer` given), else
/// `otherwise`.
fn when_user_pool(if_user_pool: Node, otherwise: Node) -> Node {
    map([("Fn::If", list([s("CreateUserPool"), if_user_pool, otherwise]))])
}

/// The Cognito user pool whose tokens the booking API accepts when no `JwtIssuer` is given, and
/// its app client (the tokens' audience).
fn user_pool() -> [(String, Node); 2] {
    [
        (
            "BookingUserPool".into(),
            conditional_resource(
                "CreateUserPool",
                "AWS::Cognito::UserPool",
                map([
                    ("UserPoolName", sub("${AWS::StackName}-customers")),
                    ("UsernameAttributes", list([s("email")])),
                    ("AutoVerifiedAttributes", list([s("email")])),
                    (
                        "Policies",
                        map([(
                            "PasswordPolicy",
                            map([
                                ("MinimumLength", 12.into()),
                                ("RequireLowercase", true.into()),
                                ("RequireUppercase", true.into()),
                                ("RequireNumbers", true.into()),
                                ("RequireSymbols", false.into()),
                            ]),
                        )]),
                    ),
                    ("MfaConfiguration", s("OPTIONAL")),
                    ("EnabledMfas", list([s("SOFTWARE_TOKEN_MFA")])),
                ]),
            ),
        ),
        (
            "BookingUserPoolClient".into(),
            conditional_resource(
                "CreateUserPool",
                "AWS::Cognito::UserPoolClient",
                map([
                    ("UserPoolId", reference("BookingUserPool")),
                    ("GenerateSecret", false.into()),
                    (
                        "ExplicitAuthFlows",
                        list([s("ALLOW_USER_SRP_AUTH"), s("ALLOW_REFRESH_TOKEN_AUTH")]),
                    ),
                    ("PreventUserExistenceErrors", s("ENABLED")),
                ]),
            ),
        ),
    ]
}

/// The HTTP API in front of the booking API: JWT authorizer (on every route but `/health`),
/// stage throttling, access logs. AWS WAF cannot be associated with an HTTP API; to filter
/// requests with WAF, put a CloudFront distribution with a web ACL in front of it.
fn http_api() -> Node {
    resource(
        "AWS::Serverless::HttpApi",
        map([
            (
                "Auth",
                map([
                    (
                        "Authorizers",
                        map([(
                            "BookingJwt",
                            map([
                                ("IdentitySource", s("$request.header.Authorization")),
                                (
                                    "JwtConfiguration",
                                    map([
                                        (
                                            "issuer",
                                            when_user_pool(
                                                sub("https://cognito-idp.${AWS::Region}.amazonaws.com/${BookingUserPool}"),
                                                reference("JwtIssuer"),
                                            ),
                                        ),
                                        (
                                            "audience",
                                            list([when_user_pool(
                                                reference("BookingUserPoolClient"),
                                                reference("JwtAudience"),
                                            )]),
                                        ),
                                    ]),
                                ),
                            ]),
                        )]),
                    ),
                    ("DefaultAuthorizer", s("BookingJwt")),
                ]),
            ),
            // Per route, for every route of the stage.
            (
                "DefaultRouteSettings",
                map([
                    ("ThrottlingRateLimit", reference("ApiThrottlingRateLimit")),
                    ("ThrottlingBurstLimit", reference("ApiThrottlingBurstLimit")),
                ]),
            ),
            (
                "AccessLogSettings",
                map([
                    ("DestinationArn", get_att("BookingApiAccessLogs", "Arn")),
                    (
                        "Format",
                        s(
                            r#"{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","routeKey":"$context.routeKey","status":"$context.status","latencyMs":"$context.responseLatency","integrationError":"$context.integrationErrorMessage"}"#,
                        ),
                    ),
                ]),
            ),
        ]),
    )
}

/// The booking API's routes on the HTTP API.
fn api_routes() -> Node {
    let route = |path: &str, method: &str| {
        let mut properties = vec![
            ("ApiId", reference("BookingHttpApi")),
            ("Path", s(path)),
            ("Method", s(method)),
        ];
        // The health check answers load balancers and the canary hook without a token.
        if path == "/health" {
            properties.push(("Auth", map([("Authorizer", s("NONE"))])));
        }
        resource("HttpApi", entries(properties))
    };
    map([
        ("CreateBooking", route("/bookings", "POST")),
        ("ListBookings", route("/bookings", "GET")),
        ("ReadBooking", route("/bookings/{id}", "GET")),
        ("CancelBooking", route("/bookings/{id}/cancel", "POST")),
        ("Health", route("/health", "GET")),
        ("Metadata", route("/metadata", "GET")),
        ("Manager", route("/manager", "POST")),
    ])
}

fn outputs() -> Node {
    let output = |description: &str, value: Node| map([("Description", s(description)), ("Value", value)]);
    let mut outputs = [
        (
            "BookingApiUrl",
            output(
                "The booking API: POST and GET /bookings, … (requests carry a JWT from JwtIssuer)",
                sub("https://${BookingHttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/bookings"),
            ),
        ),
        (
            "KeelExtensionLayerArn",
            output(
                "The Keel extension layer version the functions carry",
                reference(EXTENSION_LAYER),
            ),
        ),
        (
            "ErrorTopicArn",
            output(
                "Subscribe on-call here: routed error envelopes",
                reference("ErrorTopic"),
            ),
        ),
        (
            "ErrorDeadLetterQueueUrl",
            output(
                "Envelopes the topic could not take",
                reference("ErrorDeadLetterQueue"),
            ),
        ),
        (
            "IdempotencyTableName",
            output("Idempotency records", reference("IdempotencyTable")),
        ),
        (
            "ConcurrencySlotsTableName",
            output(
                "Concurrency slots of the booking API's guard (per resource_id)",
                reference("ConcurrencySlotsTable"),
            ),
        ),
        (
            "BookingsTableName",
            output("Bookings", reference("BookingsTable")),
        ),
        (
            "BookingTopicArn",
            output("Booking events (BookingRequested)", reference("BookingTopic")),
        ),
        (
            "BookingQueueUrl",
            output(
                "BookingRequested messages the booking worker settles",
                reference("BookingQueue"),
            ),
        ),
        (
            "BookingQueueDeadLettersUrl",
            output(
                "Booking messages the worker failed on every receive (each was routed to on-call)",
                reference("BookingQueueDeadLetters"),
            ),
        ),
        (
            "BookingWorkerFunctionName",
            output("The booking worker", reference("BookingWorkerFunction")),
        ),
        (
            "CanaryHookFunctionName",
            output(
                "The canary hook, a CodeDeploy PreTraffic hook for the booking API",
                reference("CanaryHookFunction"),
            ),
        ),
        (
            "DeploymentType",
            output(
                "How CodeDeploy shifts traffic to new versions of the booking API and worker",
                reference("DeploymentType"),
            ),
        ),
        (
            "AlarmTopicArn",
            output(
                "Every alarm notifies this topic (AlarmEmail is subscribed when given)",
                reference(crate::monitoring::ALARM_TOPIC),
            ),
        ),
    ]
    .map(|(name, value)| (name.to_owned(), value))
    .to_vec();
    for service in crate::services::RELEASED {
        outputs.push((
            version_digest_parameter(&service),
            output(
                &format!("The digest {}'s latest version was published for", service.name),
                reference(&version_digest_parameter(&service)),
            ),
        ));
        outputs.push((
            format!("{}DashboardUrl", service.id),
            output(
                &format!("The {} dashboard for on-call", service.name),
                sub(&format!(
                    "https://${{AWS::Region}}.console.aws.amazon.com/cloudwatch/home?region=${{AWS::Region}}#dashboards:name=${{AWS::StackName}}-{}",
                    service.name
                )),
            ),
        ));
    }
    for (name, description, value) in [
        (
            "UserPoolId",
            "The Cognito user pool whose tokens the booking API accepts (created when JwtIssuer is empty)",
            reference("BookingUserPool"),
        ),
        (
            "UserPoolClientId",
            "Its app client, the tokens' audience",
            reference("BookingUserPoolClient"),
        ),
    ] {
        let mut conditional = output(description, value);
        if let Node::Map(fields) = &mut conditional {
            fields.insert(0, ("Condition".into(), s("CreateUserPool")));
        }
        outputs.push((name.to_owned(), conditional));
    }
    entries(outputs)
}
