//! Runs Keel's main job locally: the booking API and the booking worker, wrapped by Keel, under
//! the Lambda emulator, with the template's tables, topics and queues in a moto server.
//!
//! It builds `booking-api`, `booking-worker` and `keel-extension` (showing cargo's progress),
//! starts a moto server and creates the resources `infra/template.yaml` defines (the bookings
//! and idempotency tables, the booking topic and the worker's queue, the error topic with an
//! on-call queue, the error dead-letter queue), starts the cargo-lambda emulator, the Keel
//! extension beside booking-api, booking-api and booking-worker, and an API Gateway stand-in on
//! 127.0.0.1 that turns plain HTTP requests into HTTP API events. Then it takes a tour — create,
//! retry (replayed), key reused, conflict, invalid input, read, the worker confirming, list,
//! cancel, a closed resource's booking rejected, a failure routed to on-call — printing each
//! request, its answer and the log lines and EMF documents it caused, and ends with a summary of
//! the metrics emitted.
//!
//! ```text
//! keel-local [--serve] [--no-tour] [--port N] [--api-processes N] [--function-version V] [--capture FILE]
//! ```
//!
//! `--serve` keeps everything up for your own requests (`curl http://127.0.0.1:PORT/...`), with
//! the worker fed from the booking queue as Lambda's event source mapping would, until Ctrl-C or
//! SIGTERM; `--no-tour` skips the tour; `--port` picks the API's port (default 3000; `0` takes a
//! free one); `--api-processes` runs that many booking-api processes, which serve requests at
//! once as concurrent execution environments do. Everything started is stopped on exit, on
//! Ctrl-C, or if this process dies.
//!
//! `--function-version` is the version booking-api and its extension run as
//! (`AWS_LAMBDA_FUNCTION_VERSION`, default `$LATEST`): the `function_version` of their
//! canary-critical metrics. `KEEL_FAULT_*` variables set for `keel-local` are handed to
//! booking-api (the fault switch). `--capture` writes every line booking-api, booking-worker and
//! the extension printed to `FILE` when everything stops: the input of
//! `keel-infra canary-replay` (`scripts/canary-replay.sh` runs both).
//!
//! `scripts/local.sh` installs the tools and runs this.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_tests::{
    build_binaries, free_port, wait_until, ApiGateway, BookingStack, Emulator, FunctionProcess, HarnessError,
    Moto, SqsEventSource, BOOKING_QUEUE_MAX_RECEIVE_COUNT,
};
use serde_json::{json, Value};

/// The API's port unless `--port` says otherwise.
const DEFAULT_PORT: u16 = 3000;

/// What the command line asked for.
#[derive(Debug)]
struct Options {
    serve: bool,
    tour: bool,
    port: u16,
    api_processes: usize,
    function_version: Option<String>,
    capture: Option<std::path::PathBuf>,
}

fn usage(reason: &str) -> HarnessError {
    HarnessError::Setup(format!(
        "{reason}\nusage: keel-local [--serve] [--no-tour] [--port N] [--api-processes N] \
         [--function-version V] [--capture FILE]"
    ))
}

fn options() -> Result<Options, HarnessError> {
    let mut options = Options {
        serve: false,
        tour: true,
        port: DEFAULT_PORT,
        api_processes: 1,
        function_version: None,
        capture: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--serve" => options.serve = true,
            "--no-tour" => options.tour = false,
            "--port" => {
                options.port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| usage("--port takes a port number"))?;
            }
            "--api-processes" => {
                options.api_processes = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=16).contains(n))
                    .ok_or_else(|| usage("--api-processes takes a number from 1 to 16"))?;
            }
            "--function-version" => {
                options.function_version = Some(
                    args.next()
                        .filter(|v| !v.trim().is_empty())
                        .ok_or_else(|| usage("--function-version takes a version, such as 2"))?,
                );
            }
            "--capture" => {
                options.capture = Some(
                    args.next()
                        .map(Into::into)
                        .ok_or_else(|| usage("--capture takes a file to write"))?,
                );
            }
            other => return Err(usage(&format!("unknown argument `{other}`"))),
        }
    }
    Ok(options)
}

