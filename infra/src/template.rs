//! The SAM template (`infra/template.yaml`): the booking API, the Keel extension layer every
//! function carries, and what Keel routes and stores to — the idempotency table, the error
//! topic and the dead-letter queue — under one customer-managed KMS key, with least-privilege
//! roles: each function may touch only its own table items, topic, queue, key and log group.
//!
//! Paths are relative to `infra/`: functions come from `cargo lambda build --release` (with
//! `--arm64` for arm64; `target/lambda/<function>/bootstrap`), the layers from
//! `scripts/package-extension.sh` (`target/layers/keel-extension-<architecture>.zip`). The
//! `Architecture` parameter picks the functions' instruction set and the layer they carry.

use crate::yaml::{list, map, s, Node};

/// Where the relay listens in the execution environment (`KEEL_EXTENSION_ADDR`).
pub const RELAY_ADDR: &str = "127.0.0.1:9124";

/// The Lambda architectures the template deploys to, each with the logical id of the Keel
/// extension layer built for it.
pub const ARCHITECTURES: [(&str, &str); 2] = [
    ("x86_64", "KeelExtensionLayerX8664"),
    ("arm64", "KeelExtensionLayerArm64"),
];

/// The layer zip for `architecture`, relative to `infra/` (as `scripts/package-extension.sh`
/// names it).
pub fn layer_zip(architecture: &str) -> String {
    format!("../target/layers/keel-extension-{architecture}.zip")
}

/// The extension layer of the architecture the stack is deployed with.
fn extension_layer() -> Node {
    let [(_, x86_64), (_, arm64)] = ARCHITECTURES;
    map([(
        "Fn::If",
        list([s("OnArm64"), reference(arm64), reference(x86_64)]),
    )])
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

/// A resource of type `kind` with `properties`.
fn resource(kind: &str, properties: Node) -> Node {
    map([("Type", s(kind)), ("Properties", properties)])
}

/// One IAM statement allowing `actions` on `resource`.
fn allow<const N: usize>(actions: [&str; N], resource: Node) -> Node {
    map([
        ("Effect", s("Allow")),
        ("Action", Node::List(actions.iter().map(|a| s(*a)).collect())),
        ("Resource", resource),
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
            s("Keel booking functions with the Keel extension layer, the idempotency table, and where their errors are routed"),
        ),
        ("Parameters", parameters()),
        (
            "Conditions",
            map([(
                "OnArm64",
                map([("Fn::Equals", list([reference("Architecture"), s("arm64")]))]),
            )]),
        ),
        ("Globals", globals()),
        ("Resources", resources()),
        ("Outputs", outputs()),
    ])
}

fn parameters() -> Node {
    map([
        (
            "Architecture",
            map([
                ("Type", s("String")),
                ("Default", s("x86_64")),
                (
                    "AllowedValues",
                    Node::List(ARCHITECTURES.iter().map(|(a, _)| s(*a)).collect()),
                ),
                (
                    "Description",
                    s("Instruction set of the functions and of the Keel extension layer they carry"),
                ),
            ]),
        ),
        (
            "LogLevel",
            map([
                ("Type", s("String")),
                ("Default", s("INFO")),
                (
                    "AllowedValues",
                    list([s("TRACE"), s("DEBUG"), s("INFO"), s("WARN"), s("ERROR")]),
                ),
                ("Description", s("KEEL_LOG_LEVEL of every function")),
            ]),
        ),
        (
            "LogRetentionDays",
            map([
                ("Type", s("Number")),
                ("Default", 30.into()),
                (
                    "AllowedValues",
                    list([7.into(), 14.into(), 30.into(), 90.into(), 365.into()]),
                ),
                (
                    "Description",
                    s("How long function logs and API access logs are kept"),
                ),
            ]),
        ),
        (
            "JwtIssuer",
            map([
                ("Type", s("String")),
                ("AllowedPattern", s("^https://.+")),
                (
                    "Description",
                    s("Issuer of the JWTs the booking API accepts (its `iss`), e.g. a Cognito user pool's https://cognito-idp.<region>.amazonaws.com/<pool id>"),
                ),
            ]),
        ),
        (
            "JwtAudience",
            map([
                ("Type", s("String")),
                ("MinLength", 1.into()),
                ("Description", s("Audience of those JWTs (`aud`, or a Cognito app client id)")),
            ]),
        ),
    ])
}

