//! The Keel extension under the cargo-lambda emulator (Extensions API), beside booking-api: it
//! registers, receives INVOKE events, and publishes the errors the function relays to it.

use std::time::Duration;

use keel_tests::{build_binary, free_port, Emulator, Moto};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_relays_its_error_to_the_extension_which_publishes_it() {
    let moto = Moto::start().expect("moto starts");
    let topic = moto.create_topic("booking-errors").await.unwrap();
    let on_call = moto.create_queue("booking-on-call").await.unwrap();
    moto.subscribe_queue(&topic, &on_call).await.unwrap();
    let extension_binary = build_binary("keel-extension").expect("keel-extension builds");
    let function_binary = build_binary("booking-api").expect("booking-api builds");
    let emulator = Emulator::start().expect("emulator starts");

    let relay = format!("127.0.0.1:{}", free_port());
    let mut env = moto.env();
    env.push(("KEEL_EXTENSION_ADDR".into(), relay.clone()));
    let mut extension_env = env.clone();
    extension_env.push(("KEEL_ERROR_TOPIC_ARN".into(), topic.clone()));
    extension_env.push(("KEEL_TELEMETRY_ADDR".into(), format!("127.0.0.1:{}", free_port())));
    extension_env.push(("KEEL_LOG_LEVEL".into(), "DEBUG".into()));
    let extension = emulator
        .start_function(&extension_binary, &extension_env)
        .expect("extension starts");
    assert!(
        keel_tests::wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(&relay)
            .is_ok()),
        "the relay listens\n{}",
        extension.output()
    );
    // The function publishes nothing itself: it only knows the relay (its topic is unset).
    let function = emulator
        .start_function(&function_binary, &env)
        .expect("function starts");

    let failing = json!({"headers": {"idempotency-key": "order-9"}, "body": 5}).to_string();
    let answer = emulator
        .invoke(&failing)
        .unwrap_or_else(|e| panic!("{e}\n{}", function.output()));
    assert_eq!(answer.body["errorType"], "Keel.InvalidEvent");

    assert!(
        function.wait_for_line(Duration::from_secs(10), |l| l.contains("\"RoutedError\":1")
            && l.contains("\"sink\":\"relay\"")),
        "the function handed the envelope over\n{}",
        function.output()
    );
    let received = moto.drain_queue(&on_call, Duration::from_secs(20)).await.unwrap();
    let received = if received.is_empty() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        moto.drain_queue(&on_call, Duration::from_secs(20)).await.unwrap()
    } else {
        received
    };
    assert_eq!(
        received.len(),
        1,
        "the extension published it\n{}",
        extension.output()
    );
    let envelope: keel_runtime::routing::Envelope =
        serde_json::from_str(received[0].body().unwrap()).unwrap();
    assert_eq!(envelope.error_type, "Keel.InvalidEvent");
    assert_eq!(envelope.source, keel_runtime::routing::Source::Runtime);
    assert!(
        extension.wait_for_line(Duration::from_secs(5), |l| l.contains("invoke event")
            && l.contains(&envelope.request_id)),
        "the extension saw the INVOKE event\n{}",
        extension.output()
    );
}