/// Prints what is starting, on stderr (the tour goes to stdout).
fn step(what: &str) {
    eprintln!("keel-local: {what}");
}

fn setup_failed(what: &str) -> impl FnOnce(String) -> HarnessError + '_ {
    move |reason| HarnessError::Setup(format!("{what}: {reason}"))
}

/// Everything the tour and the server use.
struct Stack {
    moto: Moto,
    bookings: BookingStack,
    on_call: String,
    /// The emulator serving booking-api, and the one serving booking-worker.
    api_emulator: Emulator,
    worker_emulator: Emulator,
    extension: FunctionProcess,
    api: Vec<FunctionProcess>,
    worker: FunctionProcess,
    gateway: ApiGateway,
    booking_queue: SqsEventSource,
    runtime: tokio::runtime::Runtime,
}

impl Stack {
    fn start(options: &Options) -> Result<Self, HarnessError> {
        step("building booking-api, booking-worker and keel-extension (the first build takes a few minutes)");
        let built = build_binaries(&["booking-api", "booking-worker", "keel-extension"])?;
        let runtime = keel_tests::runtime()?;
        step("starting the moto server (DynamoDB, SNS, SQS) …");
        let moto = Moto::start()?;
        step(&format!("moto: pid {} at {}", moto.pid(), moto.endpoint()));

        step("creating the template's resources in moto …");
        let idempotency = runtime
            // Key `id`, TTL on `expiration`: the idempotency table's definition.
            .block_on(moto.create_table("booking-idempotency", Some("expiration")))
            .map_err(|e| setup_failed("the idempotency table")(e.to_string()))?;
        // Where failed invocations go: the error topic (with on-call's queue subscribed) and a DLQ.
        let (error_topic, on_call) = runtime.block_on(moto.subscribed_topic("booking-errors"))?;
        let error_dlq = runtime
            .block_on(moto.create_queue("booking-errors-dlq"))
            .map_err(|e| setup_failed("the error dead-letter queue")(e.to_string()))?;
        // The bookings table, the booking topic and the worker's queue subscribed to it.
        let bookings = runtime.block_on(moto.booking_stack())?;
        let booking_queue = runtime.block_on(SqsEventSource::new(&moto, &bookings.events_queue))?;
        for (what, name) in [
            ("bookings table", bookings.table.as_str()),
            ("idempotency table", idempotency.as_str()),
            ("booking topic", bookings.topic_arn.as_str()),
            ("booking queue", bookings.events_queue.as_str()),
            ("booking dead-letter queue", bookings.events_dlq.as_str()),
            ("error topic", error_topic.as_str()),
            ("on-call queue", on_call.as_str()),
            ("error dead-letter queue", error_dlq.as_str()),
        ] {
            step(&format!("  {what}: {name}"));
        }

        let relay = format!("127.0.0.1:{}", free_port());
        let telemetry = format!("127.0.0.1:{}", free_port());
        let mut env = moto.env();
        env.extend(bookings.env());
        env.extend(
            [
                ("KEEL_IDEMPOTENCY_TABLE", idempotency.as_str()),
                ("KEEL_ERROR_TOPIC_ARN", error_topic.as_str()),
                ("KEEL_DLQ_URL", error_dlq.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let mut api_env = env.clone();
        api_env.extend(
            [
                ("KEEL_SERVICE", "booking-api"),
                // As the template sets it: API Gateway's request id on every log line.
                ("KEEL_CORRELATION_ID_POINTER", "/requestContext/requestId"),
                ("KEEL_LOG_EVENT", "true"),
                ("KEEL_EXTENSION_ADDR", relay.as_str()),
                ("KEEL_TELEMETRY_ADDR", telemetry.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        if let Some(version) = &options.function_version {
            api_env.push(("AWS_LAMBDA_FUNCTION_VERSION".to_owned(), version.clone()));
        }
        // The fault switch, for a local canary replay.
        api_env.extend(std::env::vars().filter(|(name, _)| name.starts_with("KEEL_FAULT_")));

        step("starting the Lambda emulators (cargo-lambda) …");
        let api_emulator = Emulator::start()?;
        let worker_emulator = Emulator::start()?;
        step(&format!(
            "emulators: pid {} (booking-api, Runtime API {}), pid {} (booking-worker)",
            api_emulator.pid(),
            api_emulator.runtime_api(),
            worker_emulator.pid()
        ));
        // The extension first, as Lambda starts extensions before the runtime: booking-api hands
        // its errors to the extension's relay, which publishes them after the response.
        step("starting keel-extension beside booking-api …");
        let extension = api_emulator.start_function(&built.join("keel-extension"), &api_env)?;
        if !wait_until(Duration::from_secs(60), || {
            std::net::TcpStream::connect(&relay).is_ok()
        }) {
            return Err(HarnessError::NotReady {
                name: "keel-extension".into(),
                waited: Duration::from_secs(60),
                output: extension.output(),
            });
        }
        step(&format!(
            "keel-extension: pid {} (relay {relay})",
            extension.pid()
        ));
        let api = (0..options.api_processes)
            .map(|_| api_emulator.start_function(&built.join("booking-api"), &api_env))
            .collect::<Result<Vec<_>, _>>()?;
        let pids: Vec<String> = api.iter().map(|f| f.pid().to_string()).collect();
        step(&format!("booking-api: pid {}", pids.join(", ")));
        env.push(("KEEL_SERVICE".to_owned(), "booking-worker".to_owned()));
        let worker = worker_emulator.start_function(&built.join("booking-worker"), &env)?;
        step(&format!("booking-worker: pid {}", worker.pid()));
        let gateway =
            ApiGateway::start(options.port, &api_emulator.invoke_url(), Some(&telemetry)).map_err(|e| {
                usage(&format!(
                    "{e}\nis port {} taken? pick another with --port",
                    options.port
                ))
            })?;
        step(&format!("API Gateway stand-in: {}", gateway.url()));
        let stack = Stack {
            moto,
            bookings,
            on_call,
            api_emulator,
            worker_emulator,
            extension,
            api,
            worker,
            gateway,
            booking_queue,
            runtime,
        };
        stack.wait_healthy()?;
        Ok(stack)
    }

    /// Waits until `GET /health` answers 200 through the gateway.
    fn wait_healthy(&self) -> Result<(), HarnessError> {
        let url = format!("{}/health", self.gateway.url());
        let agent = http_agent();
        if wait_until(Duration::from_secs(60), || {
            agent.get(&url).call().is_ok_and(|r| r.status() == 200)
        }) {
            return Ok(());
        }
        Err(HarnessError::NotReady {
            name: "booking-api".into(),
            waited: Duration::from_secs(60),
            output: self.api_output(),
        })
    }

    fn api_output(&self) -> String {
        self.api
            .iter()
            .map(FunctionProcess::output)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Hands the booking queue's messages to booking-worker, as Lambda's event source mapping
    /// does, until the queue is empty (a record failing on every receive leaves it for the
    /// dead-letter queue on its third); returns how many records were delivered.
    fn feed_worker(&self) -> Result<usize, HarnessError> {
        let mut delivered = 0;
        for _ in 0..=BOOKING_QUEUE_MAX_RECEIVE_COUNT * 4 {
            let Some(delivery) = self
                .runtime
                .block_on(self.booking_queue.deliver(&self.worker_emulator))?
            else {
                return Ok(delivered);
            };
            delivered += delivery.messages.len();
            if !delivery.failed.is_empty() {
                println!(
                    "  (booking-worker failed {} record(s): SQS delivers them again)",
                    delivery.failed.len()
                );
            }
        }
        Err(HarnessError::Setup(format!(
            "the booking queue did not empty: {}",
            self.worker.output()
        )))
    }

    /// Sets `closed` on a resource's item, as its operators would.
    fn set_closed(&self, resource_id: &str, closed: bool) -> Result<(), HarnessError> {
        use aws_sdk_dynamodb::types::AttributeValue;
        self.runtime
            .block_on(
                self.moto
                    .dynamodb()
                    .update_item()
                    .table_name(&self.bookings.table)
                    .key("pk", AttributeValue::S(format!("RESOURCE#{resource_id}")))
                    .update_expression("SET closed = :closed")
                    .expression_attribute_values(":closed", AttributeValue::Bool(closed))
                    .send(),
            )
            .map(drop)
            .map_err(|e| {
                setup_failed("closing a resource")(
                    aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
                )
            })
    }

    /// Every stdout line each process has printed, in one place, for the metrics summary.
    fn all_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.api.iter().flat_map(FunctionProcess::stdout_lines).collect();
        lines.extend(self.worker.stdout_lines());
        lines.extend(self.extension.stdout_lines());
        lines
    }
}

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(35)))
        .build()
        .into()
}

/// New stdout lines of the processes followed, printed as they arrive.
struct Follower<'a> {
    processes: Vec<(&'a str, &'a FunctionProcess, usize)>,
}

impl<'a> Follower<'a> {
    fn new(stack: &'a Stack) -> Self {
        let mut processes: Vec<(&str, &FunctionProcess, usize)> =
            stack.api.iter().map(|f| ("booking-api", f, 0)).collect();
        processes.push(("booking-worker", &stack.worker, 0));
        processes.push(("keel-extension", &stack.extension, 0));
        Follower { processes }
    }

    /// Prints what was written since the last call; waits up to a second for the first line.
    fn print_new(&mut self) {
        let total = |f: &Self| {
            f.processes
                .iter()
                .map(|(_, p, _)| p.stdout_lines().len())
                .sum::<usize>()
        };
        let seen: usize = self.processes.iter().map(|(_, _, n)| n).sum();
        wait_until(Duration::from_secs(1), || total(self) > seen);
        // Lines of one invocation arrive together; give the pipes a moment to drain.
        std::thread::sleep(Duration::from_millis(50));
        self.print_new_quietly();
    }

    /// Prints what was written since the last call, without waiting.
    fn print_new_quietly(&mut self) {
        for (name, process, printed) in &mut self.processes {
            let lines = process.stdout_lines();
            for line in &lines[*printed..] {
                println!("    {name} │ {line}");
            }
            *printed = lines.len();
        }
    }
}

/// One request of the tour, sent through the gateway as plain HTTP, and the status it must get.
struct Step<'a> {
    what: &'a str,
    method: &'a str,
    path: String,
    key: Option<&'a str>,
    body: Option<Value>,
    expect: u16,
    /// Whether the answer must be a replay (`Idempotent-Replayed: true`).
    replayed: bool,
}

impl<'a> Step<'a> {
    /// The same step, whose answer must be replayed from the idempotency record.
    fn replayed(mut self) -> Self {
        self.replayed = true;
        self
    }

