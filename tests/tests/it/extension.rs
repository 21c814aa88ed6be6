//! The Keel extension under the cargo-lambda emulator (Extensions API), beside booking-api: it
//! registers, receives INVOKE events, and publishes the errors the function relays to it.

use std::time::Duration;

use keel_tests::{build_binary, free_port, Emulator, Moto};
use serde_json::json;

/// The one envelope the extension published to the queue subscribed to the topic.
async fn only_envelope(
    moto: &Moto,
    queue: &str,
    extension: &keel_tests::FunctionProcess,
    what: &str,
) -> keel_runtime::routing::Envelope {
    let received = moto
        .wait_for_messages(queue, 1, Duration::from_secs(60))
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}\n{}", extension.output()));
    assert_eq!(received.len(), 1, "{what}\n{}", extension.output());
    serde_json::from_str(received[0].body().unwrap()).unwrap()
}

/// Starts the extension against `emulator` with `env`, and waits until its relay (`relay`)
/// listens.
fn start_extension(
    emulator: &Emulator,
    env: &[(String, String)],
    relay: &str,
) -> keel_tests::FunctionProcess {
    let binary = build_binary("keel-extension").expect("keel-extension builds");
    let extension = emulator.start_function(&binary, env).expect("extension starts");
    assert!(
        keel_tests::wait_until(Duration::from_secs(60), || std::net::TcpStream::connect(relay)
            .is_ok()),
        "the relay listens\n{}",
        extension.output()
    );
    extension
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_relays_its_error_to_the_extension_which_publishes_it() {
    let moto = Moto::start().expect("moto starts");
    let (topic, on_call) = moto.subscribed_topic("booking-errors").await.unwrap();
    let function_binary = build_binary("booking-api").expect("booking-api builds");
    let emulator = Emulator::start().expect("emulator starts");

    let relay = format!("127.0.0.1:{}", free_port());
    let mut env = moto.env();
    env.push(("KEEL_EXTENSION_ADDR".into(), relay.clone()));
    let mut extension_env = env.clone();
    env.extend(moto.booking_stack().await.expect("the bookings stack").env());
    extension_env.push(("KEEL_ERROR_TOPIC_ARN".into(), topic.clone()));
    extension_env.push(("KEEL_TELEMETRY_ADDR".into(), format!("127.0.0.1:{}", free_port())));
    extension_env.push(("KEEL_LOG_LEVEL".into(), "DEBUG".into()));
    let extension = start_extension(&emulator, &extension_env, &relay);
    // The function publishes nothing itself: it only knows the relay (its topic is unset).
    let function = emulator
        .start_function(&function_binary, &env)
        .expect("function starts");

    let failing = json!({"headers": {"idempotency-key": "order-9"}, "body": 5}).to_string();
    let answer = emulator
        .invoke(&failing)
        .unwrap_or_else(|e| panic!("{e}\n{}", function.output()));
    assert_eq!(answer.body["errorType"], "Keel.InvalidEvent");

    let envelope = only_envelope(&moto, &on_call, &extension, "the extension published it").await;
    // Counted once, where it landed: by the extension, not by the function that handed it over.
    assert!(
        extension.wait_for_line(Duration::from_secs(60), |l| l.contains("\"RoutedError\":1")
            && l.contains("\"sink\":\"sns\"")),
        "the extension counted it\n{}",
        extension.output()
    );
    assert!(
        !function
            .stdout_lines()
            .iter()
            .any(|l| l.contains("\"RoutedError\"")),
        "the function does not count it too\n{}",
        function.output()
    );
    assert_eq!(envelope.error_type, "Keel.InvalidEvent");
    assert_eq!(envelope.source, keel_runtime::routing::Source::Runtime);
    assert!(
        extension.wait_for_line(Duration::from_secs(60), |l| l.contains("invoke event")
            && l.contains(&envelope.request_id)),
        "the extension saw the INVOKE event\n{}",
        extension.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_shutdown_every_pending_envelope_is_published_or_logged_whole() {
    let moto = Moto::start().expect("moto starts");
    let (topic, on_call) = moto.subscribed_topic("booking-errors").await.unwrap();

    let relay = format!("127.0.0.1:{}", free_port());
    let mut env = moto.env();
    env.push(("KEEL_EXTENSION_ADDR".into(), relay.clone()));
    let mut function_env = env.clone();
    function_env.extend(moto.booking_stack().await.expect("the bookings stack").env());
    // The emulator runs booking-api itself, so that stopping it ends the environment.
    let mut emulator = Emulator::serving("booking-api", &function_env).expect("emulator starts");
    env.push(("KEEL_ERROR_TOPIC_ARN".into(), topic));
    env.push(("KEEL_TELEMETRY_ADDR".into(), format!("127.0.0.1:{}", free_port())));
    let extension = start_extension(&emulator, &env, &relay);

    // One envelope from a failed invocation, then a burst the runtime would relay: most are
    // still queued when the environment ends.
    let failing = json!({"headers": {"idempotency-key": "order-9"}, "body": 5}).to_string();
    let answer = emulator
        .invoke(&failing)
        .unwrap_or_else(|e| panic!("{e}\n{}", emulator.output()));
    assert_eq!(
        answer.body["errorType"],
        "Keel.InvalidEvent",
        "{}",
        emulator.output()
    );
    let routing = keel_runtime::routing::ErrorRouting::new("booking-api");
    let burst = 99;
    for n in 0..burst {
        let envelope = routing.report(
            keel_runtime::routing::Source::Runtime,
            &format!("req-{n}"),
            "Booking.PartnerDown",
            format!("failure {n}"),
            keel_runtime::classify::ErrorClass::Transient,
            json!({"n": n}),
        );
        let body = serde_json::to_string(&envelope).unwrap();
        let (status, _) = keel_tests::post(
            &format!("http://{relay}/envelopes"),
            &body,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(status, 202);
    }
    emulator.shut_down();

    assert!(
        extension.wait_for_line(Duration::from_secs(60), |l| l
            .contains("the relay's queue is drained")),
        "the extension drained its queue on SHUTDOWN\n{}",
        extension.output()
    );
    let lines = extension.stdout_lines();
    let shutdown = lines
        .iter()
        .find(|l| l.contains("shutting down: draining the relay"))
        .unwrap_or_else(|| panic!("a SHUTDOWN event arrived\n{}", extension.output()));
    assert!(shutdown.contains("booking-api"), "{shutdown}");
    let drained: serde_json::Value = lines
        .iter()
        .find(|l| l.contains("the relay's queue is drained"))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap();
    assert!(
        drained["published"].as_u64().unwrap_or(0) > 0,
        "envelopes were pending at SHUTDOWN\n{}",
        extension.output()
    );

    // What the window left no time for (a loaded machine publishes fewer in 2 s) is in the
    // extension's log, whole.
    let logged = drained["logged"].as_u64().unwrap_or(0) as usize;
    let in_log: Vec<keel_runtime::routing::Envelope> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "keel.routed_error")
        .filter_map(|l| match &l["envelope"] {
            serde_json::Value::String(text) => serde_json::from_str(text).ok(),
            object => serde_json::from_value(object.clone()).ok(),
        })
        .collect();
    assert!(
        in_log.len() >= logged,
        "{logged} envelopes logged for lack of time, {} found in the log\n{}",
        in_log.len(),
        extension.output()
    );
    let received = moto
        .wait_for_messages(&on_call, burst + 1 - logged, Duration::from_secs(120))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", extension.output()));
    let published: Vec<keel_runtime::routing::Envelope> = received
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    let published_ids: std::collections::HashSet<&str> = published.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(published_ids.len(), published.len(), "each published once");
    let mut all = published_ids.clone();
    all.extend(in_log.iter().map(|e| e.id.as_str()));
    assert_eq!(
        all.len(),
        burst + 1,
        "every envelope reached the queue ({}) or the log ({})\n{}",
        published.len(),
        in_log.len(),
        extension.output()
    );
    let mut types: Vec<&str> = published
        .iter()
        .chain(&in_log)
        .map(|e| e.error_type.as_str())
        .collect();
    types.sort();
    types.dedup();
    assert_eq!(types, ["Booking.PartnerDown", "Keel.InvalidEvent"]);
}

/// What Lambda's Telemetry API would deliver for a timed-out invocation: the lines the function
/// wrote (JSON log records) and the platform records of the timeout.
fn timeout_batch(request_id: &str, lines: &[serde_json::Value]) -> serde_json::Value {
    let mut batch: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| json!({"time": line["timestamp"], "type": "function", "record": line}))
        .collect();
    let metrics =
        json!({"durationMs": 3000.0, "billedDurationMs": 3000, "memorySizeMB": 128, "maxMemoryUsedMB": 23});
    batch.push(
        json!({"time": "2026-11-21T10:00:03.000Z", "type": "platform.runtimeDone",
        "record": {"requestId": request_id, "status": "timeout", "metrics": {"durationMs": 3000.0}}}),
    );
    batch.push(
        json!({"time": "2026-11-21T10:00:03.001Z", "type": "platform.report",
        "record": {"requestId": request_id, "status": "timeout", "metrics": metrics}}),
    );
    json!(batch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_outlives_its_deadline_is_reported_with_its_last_lines() {
    let moto = Moto::start().expect("moto starts");
    let (topic, on_call) = moto.subscribed_topic("booking-errors").await.unwrap();
    let extension_binary = build_binary("keel-extension").expect("keel-extension builds");
    let function_binary = keel_tests::build_example("sleepy").expect("the sleepy function builds");
    let emulator = Emulator::start().expect("emulator starts");

    let telemetry = format!("127.0.0.1:{}", free_port());
    let mut env = moto.env();
    env.push(("KEEL_EXTENSION_ADDR".into(), format!("127.0.0.1:{}", free_port())));
    env.push(("KEEL_ERROR_TOPIC_ARN".into(), topic));
    env.push(("KEEL_TELEMETRY_ADDR".into(), telemetry.clone()));
    let extension = emulator
        .start_function(&extension_binary, &env)
        .expect("extension starts");
    assert!(
        keel_tests::wait_until(Duration::from_secs(60), || std::net::TcpStream::connect(
            &telemetry
        )
        .is_ok()),
        "the telemetry listener listens\n{}",
        extension.output()
    );
    let function = emulator
        .start_function(&function_binary, &moto.env())
        .expect("function starts");

    // The invocation never answers (Lambda would time it out): it is left hanging.
    let invoke_url = emulator.invoke_url();
    std::thread::spawn(move || {
        keel_tests::post(&invoke_url, r#"{"booking_id":"bk-7"}"#, Duration::from_secs(60))
    });
    assert!(
        function.wait_for_line(Duration::from_secs(60), |l| l
            .contains("the partner is slow to answer")),
        "{}",
        function.output()
    );
    let lines: Vec<serde_json::Value> = function
        .stdout_lines()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l.get("function_request_id").is_some())
        .collect();
    let request_id = lines[0]["function_request_id"].as_str().unwrap().to_owned();

    // As Lambda does: the batch POSTed to the listener.
    let batch = timeout_batch(&request_id, &lines).to_string();
    let (status, answer) =
        keel_tests::post(&format!("http://{telemetry}/"), &batch, Duration::from_secs(10)).unwrap();
    assert_eq!(status, 200, "{answer}");

    let envelope = only_envelope(&moto, &on_call, &extension, "one envelope for the timeout").await;
    assert_eq!(envelope.error_class, keel_runtime::classify::ErrorClass::Timeout);
    assert_eq!(envelope.request_id, request_id);
    assert_eq!(envelope.source, keel_runtime::routing::Source::Extension);
    let last: Vec<&str> = envelope.event["last_log_lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(last.contains(&"the partner is slow to answer"), "{last:?}");
    assert!(
        extension.wait_for_line(Duration::from_secs(60), |l| l.contains("\"InvocationTimeout\":1")),
        "one InvocationTimeout EMF document\n{}",
        extension.output()
    );
    let timeouts = extension
        .stdout_lines()
        .iter()
        .filter(|l| l.contains("\"InvocationTimeout\":1"))
        .count();
    assert_eq!(timeouts, 1);
}

#[test]
fn the_layer_zips_hold_the_extension_where_lambda_looks_for_it() {
    let root = keel_tests::workspace_root();
    // The host's layer from the binary the test build made; the other architecture's is
    // cross-compiled by the script.
    let binary = build_binary("keel-extension").expect("keel-extension builds");
    let packaged = std::process::Command::new("bash")
        .arg(root.join("scripts/package-extension.sh"))
        .env("KEEL_LAYER_PROFILE", "dev")
        .env("KEEL_EXTENSION_BINARY", &binary)
        .output()
        .expect("the packaging script runs");
    let said = String::from_utf8_lossy(&packaged.stdout);
    assert!(
        packaged.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&packaged.stderr)
    );
    let host = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    };
    // Python's zipfile, as the script itself uses: entry names, Unix modes, the ELF machine of
    // the binary (0xb7 aarch64, 0x3e x86-64), and the newest glibc symbol version it needs:
    // provided.al2023 has glibc 2.34.
    let inspect = "import re, sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
        b = z.read('extensions/keel-extension'); \
        glibc = max((int(m), int(n)) for m, n in re.findall(rb'GLIBC_(\\d+)\\.(\\d+)', b)); \
        print([(i.filename, oct(i.external_attr >> 16)) for i in z.infolist()], \
        hex(int.from_bytes(b[18:20], 'little')), glibc <= (2, 34), '%d.%d' % glibc)";
    for architecture in keel_infra::template::ARCHITECTURES {
        // Where the SAM template deploys it from.
        let zip = root
            .join("infra")
            .join(keel_infra::template::layer_zip(architecture));
        if architecture != host && !said.contains(&format!("keel-extension-{architecture}.zip")) {
            assert!(said.contains(&format!("{architecture}: skipped")), "{said}");
            continue;
        }
        let listing = std::process::Command::new(keel_tests::venv().join("bin/python"))
            .args(["-c", inspect])
            .arg(&zip)
            .output()
            .expect("python reads the zip");
        let machine = if architecture == "arm64" { "0xb7" } else { "0x3e" };
        let (stdout, stderr) = (
            String::from_utf8_lossy(&listing.stdout),
            String::from_utf8_lossy(&listing.stderr),
        );
        assert_eq!(
            stdout.trim().rsplit_once(' ').map_or("", |(head, _glibc)| head),
            format!("[('extensions/keel-extension', '0o755')] {machine} True"),
            "{}: {stdout}{stderr} (the last figure: the newest glibc it needs)",
            zip.display(),
        );
    }
}

/// The resident and the peak memory of process `pid` (`VmRSS`, `VmHWM`), in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process runs");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{status}"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// POSTs `bytes` bytes to `path` at `addr` (with a Content-Length, or `chunked` without one),
/// sending from another thread while the answer is read, and returns the answer's status line: a
/// server that refuses the body answers before it has all been sent, and closes the connection.
fn post_oversized(addr: &str, path: &str, bytes: usize, chunked: bool) -> String {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the listener listens");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {bytes}")
    };
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    )
    .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..bytes / chunk.len() {
            if chunked {
                write!(writer, "{:x}\r\n", chunk.len())?;
            }
            writer.write_all(&chunk)?;
            if chunked {
                writer.write_all(b"\r\n")?;
            }
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n")?;
        }
        Ok(())
    });
    let mut status = String::new();
    let read = std::io::BufReader::new(stream).read_line(&mut status);
    // The sender stops at the first write the closed connection refuses.
    let _ = sender.join();
    read.unwrap_or_else(|e| panic!("no answer from {addr}{path}: {e}"));
    status.trim_end().to_owned()
}