fn globals() -> Node {
    map([(
        "Function",
        map([
            ("Runtime", s("provided.al2023")),
            ("Handler", s("bootstrap")),
            ("Architectures", list([reference("Architecture")])),
            ("MemorySize", 256.into()),
            ("Timeout", 10.into()),
            ("Tracing", s("Active")),
            ("KmsKeyArn", get_att("KeelKey", "Arn")),
            // Every function runs beside the Keel extension and hands its errors to it.
            ("Layers", list([extension_layer()])),
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
    map([
        ("KeelKey", kms_key()),
        (ARCHITECTURES[0].1, extension_layer_version(ARCHITECTURES[0].0)),
        (ARCHITECTURES[1].1, extension_layer_version(ARCHITECTURES[1].0)),
        (
            "IdempotencyTable",
            map([
                ("Type", s("AWS::DynamoDB::Table")),
                // Records live an hour (TTL `expiration`): nothing to keep.
                ("DeletionPolicy", s("Delete")),
                ("UpdateReplacePolicy", s("Delete")),
                (
                    "Properties",
                    map([
                        ("BillingMode", s("PAY_PER_REQUEST")),
                        (
                            "AttributeDefinitions",
                            list([map([("AttributeName", s("id")), ("AttributeType", s("S"))])]),
                        ),
                        (
                            "KeySchema",
                            list([map([("AttributeName", s("id")), ("KeyType", s("HASH"))])]),
                        ),
                        (
                            "TimeToLiveSpecification",
                            map([("AttributeName", s("expiration")), ("Enabled", true.into())]),
                        ),
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
                    ]),
                ),
            ]),
        ),
        ("BookingsTable", bookings_table()),
        (
            "BookingTopic",
            resource(
                "AWS::SNS::Topic",
                map([
                    ("DisplayName", s("Booking events (BookingRequested)")),
                    ("KmsMasterKeyId", reference("KeelKey")),
                ]),
            ),
        ),
        (
            "ErrorTopic",
            resource(
                "AWS::SNS::Topic",
                map([
                    ("DisplayName", s("Keel routed errors")),
                    ("KmsMasterKeyId", reference("KeelKey")),
                ]),
            ),
        ),
        (
            "ErrorDeadLetterQueue",
            resource(
                "AWS::SQS::Queue",
                map([
                    // The longest SQS keeps a message: 14 days to look at what SNS missed.
                    ("MessageRetentionPeriod", 1_209_600.into()),
                    ("KmsMasterKeyId", reference("KeelKey")),
                    ("KmsDataKeyReusePeriodSeconds", 300.into()),
                ]),
            ),
        ),
        ("BookingApiFunction", booking_api()),
        (
            "BookingApiRole",
            function_role(vec![
                allow(
                    [
                        "dynamodb:GetItem",
                        "dynamodb:PutItem",
                        "dynamodb:UpdateItem",
                        "dynamodb:DeleteItem",
                    ],
                    get_att("IdempotencyTable", "Arn"),
                ),
                // Bookings: transactions are made of these actions.
                allow(
                    ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                    get_att("BookingsTable", "Arn"),
                ),
                allow(["dynamodb:Query"], sub("${BookingsTable.Arn}/index/by-customer")),
                allow(["sns:Publish"], reference("BookingTopic")),
                allow(["sns:Publish"], reference("ErrorTopic")),
                allow(["sqs:SendMessage"], get_att("ErrorDeadLetterQueue", "Arn")),
                allow(["kms:Decrypt", "kms:GenerateDataKey"], get_att("KeelKey", "Arn")),
            ]),
        ),
        (
            "BookingApiLogGroup",
            log_group(sub("/aws/lambda/${BookingApiFunction}")),
        ),
        (
            "BookingApiLogPolicy",
            log_policy("BookingApiRole", "BookingApiLogGroup"),
        ),
        (
            "BookingHttpApi",
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
                                                ("issuer", reference("JwtIssuer")),
                                                ("audience", list([reference("JwtAudience")])),
                                            ]),
                                        ),
                                    ]),
                                )]),
                            ),
                            ("DefaultAuthorizer", s("BookingJwt")),
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
            ),
        ),
        (
            "BookingApiAccessLogs",
            log_group(sub("/keel/${AWS::StackName}/booking-api-access")),
        ),
    ])
}

/// The Keel extension layer built for `architecture`.
fn extension_layer_version(architecture: &str) -> Node {
    resource(
        "AWS::Serverless::LayerVersion",
        map([
            ("LayerName", sub(&format!("${{AWS::StackName}}-keel-extension-{architecture}"))),
            (
                "Description",
                s("Keel extension: publishes relayed errors after the response, reports timeouts, crashes and platform metrics"),
            ),
            ("ContentUri", s(layer_zip(architecture))),
            // Built against glibc ≤ 2.34 (the layer test checks): AL2023, not AL2 (2.26).
            ("CompatibleRuntimes", list([s("provided.al2023")])),
            ("CompatibleArchitectures", list([s(architecture)])),
            ("LicenseInfo", s("Apache-2.0")),
            // Versions stay for rollbacks to the functions that used them.
            ("RetentionPolicy", s("Retain")),
        ]),
    )
}