    fn get(what: &'a str, path: impl Into<String>) -> Self {
        Step {
            what,
            method: "GET",
            path: path.into(),
            key: None,
            body: None,
            expect: 200,
            replayed: false,
        }
    }

    fn post(
        what: &'a str,
        path: impl Into<String>,
        key: Option<&'a str>,
        body: Option<Value>,
        expect: u16,
    ) -> Self {
        Step {
            what,
            method: "POST",
            path: path.into(),
            key,
            body,
            expect,
            replayed: false,
        }
    }
}

/// Sends `step`, prints it, its answer and the lines it caused; fails when the status is not
/// the one expected (the tour is the main job's test too).
fn request(stack: &Stack, follower: &mut Follower<'_>, step: Step<'_>) -> Result<Value, HarnessError> {
    println!("\n▶ {}", step.what);
    let url = format!("{}{}", stack.gateway.url(), step.path);
    let mut shown = format!("  → {} {}", step.method, step.path);
    if let Some(key) = step.key {
        shown.push_str(&format!("  Idempotency-Key: {key}"));
    }
    if let Some(body) = &step.body {
        shown.push_str(&format!("  {body}"));
    }
    println!("{shown}");
    let agent = http_agent();
    let failed = |e: ureq::Error| HarnessError::Http {
        url: url.clone(),
        reason: e.to_string(),
    };
    let mut response = if step.method == "GET" {
        agent.get(&url).call().map_err(failed)?
    } else {
        let mut post = agent.post(&url).header("content-type", "application/json");
        if let Some(key) = step.key {
            post = post.header("idempotency-key", key);
        }
        match &step.body {
            Some(body) => post.send(body.to_string()).map_err(failed)?,
            None => post.send_empty().map_err(failed)?,
        }
    };
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    println!(
        "  ← {status}{} {answer}",
        if replayed {
            " (Idempotent-Replayed: true)"
        } else {
            ""
        }
    );
    follower.print_new();
    if status != step.expect || (step.replayed && !replayed) {
        return Err(HarnessError::Setup(format!(
            "{} {} answered {status}{}, not {}{}: {answer}",
            step.method,
            step.path,
            if replayed { " (replayed)" } else { "" },
            step.expect,
            if step.replayed { " (replayed)" } else { "" },
        )));
    }
    Ok(answer)
}

/// `answer`'s `field`, which the tour needs.
fn field<'a>(answer: &'a Value, field: &str) -> Result<&'a str, HarnessError> {
    answer[field]
        .as_str()
        .ok_or_else(|| HarnessError::Setup(format!("the answer has no `{field}`: {answer}")))
}

