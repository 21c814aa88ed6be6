//! The harness itself: moto and the emulator start on free loopback ports, serve the real SDK
//! clients (CloudWatch's included), and are gone once their guards drop.

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

/// aws-sdk-cloudwatch speaks RPC v2 CBOR, which `tests/moto_server.py` translates for moto:
/// requests and answers (timestamps both ways) and modeled errors come through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_serves_cloudwatch_to_the_sdk() {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, MetricDatum, StandardUnit, Statistic};

    let moto = Moto::start().expect("moto starts");
    let cloudwatch = moto.cloudwatch();
    let dimension = Dimension::builder().name("service").value("booking-api").build();
    cloudwatch
        .put_metric_alarm()
        .alarm_name("keel-harness-errors")
        .namespace("Keel")
        .metric_name("Errors")
        .dimensions(dimension.clone())
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(3)
        .datapoints_to_alarm(2)
        .threshold(2.5)
        .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
        .treat_missing_data("notBreaching")
        .send()
        .await
        .unwrap();
    let described = cloudwatch
        .describe_alarms()
        .alarm_names("keel-harness-errors")
        .send()
        .await
        .unwrap();
    let [alarm] = described.metric_alarms() else {
        panic!("one alarm expected: {described:?}");
    };
    assert_eq!(alarm.namespace(), Some("Keel"));
    assert_eq!(alarm.dimensions(), std::slice::from_ref(&dimension));
    assert_eq!(alarm.statistic(), Some(&Statistic::Sum));
    assert_eq!(
        (alarm.evaluation_periods(), alarm.datapoints_to_alarm()),
        (Some(3), Some(2))
    );
    assert_eq!(alarm.threshold(), Some(2.5));
    assert_eq!(alarm.treat_missing_data(), Some("notBreaching"));
    assert!(alarm.state_updated_timestamp().is_some(), "{alarm:?}");

    // Timestamps in a request and in an answer.
    let now = DateTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    );
    cloudwatch
        .put_metric_data()
        .namespace("Keel")
        .metric_data(
            MetricDatum::builder()
                .metric_name("Errors")
                .dimensions(dimension.clone())
                .timestamp(now)
                .value(4.0)
                .unit(StandardUnit::Count)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let statistics = cloudwatch
        .get_metric_statistics()
        .namespace("Keel")
        .metric_name("Errors")
        .dimensions(dimension)
        .start_time(DateTime::from_secs(now.secs() - 600))
        .end_time(DateTime::from_secs(now.secs() + 600))
        .period(60)
        .statistics(Statistic::Sum)
        .send()
        .await
        .unwrap();
    let sums: Vec<Option<f64>> = statistics.datapoints().iter().map(|d| d.sum()).collect();
    assert_eq!(sums, [Some(4.0)], "{statistics:?}");
    assert!(statistics.datapoints()[0].timestamp().is_some(), "{statistics:?}");

    cloudwatch
        .put_dashboard()
        .dashboard_name("keel-harness")
        .dashboard_body(r#"{"widgets":[]}"#)
        .send()
        .await
        .unwrap();
    let dashboard = cloudwatch
        .get_dashboard()
        .dashboard_name("keel-harness")
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.dashboard_body(), Some(r#"{"widgets":[]}"#));
    let missing = cloudwatch
        .get_dashboard()
        .dashboard_name("keel-harness-missing")
        .send()
        .await
        .unwrap_err();
    assert!(
        missing
            .as_service_error()
            .is_some_and(|e| e.is_dashboard_not_found_error()),
        "{missing:?}"
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
