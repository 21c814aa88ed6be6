//! When the Keel extension lets Lambda freeze the environment after an invocation, under the
//! cargo-lambda emulator with the Telemetry API stood in for ([`TelemetryStandIn`]): by default
//! as soon as the function's notice says the invocation is over (and what it relayed is
//! published), before telemetry's `platform.runtimeDone`; with `KEEL_EXTENSION_FLUSH=runtime-done`
//! only after it.

use std::time::Duration;

use keel_tests::telemetry_stand_in::{Delivery, Seen};
use keel_tests::{build_binary, build_example, free_port, Emulator, FunctionProcess, Moto, TelemetryStandIn};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// The emulator, the stand-in between it and the processes, the extension (in `flush` mode,
/// publishing to `topic`) and the `hello` example as a Keel function relaying to it.
struct Environment {
    stand_in: TelemetryStandIn,
    extension: FunctionProcess,
    function: FunctionProcess,
    emulator: Emulator,
}

fn environment(moto: &Moto, topic: &str, flush: &str, delivery: Delivery) -> Environment {
    let extension_binary = build_binary("keel-extension").expect("keel-extension builds");
    let function_binary = build_example("hello").expect("the hello example builds");
    let emulator = Emulator::start().expect("emulator starts");
    let stand_in = TelemetryStandIn::start(&emulator.runtime_api(), delivery).expect("the stand-in starts");
    let relay = format!("127.0.0.1:{}", free_port());
    let api = ("AWS_LAMBDA_RUNTIME_API".to_owned(), stand_in.runtime_api());
    let mut env = moto.env();
    env.push(api.clone());
    env.push(("KEEL_EXTENSION_ADDR".into(), relay.clone()));
    let mut extension_env = env.clone();
    extension_env.push(("KEEL_ERROR_TOPIC_ARN".into(), topic.to_owned()));
    extension_env.push(("KEEL_TELEMETRY_ADDR".into(), format!("127.0.0.1:{}", free_port())));
    extension_env.push(("KEEL_EXTENSION_FLUSH".into(), flush.to_owned()));
    extension_env.push(("KEEL_LOG_LEVEL".into(), "DEBUG".into()));
    let extension = emulator
        .start_function(&extension_binary, &extension_env)
        .expect("extension starts");
    // Subscribed, then waiting for its first event: ready to wait for invocations' ends.
    assert!(
        stand_in.wait_for(WAIT, |records| {
            let subscribed = records
                .iter()
                .position(|r| matches!(r.seen, Seen::Subscribed { .. }));
            subscribed.is_some_and(|at| records[at..].iter().any(|r| r.seen == Seen::ExtensionNext))
        }),
        "the extension subscribed and asked for its first event: {:?}\n{}",
        stand_in.records(),
        extension.output()
    );
    let function = emulator
        .start_function(&function_binary, &env)
        .expect("function starts");
    Environment {
        stand_in,
        extension,
        function,
        emulator,
    }
}