/// Fails unless `booking`'s status is `status`.
fn expect_status(booking: &Value, status: &str) -> Result<(), HarnessError> {
    if booking["status"] == status {
        return Ok(());
    }
    Err(HarnessError::Setup(format!(
        "the booking is not {status}: {booking}"
    )))
}

fn booking(customer: &str, resource: &str, day: &str, from: u32, to: u32) -> Option<Value> {
    Some(json!({
        "customer_id": customer, "resource_id": resource, "guests": 2,
        "start": format!("{day}T{from:02}:00:00Z"), "end": format!("{day}T{to:02}:00:00Z"),
        "email": format!("{customer}@example.com")
    }))
}

fn tour(stack: &Stack) -> Result<(), HarnessError> {
    let mut follower = Follower::new(stack);
    follower.print_new();
    let day = keel_tests::future_date(2);
    let mut send = |step: Step<'_>| request(stack, &mut follower, step);
    let created = send(Step::post(
        "a booking (stored PENDING, BookingRequested published to the booking topic)",
        "/bookings",
        Some("order-1"),
        booking("cust-7", "room-1", &day, 10, 11),
        201,
    ))?;
    let id = field(&created, "booking_id")?.to_owned();
    let retried = send(
        Step::post(
            "the same request retried (replayed from DynamoDB: the same booking, not booked twice)",
            "/bookings",
            Some("order-1"),
            booking("cust-7", "room-1", &day, 10, 11),
            201,
        )
        .replayed(),
    )?;
    if field(&retried, "booking_id")? != id {
        return Err(HarnessError::Setup(format!(
            "the retry answered another booking: {retried}"
        )));
    }
    send(Step::post(
        "the key order-1 reused for another booking (refused: 422)",
        "/bookings",
        Some("order-1"),
        booking("cust-7", "room-3", &day, 10, 11),
        422,
    ))?;
    send(Step::post(
        "another customer's booking of room-1 at an overlapping time (refused: 409 BOOKING_CONFLICT)",
        "/bookings",
        Some("order-2"),
        booking("cust-8", "room-1", &day, 10, 12),
        409,
    ))?;
    send(Step::post(
        "invalid input: the end before the start (refused: 400, naming the field)",
        "/bookings",
        Some("order-3"),
        booking("cust-7", "room-1", &day, 12, 11),
        400,
    ))?;
    send(Step::post(
        "a booking without an Idempotency-Key (refused: 400)",
        "/bookings",
        None,
        booking("cust-7", "room-2", &day, 10, 11),
        400,
    ))?;
    send(Step::get("the booking, read back", format!("/bookings/{id}")))?;

    println!(
        "\n▶ booking-worker takes the BookingRequested event from the booking queue and confirms the booking"
    );
    let delivered = stack.feed_worker()?;
    println!("  ({delivered} record(s) delivered to booking-worker)");
    let confirmed = send(Step::get("the booking, now CONFIRMED", format!("/bookings/{id}")))?;
    expect_status(&confirmed, "CONFIRMED")?;
    send(Step::get(
        "cust-7's bookings, newest first (a page of the by-customer index)",
        "/bookings?customer_id=cust-7&limit=10",
    ))?;
    let cancel = format!("/bookings/{id}/cancel");
    send(Step::post(
        "the booking cancelled (its slot freed)",
        &cancel,
        None,
        None,
        200,
    ))?;
    send(Step::post(
        "cancelled again (200: nothing changes)",
        &cancel,
        None,
        None,
        200,
    ))?;

    let closed = send(Step::post(
        "a booking of room-9, which its operators then close (closed = true on its item)",
        "/bookings",
        Some("order-9"),
        booking("cust-7", "room-9", &day, 14, 15),
        201,
    ))?;
    stack.set_closed("room-9", true)?;
    println!("\n▶ booking-worker rejects the room-9 booking: the resource is closed");
    stack.feed_worker()?;
    let closed_id = field(&closed, "booking_id")?;
    let rejected = send(Step::get(
        "the room-9 booking, REJECTED",
        format!("/bookings/{closed_id}"),
    ))?;
    expect_status(&rejected, "REJECTED")?;
    send(Step::get("health (the table answers)", "/health"))?;

    println!(
        "\n▶ a failure: an event that is not an API Gateway request, invoked directly (the invocation fails)"
    );
    let event = json!({
        "headers": {"idempotency-key": "order-4"},
        "body": 5,
        "guest": {"email": "eve@example.com"}
    });
    println!("  → Invoke {event}");
    let answer = stack.api_emulator.invoke(&event.to_string())?;
    println!("  ← {} {}", answer.status, answer.body);
    if answer.status != 500 || answer.body["errorType"] != "Keel.InvalidEvent" {
        return Err(HarnessError::Setup(format!(
            "the direct invocation did not fail as Keel.InvalidEvent: {} {}",
            answer.status, answer.body
        )));
    }
    follower.print_new();
    println!("\n▶ what on-call received (the extension published the relayed error to the error topic)");
    // The extension publishes after the response: it may take a moment.
    let received = stack.runtime.block_on(stack.moto.wait_for_messages(
        &stack.on_call,
        1,
        Duration::from_secs(30),
    ))?;
    for message in received {
        println!("  {}", message.body().unwrap_or_default());
    }
    follower.print_new();
    Ok(())
}

