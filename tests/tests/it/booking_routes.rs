//! booking-api's routes end to end: the binary under the Lambda emulator, its bookings in
//! DynamoDB and its events on SNS (a moto server), every route and every refusal, callers kept
//! to their own bookings, no double booking when twenty requests race on four processes, and
//! booking-worker settling what the API created, fed from the topic's queue.

use std::time::Duration;

use keel_tests::{
    build_binary, wait_until, ApiGateway, BookingStack, Emulator, FunctionProcess, Moto, SqsEventSource,
};
use serde_json::{json, Value};

/// An API Gateway HTTP API (payload 2.0) event.
struct Request {
    method: &'static str,
    path: String,
    query: Vec<(&'static str, String)>,
    headers: Value,
    body: Option<String>,
    caller: Option<&'static str>,
    through_api_gateway: bool,
}

impl Request {
    fn new(method: &'static str, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: json!({"content-type": "application/json"}),
            body: None,
            caller: None,
            through_api_gateway: false,
        }
    }

    fn key(mut self, key: &str) -> Self {
        self.headers["idempotency-key"] = json!(key);
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers[name] = json!(value);
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body.to_string());
        self
    }

    fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    /// Through API Gateway, with a JWT authorizer's `sub` (none: no authorizer).
    fn through_api_gateway(mut self, sub: Option<&'static str>) -> Self {
        self.through_api_gateway = true;
        self.caller = sub;
        self
    }

    fn caller(self, sub: &'static str) -> Self {
        self.through_api_gateway(Some(sub))
    }

    fn event(&self) -> String {
        let raw_query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let parameters: serde_json::Map<String, Value> = self
            .query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let mut context = json!({"http": {"method": self.method, "path": self.path}});
        if self.through_api_gateway {
            context["apiId"] = json!("api-1");
            context["domainName"] = json!("api.example.com");
        }
        if let Some(sub) = self.caller {
            context["authorizer"] = json!({"jwt": {"claims": {"sub": sub}, "scopes": null}});
        }
        json!({
            "version": "2.0",
            "routeKey": format!("{} {}", self.method, self.path),
            "rawPath": self.path,
            "rawQueryString": raw_query.join("&"),
            "queryStringParameters": parameters,
            "headers": self.headers,
            "requestContext": context,
            "body": self.body,
            "isBase64Encoded": false
        })
        .to_string()
    }
}

fn booking(customer: &str, resource: &str, start_hour: u32, end_hour: u32) -> Value {
    let day = keel_tests::future_date(2);
    json!({
        "customer_id": customer, "resource_id": resource, "guests": 2,
        "start": format!("{day}T{start_hour:02}:00:00Z"),
        "end": format!("{day}T{end_hour:02}:00:00Z"),
        "notes": "window seat", "email": "ada@example.com"
    })
}

/// A status and the JSON body of an answer.
#[derive(Debug)]
struct Answer {
    status: i64,
    body: Value,
    replayed: bool,
}

struct Api {
    moto: Moto,
    stack: BookingStack,
    emulator: Emulator,
    functions: Vec<FunctionProcess>,
}

impl Api {
    /// booking-api on `processes` function processes, with the bookings stack in moto.
    async fn start(processes: usize) -> Self {
        let moto = Moto::start().expect("moto starts");
        let stack = moto.booking_stack().await.expect("the bookings stack is created");
        let mut env = moto.env();
        env.extend(stack.env());
        let binary = build_binary("booking-api").expect("booking-api builds");
        let emulator = Emulator::start().expect("emulator starts");
        let functions = (0..processes)
            .map(|_| emulator.start_function(&binary, &env).expect("function starts"))
            .collect();
        Api {
            moto,
            stack,
            emulator,
            functions,
        }
    }