/// The records Lambda's Telemetry API sends for one successful invocation of booking-api
/// (schema 2022-12-13): its start, the lines it logged (JSON), its end and its report.
fn successful_invocation(request_id: &str) -> Vec<serde_json::Value> {
    let tracing = json!({"spanId": "2f2a0c1d4b3e5f60", "type": "X-Amzn-Trace-Id",
        "value": "Root=1-6745a1b2-0123456789abcdef01234567;Parent=2f2a0c1d4b3e5f60;Sampled=1"});
    let line = |message: &str| {
        json!({"time": "2026-11-21T11:30:50.934Z", "type": "function", "record": {
            "timestamp": "2026-11-21T11:30:50.934Z", "level": "INFO", "message": message,
            "service": "booking-api", "function_name": "booking-api", "function_version": "$LATEST",
            "function_memory_size": 128, "function_request_id": request_id, "cold_start": false,
            "xray_trace_id": "Root=1-6745a1b2-0123456789abcdef01234567", "booking_id": "bk-2a58060cfdedbf5a", "seats": 2
        }})
    };
    vec![
        json!({"time": "2026-11-21T11:30:50.930Z", "type": "platform.start",
            "record": {"requestId": request_id, "version": "$LATEST", "tracing": tracing}}),
        line("booking requested"),
        line("booking priced"),
        line("booking created"),
        json!({"time": "2026-11-21T11:30:50.952Z", "type": "platform.runtimeDone", "record": {
            "requestId": request_id, "status": "success", "tracing": tracing,
            "spans": [{"name": "responseLatency", "start": "2026-11-21T11:30:50.931Z", "durationMs": 20.1}],
            "metrics": {"durationMs": 21.4, "producedBytes": 212}}}),
        json!({"time": "2026-11-21T11:30:50.953Z", "type": "platform.report", "record": {
            "requestId": request_id, "status": "success", "tracing": tracing,
            "metrics": {"durationMs": 21.4, "billedDurationMs": 22, "memorySizeMB": 128, "maxMemoryUsedMB": 31}}}),
    ]
}