/// One metric's total over the documents: its unit, values recorded, their sum and maximum.
#[derive(Debug, Default)]
struct Total {
    unit: String,
    samples: usize,
    sum: f64,
    max: f64,
}

/// Prints every metric the EMF documents in `lines` recorded, by name and dimension values.
fn summarize_metrics(lines: &[String]) {
    let mut totals: BTreeMap<(String, String), Total> = BTreeMap::new();
    for document in lines.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
        let Some(directives) = document
            .pointer("/_aws/CloudWatchMetrics")
            .and_then(Value::as_array)
        else {
            continue;
        };
        for directive in directives {
            let dimensions: Vec<String> = directive["Dimensions"]
                .as_array()
                .and_then(|sets| sets.first())
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|name| format!("{name}={}", document[name].as_str().unwrap_or("")))
                .collect();
            for metric in directive["Metrics"].as_array().into_iter().flatten() {
                let name = metric["Name"].as_str().unwrap_or_default().to_owned();
                let values: Vec<f64> = match &document[&name] {
                    Value::Array(values) => values.iter().filter_map(Value::as_f64).collect(),
                    value => value.as_f64().into_iter().collect(),
                };
                let total = totals.entry((name, dimensions.join(", "))).or_default();
                total.unit = metric["Unit"].as_str().unwrap_or("None").to_owned();
                total.samples += values.len();
                total.sum += values.iter().sum::<f64>();
                total.max = values.iter().copied().fold(total.max, f64::max);
            }
        }
    }
    println!("\n▶ the metrics the functions emitted (EMF, as CloudWatch would extract them)");
    println!(
        "  {:<30} {:<58} {:>7} {:>10} {:>9}  unit",
        "metric", "dimensions", "values", "sum", "max"
    );
    for ((name, dimensions), total) in &totals {
        println!(
            "  {name:<30} {dimensions:<58} {:>7} {:>10} {:>9}  {}",
            total.samples,
            round(total.sum),
            round(total.max),
            total.unit
        );
    }
}