impl Environment {
    /// Invokes the function with `payload`; returns the request id the runtime posted for, and
    /// the answer.
    fn invoke(&self, payload: &str) -> (String, keel_tests::Invocation) {
        let before = self.stand_in.last_response();
        let answer = self
            .emulator
            .invoke(payload)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.function.output()));
        assert!(
            self.stand_in
                .wait_for(WAIT, |_| self.stand_in.last_response() != before),
            "the runtime posted its answer: {:?}",
            self.stand_in.records()
        );
        (self.stand_in.last_response().unwrap_or_default(), answer)
    }

    /// Waits until the extension asks for its next event after `request_id`'s response.
    fn wait_for_next(&self, request_id: &str) -> keel_tests::telemetry_stand_in::Times {
        assert!(
            self.stand_in.wait_for(WAIT, |records| {
                keel_tests::telemetry_stand_in::times(records, request_id).is_some_and(|t| t.next.is_some())
            }),
            "the extension asked for its next event after {request_id}: {:?}\n{}",
            self.stand_in.records(),
            self.extension.output()
        );
        self.stand_in.times(request_id).unwrap()
    }

    /// The extension's log line `message` about `request_id`, and its place among the lines.
    fn line(&self, message: &str, request_id: &str) -> (usize, serde_json::Value) {
        let found = self
            .extension
            .wait_for_line(WAIT, |l| l.contains(message) && l.contains(request_id));
        assert!(found, "{message} for {request_id}\n{}", self.extension.output());
        self.extension
            .stdout_lines()
            .iter()
            .enumerate()
            .find(|(_, l)| l.contains(message) && l.contains(request_id))
            .map(|(at, l)| (at, serde_json::from_str(l).unwrap()))
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_environment_may_freeze_once_the_function_says_the_invocation_is_over() {
    let moto = Moto::start().expect("moto starts");
    let (topic, on_call) = moto.subscribed_topic("hello-errors").await.unwrap();
    // runtimeDone is never delivered unless released: only the notice can end a wait.
    let env = environment(&moto, &topic, "end", Delivery::Held);

    // A successful invocation: nothing relayed.
    let (ok, answer) = env.invoke(r#"{"name": "Ada"}"#);
    assert_eq!(answer.body, "hello, Ada", "{answer:?}");
    let times = env.wait_for_next(&ok);
    assert!(
        times.runtime_done.is_none(),
        "the extension asked for its next event before any runtimeDone: {times:?}"
    );
    let (_, over) = env.line("invocation over", &ok);
    assert_eq!(
        (over["notice"].as_bool(), over["runtime_done"].as_bool()),
        (Some(true), Some(false)),
        "{over}"
    );

    // A failed invocation (the event has no name): its envelope is relayed.
    let (failed, answer) = env.invoke("{}");
    assert_eq!(answer.body["errorType"], "Keel.InvalidEvent", "{answer:?}");
    let times = env.wait_for_next(&failed);
    assert!(times.runtime_done.is_none(), "{times:?}");
    let (published_at, published) = env.line("a relayed envelope is out of the queue", &failed);
    assert_eq!(published["published"], true, "{published}");
    let (over_at, over) = env.line("invocation over", &failed);
    assert!(
        published_at < over_at,
        "the envelope was published (line {published_at}) before the wait ended (line {over_at})\n{}",
        env.extension.output()
    );
    assert_eq!(
        (over["notice"].as_bool(), over["settled"].as_bool()),
        (Some(true), Some(true)),
        "{over}"
    );
    let received = moto
        .wait_for_messages(&on_call, 1, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", env.extension.output()));
    let envelope: keel_runtime::routing::Envelope =
        serde_json::from_str(received[0].body().unwrap()).unwrap();
    assert_eq!(envelope.request_id, failed);
    assert_eq!(envelope.error_type, "Keel.InvalidEvent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_runtime_done_mode_the_environment_may_freeze_only_after_runtime_done() {
    let moto = Moto::start().expect("moto starts");
    let (topic, _on_call) = moto.subscribed_topic("hello-errors").await.unwrap();
    let env = environment(&moto, &topic, "runtime-done", Delivery::Held);

    let (ok, _) = env.invoke(&json!({"name": "Ada"}).to_string());
    // The notice came (the runtime sends it), and is ignored: the wait goes on until the
    // stand-in delivers runtimeDone.
    assert!(
        env.stand_in.wait_for(WAIT, |_| {
            env.stand_in.last_invoke().as_deref() == Some(ok.as_str())
                && env.stand_in.times(&ok).is_some_and(|t| t.answered.is_some())
        }),
        "the extension got the INVOKE event, and the response was answered: {:?}",
        env.stand_in.records()
    );
    env.stand_in.release();
    let times = env.wait_for_next(&ok);
    let runtime_done = times
        .runtime_done
        .unwrap_or_else(|| panic!("runtimeDone delivered before the next event: {times:?}"));
    assert!(
        times.next.is_some_and(|next| next > runtime_done),
        "the extension asked for its next event only after runtimeDone: {times:?}"
    );
    let (_, over) = env.line("invocation over", &ok);
    assert_eq!(
        (over["notice"].as_bool(), over["runtime_done"].as_bool()),
        (Some(false), Some(true)),
        "{over}"
    );
}
