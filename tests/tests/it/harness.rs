//! The harness itself: moto and the emulator start on free loopback ports, serve the real SDK
//! clients, and are gone once their guards drop.

use std::time::Duration;

use keel_tests::{wait_until, Emulator, Moto};

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_serves_dynamodb_sns_and_sqs_and_stops_with_its_guard() {
    let moto = Moto::start().expect("moto starts");
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));

    let table = moto
        .create_table("keel-idempotency", Some("expiration"))
        .await
        .unwrap();
    let ttl = moto
        .dynamodb()
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description.unwrap();
    assert_eq!(ttl.attribute_name.as_deref(), Some("expiration"));

    let other = moto.create_table("keel-idempotency", None).await.unwrap();
    assert_ne!(table, other, "names are unique");

    let topic = moto.create_topic("keel-errors").await.unwrap();
    let queue = moto.create_queue("keel-errors-sub").await.unwrap();
    let queue_arn = moto
        .sqs()
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    moto.sns()
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    moto.sns()
        .publish()
        .topic_arn(&topic)
        .message("hello")
        .send()
        .await
        .unwrap();
    let received = moto
        .sqs()
        .receive_message()
        .queue_url(&queue)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let bodies: Vec<String> = received
        .messages()
        .iter()
        .filter_map(|m| m.body.clone())
        .collect();
    assert_eq!(bodies, vec!["hello".to_owned()]);

    moto.reset().unwrap();
    let tables = moto.dynamodb().list_tables().send().await.unwrap();
    assert!(tables.table_names().is_empty(), "reset clears state");

    let pid = moto.pid();
    drop(moto);
    assert!(
        wait_until(Duration::from_secs(60), || !process_exists(pid)),
        "moto {pid} still runs"
    );
}

#[test]
fn the_emulator_starts_and_stops_by_pid() {
    let emulator = Emulator::start().expect("emulator starts");
    assert!(emulator.runtime_api().starts_with("http://127.0.0.1:"));
    let pid = emulator.pid();
    drop(emulator);
    assert!(
        wait_until(Duration::from_secs(60), || !process_exists(pid)),
        "emulator {pid} still runs"
    );
}