/// `value` with at most three decimals, for a table.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Serves until Ctrl-C or SIGTERM: feeds the worker from the booking queue and prints the
/// functions' new lines.
fn serve(stack: &Stack) -> Result<(), HarnessError> {
    let url = stack.gateway.url();
    let day = keel_tests::future_date(3);
    println!(
        "\nServing booking-api at {url} (an API Gateway HTTP API stand-in: each request becomes a payload 2.0 event).\n\
         Without an Authorization header the customer_id you send is trusted, as in any local run; with\n\
         `Authorization: Bearer <JWT>` its `sub` is the caller, as behind API Gateway's JWT authorizer.\n\
         booking-worker confirms new bookings as they reach the booking queue. Try:\n\n  \
         curl -i -X POST {url}/bookings -H 'Idempotency-Key: k1' -H 'content-type: application/json' \\\n    \
         -d '{{\"customer_id\":\"cust-1\",\"resource_id\":\"room-1\",\"start\":\"{day}T10:00:00Z\",\"end\":\"{day}T11:00:00Z\",\"guests\":2}}'\n  \
         curl -i {url}/bookings/<booking_id>\n  \
         curl -i '{url}/bookings?customer_id=cust-1'\n  \
         curl -i -X POST {url}/bookings/<booking_id>/cancel\n\n\
         Press Ctrl-C to stop everything."
    );
    let mut follower = Follower::new(stack);
    let stop = async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match terminate.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    let work = async {
        loop {
            // What Lambda's event source mapping does: poll, deliver, delete what succeeded.
            if let Err(error) = stack.booking_queue.deliver(&stack.worker_emulator).await {
                eprintln!("keel-local: polling the booking queue: {error}");
            }
            follower.print_new_quietly();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    stack.runtime.block_on(async {
        tokio::select! {
            () = stop => {}
            () = work => {}
        }
    });
    eprintln!("\nkeel-local: stopping everything …");
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keel-local: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), HarnessError> {
    let options = options()?;
    let stack = Stack::start(&options)?;
    if options.tour {
        tour(&stack)?;
        summarize_metrics(&stack.all_lines());
    }
    if options.serve {
        serve(&stack)?;
    }
    if let Some(path) = &options.capture {
        let mut text = stack.all_lines().join("\n");
        text.push('\n');
        std::fs::write(path, text)
            .map_err(|e| setup_failed("--capture")(format!("{}: {e}", path.display())))?;
        step(&format!("wrote every function line to {}", path.display()));
    }
    Ok(())
}
