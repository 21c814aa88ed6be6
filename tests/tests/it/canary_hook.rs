//! End to end: the canary-hook binary, wrapped by Keel, served by the Lambda emulator. It
//! checks a target served by a second emulator — booking-api itself, with its resources in moto,
//! or the `canary-target` example, which answers the checks as the booking API's contract says,
//! fails them, errors or hangs — and reports to a CodeDeploy stand-in: moto does not implement
//! `PutLifecycleEventHookExecutionStatus`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keel_tests::{build_binary, build_example, emf_spec, wait_until, Emulator, FunctionProcess, Invocation};
use serde_json::{json, Value};

const REPORT_TARGET: &str = "CodeDeploy_20141006.PutLifecycleEventHookExecutionStatus";

/// One request the stand-in received.
#[derive(Clone, Debug)]
struct Recorded {
    /// `X-Amz-Target`.
    target: String,
    /// `Content-Type`.
    content_type: String,
    /// The JSON body.
    body: Value,
}

/// A CodeDeploy stand-in on 127.0.0.1 (AWS JSON 1.1): records each request and answers
/// `{"lifecycleEventHookExecutionId": "<the request's>"}`. Stops when dropped.
struct CodeDeployStandIn {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
}

impl CodeDeployStandIn {
    fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("a free loopback port");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (recorded, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let recorded = recorded.clone();
                std::thread::spawn(move || serve(stream, &recorded));
            }
        });
        Self { addr, requests, stop }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for CodeDeployStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Serves the requests of one connection (the SDK keeps connections open), for at most 10 s