/// What the extension may hold resident (20 MB).
const RSS_LIMIT_KIB: u64 = 20_000_000 / 1024;

#[test]
fn the_extensions_memory_stays_bounded_under_hostile_posts_and_many_requests() {
    let emulator = Emulator::start().expect("emulator starts");
    let relay = format!("127.0.0.1:{}", free_port());
    let telemetry = format!("127.0.0.1:{}", free_port());
    // No topic: what is routed goes to the log.
    let env = [
        ("KEEL_EXTENSION_ADDR".to_owned(), relay.clone()),
        ("KEEL_TELEMETRY_ADDR".to_owned(), telemetry.clone()),
    ];
    let extension = start_extension(&emulator, &env, &relay);
    assert!(
        keel_tests::wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(
            &telemetry
        )
        .is_ok()),
        "the telemetry listener listens\n{}",
        extension.output()
    );
    let pid = extension.pid();
    let (at_start, _) = memory_kib(pid);

    // 32 MiB to each listener, announced and not: each refused without being read whole.
    for (listener, path) in [(&relay, "/envelopes"), (&telemetry, "/")] {
        for chunked in [false, true] {
            let status = post_oversized(listener, path, 32 << 20, chunked);
            assert!(
                status.starts_with("HTTP/1.1 413"),
                "{listener}{path} (chunked: {chunked}) answered {status:?}\n{}",
                extension.output()
            );
        }
    }
    let (after_oversized, _) = memory_kib(pid);

    // 10,000 successful invocations, 100 to a batch.
    for batch in 0..100 {
        let records: Vec<serde_json::Value> = (0..100)
            .flat_map(|n| successful_invocation(&format!("req-{batch}-{n}")))
            .collect();
        let (status, answer) = keel_tests::post(
            &format!("http://{telemetry}/"),
            &serde_json::Value::from(records).to_string(),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(status, 200, "batch {batch}: {answer}\n{}", extension.output());
    }
    let (after_requests, peak) = memory_kib(pid);

    eprintln!(
        "keel-extension RSS: {at_start} KiB at start, {after_oversized} KiB after 32 MiB POSTs to each \
         listener, {after_requests} KiB after telemetry for 10,000 requests (peak {peak} KiB)"
    );
    // The peak too: a body read whole and freed again would leave RSS low but not the peak.
    for (when, rss) in [
        ("after the oversized POSTs", after_oversized),
        ("after 10,000 requests", after_requests),
        ("at its peak", peak),
    ] {
        assert!(
            rss <= RSS_LIMIT_KIB,
            "{rss} KiB resident {when}, over {RSS_LIMIT_KIB} KiB (at start {at_start} KiB, peak {peak} KiB)"
        );
    }
}

#[test]
fn a_malformed_relay_byte_budget_stops_the_extension_with_a_clear_error() {
    let binary = build_binary("keel-extension").expect("keel-extension builds");
    let mut command = std::process::Command::new(binary);
    command
        .env("KEEL_RELAY_MAX_BYTES", "16MB")
        .env("KEEL_EXTENSION_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("KEEL_TELEMETRY_ADDR", format!("127.0.0.1:{}", free_port()))
        .env_remove("AWS_LAMBDA_RUNTIME_API");
    let mut extension = keel_tests::Process::spawn("keel-extension", command).expect("it starts");
    assert!(
        keel_tests::wait_until(Duration::from_secs(20), || !extension.is_running()),
        "it stops\n{}",
        extension.output()
    );
    let said = extension.output();
    assert!(
        said.contains(r#"KEEL_RELAY_MAX_BYTES="16MB" is not valid: expected a whole number of bytes"#),
        "{said}"
    );
}