    fn output(&self) -> String {
        self.functions
            .iter()
            .map(FunctionProcess::output)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn call(&self, request: Request) -> Answer {
        let invocation = self
            .emulator
            .invoke(&request.event())
            .unwrap_or_else(|e| panic!("{e}\n{}", self.output()));
        assert_eq!(invocation.status, 200, "{:?}\n{}", invocation.body, self.output());
        let body = invocation.body["body"]
            .as_str()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        Answer {
            status: invocation.body["statusCode"].as_i64().unwrap_or_default(),
            body,
            replayed: invocation.body["headers"]["idempotent-replayed"] == "true",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_documented() {
    let api = Api::start(1).await;
    let create = |key: &str, body: Value| Request::new("POST", "/bookings").key(key).body(body);

    // Create, replay, key reused, no key, invalid.
    let first = api.call(create("k1", booking("cust-1", "room-1", 10, 11)));
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.body["status"], "PENDING");
    assert_eq!(first.body["guests"], 2);
    let id = first.body["booking_id"].as_str().unwrap().to_owned();
    let replay = api.call(create("k1", booking("cust-1", "room-1", 10, 11)));
    assert_eq!((replay.status, replay.replayed), (201, true));
    assert_eq!(replay.body, first.body);
    let reused = api.call(create("k1", booking("cust-1", "room-2", 10, 11)));
    assert_eq!(reused.status, 422, "{reused:?}");
    let unkeyed = api.call(Request::new("POST", "/bookings").body(booking("cust-1", "room-3", 10, 11)));
    assert_eq!(unkeyed.status, 400);
    assert_eq!(unkeyed.body["code"], "IDEMPOTENCY_KEY_REQUIRED");
    let mut too_many = booking("cust-1", "room-3", 10, 11);
    too_many["guests"] = json!(21);
    let invalid = api.call(create("k-invalid", too_many));
    assert_eq!(
        (invalid.status, invalid.body["field"].as_str()),
        (400, Some("guests"))
    );

    // Overlaps conflict; adjacent times do not.
    let conflict = api.call(create("k2", booking("cust-1", "room-1", 10, 12)));
    assert_eq!(
        (conflict.status, conflict.body["code"].as_str()),
        (409, Some("BOOKING_CONFLICT"))
    );
    let adjacent = api.call(create("k3", booking("cust-1", "room-1", 11, 12)));
    assert_eq!(adjacent.status, 201, "{adjacent:?}");

    // Read one; list newest first, a page at a time.
    let read = api.call(Request::new("GET", format!("/bookings/{id}")));
    assert_eq!((read.status, &read.body), (200, &first.body));
    assert_eq!(api.call(Request::new("GET", "/bookings/bk-missing")).status, 404);
    let page = api.call(
        Request::new("GET", "/bookings")
            .query("customer_id", "cust-1")
            .query("limit", "1"),
    );
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(
        page.body["bookings"][0]["booking_id"],
        adjacent.body["booking_id"]
    );
    let cursor = page.body["cursor"].as_str().expect("a next page").to_owned();
    let next = api.call(
        Request::new("GET", "/bookings")
            .query("customer_id", "cust-1")
            .query("limit", "1")
            .query("cursor", cursor.clone()),
    );
    assert_eq!(next.body["bookings"][0]["booking_id"], id.as_str(), "{next:?}");
    let foreign_cursor = api.call(
        Request::new("GET", "/bookings")
            .query("customer_id", "cust-9")
            .query("cursor", cursor),
    );
    assert_eq!(
        (foreign_cursor.status, foreign_cursor.body["field"].as_str()),
        (400, Some("cursor"))
    );
    assert_eq!(api.call(Request::new("GET", "/bookings")).status, 400);
    assert_eq!(
        api.call(
            Request::new("GET", "/bookings")
                .query("customer_id", "cust-1")
                .query("limit", "0")
        )
        .status,
        400
    );

    // Cancel (twice), which frees the time.
    let cancelled = api.call(Request::new("POST", format!("/bookings/{id}/cancel")));
    assert_eq!(
        (cancelled.status, cancelled.body["status"].as_str()),
        (200, Some("CANCELLED"))
    );
    let again = api.call(Request::new("POST", format!("/bookings/{id}/cancel")));
    assert_eq!(
        (again.status, again.body["status"].as_str()),
        (200, Some("CANCELLED"))
    );
    assert_eq!(
        api.call(Request::new("POST", "/bookings/bk-missing/cancel"))
            .status,
        404
    );
    let rebooked = api.call(create("k4", booking("cust-2", "room-1", 10, 11)));
    assert_eq!(
        rebooked.status, 201,
        "the cancelled booking's time is free: {rebooked:?}"
    );

    // Health, metadata, unknown routes.
    assert_eq!(api.call(Request::new("GET", "/health")).body["status"], "ok");
    assert_eq!(
        api.call(Request::new("GET", "/metadata")).body["service"],
        "booking-api"
    );
    assert_eq!(api.call(Request::new("DELETE", "/bookings")).status, 404);

    // Callers act on their own bookings only.
    let other = |request: Request| api.call(request.caller("cust-9")).status;
    assert_eq!(other(Request::new("GET", format!("/bookings/{id}"))), 403);
    assert_eq!(other(Request::new("POST", format!("/bookings/{id}/cancel"))), 403);
    assert_eq!(
        other(Request::new("GET", "/bookings").query("customer_id", "cust-1")),
        403
    );
    assert_eq!(other(create("k5", booking("cust-1", "room-5", 10, 11))), 403);
    let own = api.call(create("k6", booking("cust-9", "room-6", 10, 11)).caller("cust-9"));
    assert_eq!(own.status, 201);
    // Through API Gateway without a JWT caller, nothing says whose bookings these are.
    let anonymous = api.call(Request::new("GET", format!("/bookings/{id}")).through_api_gateway(None));
    assert_eq!(
        (anonymous.status, anonymous.body["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );

    // A dry run only for direct invocations: through API Gateway the header is ignored.
    let dry = api.call(
        Request::new("POST", "/bookings")
            .body(booking("cust-1", "room-7", 10, 11))
            .header("x-keel-dry-run", "true"),
    );
    assert_eq!((dry.status, &dry.body["dry_run"]), (200, &json!(true)), "{dry:?}");
    let keyed_dry =
        api.call(create("k7", booking("cust-1", "room-7", 10, 11)).header("x-keel-dry-run", "true"));
    assert_eq!(keyed_dry.status, 400, "a dry run takes no key: {keyed_dry:?}");
    let not_dry = api.call(
        create("k8", booking("cust-1", "room-7", 10, 11))
            .header("x-keel-dry-run", "true")
            .caller("cust-1"),
    );
    assert_eq!(
        not_dry.status, 201,
        "through API Gateway a dry run is not honoured"
    );

    // The manager dispatcher.
    let manager = |body: Value| api.call(Request::new("POST", "/manager").body(body));
    let table = api.stack.table.clone();
    assert_eq!(manager(json!({"operation": "ping"})).body, json!("pong"));
    assert_eq!(
        manager(json!({"operation": "echo", "payload": {"a": 1}})).body,
        json!({"a": 1})
    );
    assert_eq!(
        manager(json!({"operation": "drop", "tableName": table})).status,
        400
    );
    assert_eq!(
        manager(json!({"operation": "read", "tableName": "other"})).status,
        403
    );
    let item = json!({
        "customer_id": {"S": "cust-3"}, "resource_id": {"S": "room-8"}, "guests": {"N": "3"},
        "start": {"S": format!("{}T10:00:00Z", keel_tests::future_date(3))},
        "end": {"S": format!("{}T11:00:00Z", keel_tests::future_date(3))}
    });
    let create_item = json!({"operation": "create", "tableName": table, "payload": {"Item": item}});
    assert_eq!(
        manager(create_item.clone()).status,
        400,
        "create needs an Idempotency-Key"
    );
    let made = api.call(Request::new("POST", "/manager").key("m-1").body(create_item));
    assert_eq!(made.status, 201, "{made:?}");
    let made_id = made.body["Item"]["booking_id"].as_str().unwrap().to_owned();
    let key = json!({"Key": {"booking_id": {"S": made_id}}});
    let read = manager(json!({"operation": "read", "tableName": table, "payload": key}));
    assert_eq!(read.body["Item"]["guests"], 3);
    let listed = manager(json!({"operation": "list", "tableName": table,
        "payload": {"ExpressionAttributeValues": {":customer_id": {"S": "cust-3"}}}}));
    assert_eq!(
        listed.body["Items"].as_array().map(Vec::len),
        Some(1),
        "{listed:?}"
    );
    let update = json!({"Key": key["Key"], "UpdateExpression": "SET #s = :s",
        "ExpressionAttributeNames": {"#s": "status"}, "ExpressionAttributeValues": {":s": {"S": "CONFIRMED"}}});
    assert_eq!(
        manager(json!({"operation": "update", "tableName": table, "payload": update})).status,
        400
    );
    let deleted = manager(json!({"operation": "delete", "tableName": table, "payload": key}));
    assert_eq!(deleted.body["Attributes"]["status"], "CANCELLED");

    // Every booking stored was announced, without its contact details.
    let events = api
        .moto
        .wait_for_messages(&api.stack.events_queue, 6, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", api.output()));
    for event in &events {
        let body: Value = serde_json::from_str(event.body().unwrap_or_default()).unwrap();
        assert_eq!(body["type"], "BookingRequested");
        assert!(
            body.get("email").is_none() && body.get("notes").is_none(),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_racing_bookings_of_one_time_make_exactly_one() {
    let api = Api::start(4).await;
    let answers: Vec<Answer> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..20)
            .map(|n| {
                let api = &api;
                scope.spawn(move || {
                    // Overlapping times, distinct keys and customers.
                    let body = booking(["cust-a", "cust-b"][n % 2], "room-race", 9 + (n % 3) as u32, 12);
                    api.call(
                        Request::new("POST", "/bookings")
                            .key(&format!("race-{n}"))
                            .body(body),
                    )
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().expect("a racer")).collect()
    });
    let statuses: Vec<i64> = answers.iter().map(|a| a.status).collect();
    let created = statuses.iter().filter(|s| **s == 201).count();
    let conflicts = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((created, conflicts), (1, 19), "{statuses:?}\n{}", api.output());
    let served: Vec<usize> = api
        .functions
        .iter()
        .map(|f| {
            f.stdout_lines()
                .iter()
                .filter(|l| l.contains("\"function_request_id\""))
                .count()
        })
        .collect();
    assert!(
        served.iter().filter(|n| **n > 0).count() >= 2,
        "the requests were spread: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_confirms_what_the_api_created_and_rejects_a_closed_resources_booking() {
    let api = Api::start(1).await;
    let mut env = api.moto.env();
    env.extend(api.stack.env());
    let worker = Emulator::start().expect("emulator starts");
    let worker_process = worker
        .start_function(
            &build_binary("booking-worker").expect("booking-worker builds"),
            &env,
        )
        .expect("booking-worker starts");
    let create = |key: &str, resource: &str| {
        let answer = api.call(
            Request::new("POST", "/bookings")
                .key(key)
                .body(booking("cust-w", resource, 9, 10)),
        );
        assert_eq!(answer.status, 201, "{answer:?}\n{}", api.output());
        answer.body["booking_id"].as_str().unwrap().to_owned()
    };
    let api_ref = &api;
    let set_closed = |closed: bool| async move {
        let api = api_ref;
        api.moto
            .dynamodb()
            .update_item()
            .table_name(&api.stack.table)
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S("RESOURCE#room-shut".into()),
            )
            .update_expression("SET closed = :closed")
            .expression_attribute_values(":closed", aws_sdk_dynamodb::types::AttributeValue::Bool(closed))
            .send()
            .await
            .expect("the resource's item is updated");
    };

    let open = create("flow-open", "room-open");
    let shut = create("flow-shut", "room-shut");
    // An operator closes room-shut after the booking was requested, before it was confirmed.
    set_closed(true).await;

    // What Lambda's event source mapping does with the queue subscribed to the booking topic.
    let source = SqsEventSource::new(&api.moto, &api.stack.events_queue)
        .await
        .expect("the events queue");
    // Until both events are settled: a record that fails (a slow moment of the table, say) is
    // delivered again, as SQS would.
    let mut settled = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while settled.len() < 2 && std::time::Instant::now() < deadline {
        match source.deliver(&worker).await.expect("a poll") {
            Some(delivery) => settled.extend(
                delivery
                    .messages
                    .into_iter()
                    .filter(|m| !delivery.failed.contains(m.message_id().unwrap_or_default())),
            ),
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(
        settled.len(),
        2,
        "both BookingRequested events were settled by the worker\n{}",
        worker_process.output()
    );

    let read = |id: &str| api.call(Request::new("GET", format!("/bookings/{id}")));
    let confirmed = read(&open);
    assert_eq!(confirmed.body["status"], "CONFIRMED", "{confirmed:?}");
    let rejected = read(&shut);
    assert_eq!(
        (
            rejected.body["status"].as_str(),
            rejected.body["rejection_reason"].as_str()
        ),
        (Some("REJECTED"), Some("resource_closed")),
        "{rejected:?}"
    );
    // A rejected booking is settled: cancelling it leaves it as it is.
    let cancelled = api.call(Request::new("POST", format!("/bookings/{shut}/cancel")));
    assert_eq!(
        (cancelled.status, cancelled.body["status"].as_str()),
        (200, Some("REJECTED"))
    );
    // Its slot was freed: once room-shut reopens, the same time can be booked again.
    set_closed(false).await;
    let again = api.call(Request::new("POST", "/bookings").key("flow-again").body(booking(
        "cust-v",
        "room-shut",
        9,
        10,
    )));
    assert_eq!(again.status, 201, "{again:?}\n{}", api.output());

    // The worker's EMF counts the confirmation and the rejection, by reason.
    let counted = |metric: &str, dimension: Option<(&str, &str)>| {
        worker_process
            .stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|d| d.get("_aws").is_some() && d.get(metric).is_some())
            .any(|d| dimension.is_none_or(|(name, value)| d[name] == value))
    };
    assert!(
        wait_until(Duration::from_secs(30), || {
            counted("BookingConfirmed", None)
                && counted("BookingRejected", Some(("reason", "resource_closed")))
        }),
        "BookingConfirmed and BookingRejected{{reason=resource_closed}} are emitted:\n{}",
        worker_process.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_through_the_api_gateway_stand_in_reaches_booking_api() {
    let api = Api::start(1).await;
    let gateway = ApiGateway::start(0, &api.emulator.invoke_url(), None).expect("the gateway listens");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = booking("cust-h", "room-h", 9, 10).to_string();
    let mut created = agent
        .post(format!("{}/bookings", gateway.url()))
        .header("Idempotency-Key", "h-1")
        .send(&body)
        .expect("an answer");
    assert_eq!(created.status(), 201, "{}", api.output());
    assert!(created.headers().contains_key("apigw-requestid"));
    let created: Value = serde_json::from_str(&created.body_mut().read_to_string().unwrap()).unwrap();
    let id = created["booking_id"].as_str().expect("a booking id");

    let replayed = agent
        .post(format!("{}/bookings", gateway.url()))
        .header("Idempotency-Key", "h-1")
        .send(&body)
        .expect("an answer");
    assert_eq!(replayed.status(), 201);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");

    // A bearer token makes its `sub` the caller, as API Gateway's JWT authorizer does.
    let token = |sub: &str| {
        use base64::Engine as _;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"sub": sub}).to_string());
        format!("Bearer e30.{claims}.signature")
    };
    let read = |authorization: Option<String>| {
        let mut request = agent.get(format!("{}/bookings/{id}", gateway.url()));
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        request.call().expect("an answer").status().as_u16()
    };
    assert_eq!(read(None), 200);
    assert_eq!(read(Some(token("cust-h"))), 200);
    assert_eq!(read(Some(token("cust-other"))), 403);
    // What is not a bearer JWT is refused as the authorizer refuses it, without invoking.
    assert_eq!(read(Some("Basic dXNlcjpwYXNz".to_owned())), 401);
    let missing = agent
        .get(format!("{}/bookings/bk-missing", gateway.url()))
        .call()
        .expect("an answer");
    assert_eq!(missing.status(), 404);
}