/// of silence.
fn serve(stream: TcpStream, recorded: &Mutex<Vec<Recorded>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            headers.push(line);
        }
        let header = |name: &str| {
            headers.iter().skip(1).find_map(|h| {
                let (key, value) = h.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let length: usize = header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let answer =
            json!({"lifecycleEventHookExecutionId": body["lifecycleEventHookExecutionId"]}).to_string();
        recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Recorded {
                target: header("x-amz-target").unwrap_or_default(),
                content_type: header("content-type").unwrap_or_default(),
                body,
            });
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\nx-amzn-requestid: stand-in\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A hook run: the target (its emulator and process), the hook, the stand-in, the answer.
struct Run {
    _target_emulator: Emulator,
    target: FunctionProcess,
    _hook_emulator: Emulator,
    hook: FunctionProcess,
    codedeploy: CodeDeployStandIn,
    answer: Invocation,
}

/// Runs the hook once for deployment `deployment_id` against a `canary-target` in `mode`.
fn run_hook(mode: &str, deployment_id: &str, hook_env: &[(&str, &str)]) -> Run {
    let target_binary = build_example("canary-target").expect("the canary-target example builds");
    let target_env = [("CANARY_TARGET_MODE".to_owned(), mode.to_owned())];
    run_hook_against(&target_binary, &target_env, deployment_id, hook_env)
}

/// Runs the hook once for deployment `deployment_id` against `target_binary` run with
/// `target_env`.
fn run_hook_against(
    target_binary: &std::path::Path,
    target_env: &[(String, String)],
    deployment_id: &str,
    hook_env: &[(&str, &str)],
) -> Run {
    let hook_binary = build_binary("canary-hook").expect("canary-hook builds");
    let target_emulator = Emulator::start().expect("emulator starts");
    let target = target_emulator
        .start_function(target_binary, target_env)
        .expect("the target starts");
    let codedeploy = CodeDeployStandIn::start();
    let hook_emulator = Emulator::start().expect("emulator starts");
    let mut env: Vec<(String, String)> = [
        ("TARGET_FUNCTION", "_".to_owned()),
        ("AWS_ENDPOINT_URL_LAMBDA", target_emulator.endpoint()),
        ("AWS_ENDPOINT_URL_CODEDEPLOY", codedeploy.endpoint()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(hook_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let hook = hook_emulator
        .start_function(&hook_binary, &env)
        .expect("the hook starts");
    let event = json!({"DeploymentId": deployment_id, "LifecycleEventHookExecutionId": format!("exec-{deployment_id}")});
    let answer = hook_emulator
        .invoke(&event.to_string())
        .unwrap_or_else(|e| panic!("{e}\n{}", hook.output()));
    Run {
        _target_emulator: target_emulator,
        target,
        _hook_emulator: hook_emulator,
        hook,
        codedeploy,
        answer,
    }
}

impl Run {
    /// Checks the one report the stand-in received.
    fn assert_reported_once(&self, deployment_id: &str, status: &str) {
        let requests = self.codedeploy.requests();
        assert_eq!(requests.len(), 1, "{requests:?}\n{}", self.hook.output());
        assert_eq!(requests[0].target, REPORT_TARGET);
        assert_eq!(requests[0].content_type, "application/x-amz-json-1.1");
        assert_eq!(
            requests[0].body,
            json!({
                "deploymentId": deployment_id,
                "lifecycleEventHookExecutionId": format!("exec-{deployment_id}"),
                "status": status
            })
        );
        assert_eq!(
            self.answer.status,
            200,
            "{:?}\n{}",
            self.answer,
            self.hook.output()
        );
        assert_eq!(self.answer.body["status"], status, "{:?}", self.answer);
    }

    /// The hook's log lines about each check, once both are written.
    fn check_lines(&self) -> Vec<Value> {
        let both = wait_until(Duration::from_secs(30), || {
            self.hook
                .stdout_lines()
                .iter()
                .filter(|l| l.contains("\"canary check "))
                .count()
                >= 2
        });
        assert!(both, "{}", self.hook.output());
        self.hook
            .stdout_lines()
            .iter()
            .filter(|l| l.contains("\"canary check "))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The values of `CanaryCheckFailed`'s `check` dimension, sorted: read once the run's
    /// documents are written (its `ColdStart` document is among them).
    fn failed_checks(&self) -> Vec<String> {
        let documents = || -> Vec<Value> {
            self.hook
                .stdout_lines()
                .iter()
                .filter(|l| emf_spec::is_emf(l))
                .map(|l| {
                    emf_spec::validate_line(l).unwrap_or_else(|e| panic!("invalid EMF {l}: {e:?}"));
                    serde_json::from_str(l).unwrap()
                })
                .collect()
        };
        let written = wait_until(Duration::from_secs(30), || {
            documents().iter().any(|d| d.get("ColdStart").is_some())
        });
        assert!(written, "no EMF documents in 30 s:\n{}", self.hook.output());
        let mut checks: Vec<String> = documents()
            .iter()
            .filter(|d| d.get("CanaryCheckFailed").is_some())
            .map(|d| d["check"].as_str().unwrap_or_default().to_owned())
            .collect();
        checks.sort();
        checks
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_hook_passes_booking_api_whose_dry_run_writes_nothing_and_fails_a_broken_one() {
    let moto = keel_tests::Moto::start().expect("moto starts");
    let stack = moto.booking_stack().await.expect("the bookings stack is created");
    let mut env = moto.env();
    env.extend(stack.env());
    let booking_api = build_binary("booking-api").expect("booking-api builds");

    let run = run_hook_against(&booking_api, &env, "d-REAL1", &[]);
    run.assert_reported_once("d-REAL1", "Succeeded");
    assert!(
        run.answer.body["checks"]
            .as_array()
            .is_some_and(|checks| checks.iter().all(|c| c["passed"] == true)),
        "{:?}\n{}",
        run.answer,
        run.target.output()
    );
    // The dry run wrote no booking and published no event.
    let items = moto
        .dynamodb()
        .scan()
        .table_name(&stack.table)
        .send()
        .await
        .expect("the table scans")
        .count;
    assert_eq!(items, 0, "{}", run.target.output());
    let published = moto.receive_available(&stack.events_queue).await.unwrap();
    assert!(published.is_empty(), "{published:?}\n{}", run.target.output());

    // A version whose table is gone (a wrong BOOKINGS_TABLE, say) fails the deployment.
    let broken: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| match k.as_str() {
            "BOOKINGS_TABLE" => (k.clone(), "no-such-table".to_owned()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let run = run_hook_against(&booking_api, &broken, "d-BROKEN1", &[]);
    run.assert_reported_once("d-BROKEN1", "Failed");
    assert_eq!(run.answer.body["checks"][0]["check"], "health");
    assert_eq!(run.answer.body["checks"][0]["passed"], false, "{:?}", run.answer);
}

#[test]
fn canary_hook_reports_succeeded_once_when_the_target_passes_both_checks() {
    let run = run_hook("pass", "d-PASS1", &[]);
    run.assert_reported_once("d-PASS1", "Succeeded");
    let checks = run.answer.body["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["check"].as_str().unwrap()).collect();
    assert_eq!(names, ["health", "dry_run_booking"]);
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");

    let lines = run.check_lines();
    for line in &lines {
        assert_eq!(line["message"], "canary check passed");
        assert_eq!(line["level"], "INFO");
        assert!(line["latency_ms"].is_u64(), "{line}");
        assert_eq!(line["correlation_id"], "d-PASS1", "{line}");
    }
    assert!(run.failed_checks().is_empty());
    // The target saw the dry run asked for.
    assert!(
        run.target.wait_for_line(Duration::from_secs(30), |l| l
            .contains(r#""x-keel-dry-run":"true""#)),
        "{}",
        run.target.output()
    );
}

#[test]
fn canary_hook_reports_failed_once_when_the_target_fails_both_checks() {
    let run = run_hook("fail", "d-FAIL1", &[]);
    run.assert_reported_once("d-FAIL1", "Failed");
    let reasons: Vec<&str> = run.answer.body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"].as_str().unwrap_or_default())
        .collect();
    assert!(reasons[0].contains("expected status 200, got 503"), "{reasons:?}");
    assert!(reasons[1].contains("expected status 200, got 201"), "{reasons:?}");
    let lines = run.check_lines();
    assert!(
        lines
            .iter()
            .all(|l| l["level"] == "WARN" && l["latency_ms"].is_u64()),
        "{lines:?}"
    );
    assert_eq!(run.failed_checks(), ["dry_run_booking", "health"]);
}

#[test]
fn canary_hook_reports_failed_once_when_the_target_errors() {
    let run = run_hook("error", "d-ERR1", &[]);
    run.assert_reported_once("d-ERR1", "Failed");
    let reason = run.answer.body["checks"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("the canary target fails on purpose"), "{reason}");
    assert_eq!(run.failed_checks(), ["dry_run_booking", "health"]);
}

#[test]
fn canary_hook_reports_failed_once_when_the_target_does_not_answer_in_time() {
    let started = std::time::Instant::now();
    let run = run_hook("hang", "d-HANG1", &[("CANARY_CHECK_TIMEOUT_MS", "1000")]);
    run.assert_reported_once("d-HANG1", "Failed");
    let reasons: Vec<&str> = run.answer.body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(reasons, ["no answer within 1s", "no answer within 1s"]);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn canary_hook_names_target_function_when_it_is_not_set() {
    let binary = build_binary("canary-hook").expect("canary-hook builds");
    let mut command = std::process::Command::new(binary);
    command
        .env_remove("TARGET_FUNCTION")
        .env("AWS_REGION", "us-east-1");
    let mut process = keel_tests::Process::spawn("canary-hook", command).expect("starts");
    assert!(
        wait_until(Duration::from_secs(30), || !process.is_running()),
        "still running: {}",
        process.output()
    );
    assert!(
        process.output().contains("TARGET_FUNCTION is not set"),
        "{}",
        process.output()
    );
}