/// The key for the table, the topic, the queue, the logs and the functions' environment.
fn kms_key() -> Node {
    let account = map([("AWS", sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root"))]);
    let logs = map([("Service", sub("logs.${AWS::Region}.amazonaws.com"))]);
    resource("AWS::KMS::Key", map([
                ("Description", s("Keel: booking tables, routed errors and logs")),
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
                            ]),
                        ),
                    ]),
                ),
            ]))
}

/// A function's role: `statements`, plus X-Ray (which has no resource-level permissions); its
/// log group's permissions come with [`log_policy`] (the log group is named after the function,
/// which needs the role first).
fn function_role(mut statements: Vec<Node>) -> Node {
    statements.push(allow(
        ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
        s("*"),
    ));
    resource(
        "AWS::IAM::Role",
        map([
            (
                "AssumeRolePolicyDocument",
                map([
                    ("Version", s("2012-10-17")),
                    (
                        "Statement",
                        list([map([
                            ("Effect", s("Allow")),
                            ("Principal", map([("Service", s("lambda.amazonaws.com"))])),
                            ("Action", s("sts:AssumeRole")),
                        ])]),
                    ),
                ]),
            ),
            (
                "Policies",
                list([map([
                    ("PolicyName", s("function")),
                    (
                        "PolicyDocument",
                        map([
                            ("Version", s("2012-10-17")),
                            ("Statement", Node::List(statements)),
                        ]),
                    ),
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
                map([
                    ("Version", s("2012-10-17")),
                    (
                        "Statement",
                        list([allow(
                            ["logs:CreateLogStream", "logs:PutLogEvents"],
                            get_att(log_group, "Arn"),
                        )]),
                    ),
                ]),
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

fn booking_api() -> Node {
    map([
        ("Type", s("AWS::Serverless::Function")),
        (
            "Metadata",
            map([(
                "checkov",
                map([(
                    "skip",
                    list([
                        checkov_skip("CKV_AWS_116", "invoked synchronously by the HTTP API: failed requests are answered, and routed to the error topic or the dead-letter queue by Keel; an asynchronous-invocation DLQ would never be used"),
                        checkov_skip("CKV_AWS_117", "talks only to DynamoDB, SNS and SQS over their public endpoints; no VPC resources to reach"),
                        checkov_skip("CKV_AWS_115", "concurrency towards partners is bounded by Keel's concurrency guards; reserving account concurrency is a per-account decision"),
                    ]),
                )]),
            )]),
        ),
        (
            "Properties",
            map([
                ("Description", s("Booking API (HTTP API), wrapped by Keel")),
                ("CodeUri", s("../target/lambda/booking-api/")),
                (
                    "Environment",
                    map([(
                        "Variables",
                        map([
                            ("KEEL_SERVICE", s("booking-api")),
                            ("KEEL_IDEMPOTENCY_TABLE", reference("IdempotencyTable")),
                            ("BOOKINGS_TABLE", reference("BookingsTable")),
                            ("BOOKING_TOPIC_ARN", reference("BookingTopic")),
                        ]),
                    )]),
                ),
                ("Role", get_att("BookingApiRole", "Arn")),
                ("Events", api_routes()),
            ]),
        ),
    ])
}

/// The booking API's routes on the HTTP API.
fn api_routes() -> Node {
    let route = |path: &str, method: &str| {
        let mut properties = vec![
            ("ApiId".to_owned(), reference("BookingHttpApi")),
            ("Path".to_owned(), s(path)),
            ("Method".to_owned(), s(method)),
        ];
        // The health check answers load balancers and the canary hook without a token.
        if path == "/health" {
            properties.push(("Auth".to_owned(), map([("Authorizer", s("NONE"))])));
        }
        resource("HttpApi", Node::Map(properties))
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

/// The bookings table: key `pk` (bookings and resources), GSI `by-customer`.
fn bookings_table() -> Node {
    let attribute = |name: &str| map([("AttributeName", s(name)), ("AttributeType", s("S"))]);
    let key = |name: &str, kind: &str| map([("AttributeName", s(name)), ("KeyType", s(kind))]);
    map([
        ("Type", s("AWS::DynamoDB::Table")),
        // Bookings are the business's records: kept if the stack goes.
        ("DeletionPolicy", s("Retain")),
        ("UpdateReplacePolicy", s("Retain")),
        (
            "Properties",
            map([
                ("BillingMode", s("PAY_PER_REQUEST")),
                (
                    "AttributeDefinitions",
                    list([attribute("pk"), attribute("customer_id"), attribute("created_at")]),
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
            ]),
        ),
    ])
}

fn outputs() -> Node {
    let output = |description: &str, value: Node| map([("Description", s(description)), ("Value", value)]);
    map([
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
                extension_layer(),
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
            "BookingsTableName",
            output("Bookings", reference("BookingsTable")),
        ),
        (
            "BookingTopicArn",
            output("Booking events (BookingRequested)", reference("BookingTopic")),
        ),
    ])
}
