//! The canary replay over the generated canary alarms (`alarms/booking-api.json`) and over
//! alarms of its own: EMF documents as Keel and its extension write them, with timestamps
//! chosen, replayed to a decision.

use std::time::Duration;

use keel_infra::replay::canary::{replay, Decision, Input, Replay, ReplayError, Source};
use serde_json::{json, Value};

/// The start of a minute (CloudWatch aligns one-minute periods on minutes).
const T0: i64 = 1_795_000_020_000;
const MINUTE: i64 = 60_000;

fn generated_alarms() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../alarms/booking-api.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The extension's document of one batch: `durations` of `version`'s invocations, `failed` of
/// them with a status other than success.
fn extension_doc(at_ms: i64, version: &str, durations: &[f64], failed: u32) -> String {
    let mut metrics = vec![json!({"Name": "DurationMs", "Unit": "Milliseconds"})];
    let mut doc = json!({
        "service": "booking-api",
        "function_version": version,
        "DurationMs": durations,
    });
    if failed > 0 {
        metrics.push(json!({"Name": "InvocationError", "Unit": "Count"}));
        doc["InvocationError"] = json!(failed);
    }
    doc["_aws"] = json!({
        "Timestamp": at_ms,
        "CloudWatchMetrics": [{
            "Namespace": "Keel",
            "Dimensions": [["service"], ["service", "function_version"]],
            "Metrics": metrics,
        }],
    });
    doc.to_string()
}

/// booking-api's own document counting `count` of `metric` (a canary metric of Keel's).
fn function_doc(at_ms: i64, version: &str, metric: &str, count: u32) -> String {
    json!({
        "_aws": {"Timestamp": at_ms, "CloudWatchMetrics": [{
            "Namespace": "Keel",
            "Dimensions": [["service"], ["service", "function_version"]],
            "Metrics": [{"Name": metric, "Unit": "Count"}],
        }]},
        "service": "booking-api", "function_version": version, "function_request_id": "r-1",
        metric: count,
    })
    .to_string()
}

/// `minutes` of traffic of `version`: every 5 s a batch of `per_batch` invocations of
/// `duration` ms, `failing(minute, batch)` of them failed. Log lines in between, as in a
/// function's output.
fn traffic(
    version: &str,
    minutes: i64,
    per_batch: usize,
    duration: f64,
    failing: impl Fn(i64, i64) -> u32,
) -> String {
    traffic_from(T0, version, minutes, per_batch, duration, failing)
}

/// [`traffic`] from `start_ms`.
fn traffic_from(
    start_ms: i64,
    version: &str,
    minutes: i64,
    per_batch: usize,
    duration: f64,
    failing: impl Fn(i64, i64) -> u32,
) -> String {
    let mut lines = Vec::new();
    for minute in 0..minutes {
        for batch in 0..12 {
            let at = start_ms + minute * MINUTE + batch * 5_000 + 1_000;
            lines.push(r#"{"level":"INFO","message":"booking created"}"#.to_owned());
            lines.push(extension_doc(
                at,
                version,
                &vec![duration; per_batch],
                failing(minute, batch),
            ));
        }
    }
    lines.join("\n")
}

/// `text` as the one output replayed.
fn output(text: &str) -> Source<'_> {
    Source { name: "output", text }
}

/// Replays `emf` as `version` through `alarms`, in a five-minute window.
fn try_replay(alarms: &Value, emf: &str, version: &str) -> Result<Replay, ReplayError> {
    replay(&Input {
        alarms,
        emf: &[output(emf)],
        version,
        window: Duration::from_secs(300),
    })
}

fn run(alarms: &Value, emf: &str) -> Replay {
    try_replay(alarms, emf, "2").unwrap_or_else(|e| panic!("the replay runs: {e}"))
}

/// Why the replay of `emf` as `version` through `alarms` is refused.
fn refused(alarms: &Value, emf: &str, version: &str) -> String {
    try_replay(alarms, emf, version)
        .map(|replay| replay.text())
        .expect_err("the replay refuses")
        .to_string()
}

fn rollback(replay: &Replay) -> (i64, String) {
    match &replay.decision {
        Decision::Rollback { at_ms, alarm, .. } => (*at_ms, alarm.clone()),
        Decision::Promote => panic!("expected a rollback:\n{}", replay.text()),
    }
}

#[test]
fn a_healthy_version_promotes_and_says_what_it_derived() {
    let replay = run(&generated_alarms(), &traffic("2", 4, 5, 40.0, |_, _| 0));
    assert_eq!(replay.decision, Decision::Promote, "{}", replay.text());
    assert!(replay.verdict().starts_with("PROMOTE"), "{}", replay.verdict());
    assert!(
        replay
            .notes
            .iter()
            .any(|n| n.contains("derived") && n.contains("240 invocations")),
        "{:?}",
        replay.notes
    );
    // Every canary alarm was replayed, and ends OK; the operational ones are listed.
    assert_eq!(replay.alarms.len(), 6, "{}", replay.text());
    for alarm in &replay.alarms {
        let last = alarm.steps.last().unwrap();
        assert_eq!(last.state().as_str(), "OK", "{}: {}", alarm.id, replay.text());
    }
    assert!(replay.operational.contains(&"ErrorDeadLettersAlarm".to_owned()));
    let json = replay.json();
    assert_eq!(json["decision"], "PROMOTE");
    assert_eq!(json["alarms"].as_array().unwrap().len(), 6);
}

#[test]
fn failing_invocations_roll_back_at_the_second_breaching_minute() {
    // A tenth of the invocations fail from the second minute on.
    let emf = traffic("2", 4, 5, 40.0, |minute, batch| {
        u32::from(minute >= 1 && batch % 2 == 0)
    });
    let replay = run(&generated_alarms(), &emf);
    let (at_ms, alarm) = rollback(&replay);
    // Minutes 1 and 2 breach: the alarm fires when minute 2 is evaluated, at its end.
    assert_eq!(at_ms, T0 + 3 * MINUTE, "{}", replay.text());
    assert_eq!(alarm, "BookingApiCanaryErrorsAlarm", "{}", replay.text());
    assert!(
        replay.verdict().starts_with("ROLLBACK at "),
        "{}",
        replay.verdict()
    );
    assert!(at_ms <= replay.window_ms.1);
    let json = replay.json();
    assert_eq!(json["decision"], "ROLLBACK");
    assert_eq!(json["rollback"]["alarm"], "BookingApiCanaryErrorsAlarm");
}

#[test]
fn the_error_rate_alarm_fires_on_a_share_the_error_count_does_not_reach() {
    // One failure a minute out of 10 invocations: 10 % (> 5 %), 1 error (< 2).
    let emf = traffic("2", 4, 1, 40.0, |minute, batch| {
        u32::from(minute >= 1 && batch == 0)
    });
    let emf = emf
        .lines()
        .enumerate()
        .filter(|(i, _)| i % 24 < 20) // 10 batches a minute
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n");
    let replay = run(&generated_alarms(), &emf);
    let (_, alarm) = rollback(&replay);
    assert_eq!(alarm, "BookingApiCanaryErrorRateAlarm", "{}", replay.text());
    let rate = replay
        .alarms
        .iter()
        .find(|a| a.id == alarm)
        .unwrap()
        .series
        .points
        .iter()
        .flatten()
        .map(|p| p.value)
        .fold(0.0, f64::max);
    assert!((rate - 10.0).abs() < 1e-9, "error rate {rate}: {}", replay.text());
}

#[test]
fn a_slow_p99_rolls_back_on_the_duration_alarm() {
    // 100 invocations a minute; from the second minute, 2 of them take 3 s (p99 = 3000 > 2000).
    let mut lines = Vec::new();
    for minute in 0..4 {
        for batch in 0..10 {
            let mut durations = vec![50.0; 10];
            if minute >= 1 && batch < 2 {
                durations[0] = 3_000.0;
            }
            lines.push(extension_doc(
                T0 + minute * MINUTE + batch * 6_000,
                "2",
                &durations,
                0,
            ));
        }
    }
    let replay = run(&generated_alarms(), &lines.join("\n"));
    let (at_ms, alarm) = rollback(&replay);
    assert_eq!(alarm, "BookingApiCanaryDurationP99Alarm", "{}", replay.text());
    assert_eq!(at_ms, T0 + 3 * MINUTE, "{}", replay.text());
}

#[test]
fn keels_own_signals_roll_back_server_errors_and_timeouts() {
    let healthy = traffic("2", 4, 5, 40.0, |_, _| 0);
    // 5xx answers in two minutes (Lambda saw successes).
    let emf = format!(
        "{healthy}\n{}\n{}",
        function_doc(T0 + 10_000, "2", "HttpServerError", 1),
        function_doc(T0 + MINUTE + 10_000, "2", "HttpServerError", 3)
    );
    let (at_ms, alarm) = rollback(&run(&generated_alarms(), &emf));
    assert_eq!(
        (at_ms, alarm.as_str()),
        (T0 + 2 * MINUTE, "BookingApiCanaryServerErrorsAlarm")
    );
    // One timeout is enough (1 of 1).
    let emf = format!(
        "{healthy}\n{}",
        function_doc(T0 + 2 * MINUTE + 1, "2", "InvocationTimeout", 1)
    );
    let (at_ms, alarm) = rollback(&run(&generated_alarms(), &emf));
    assert_eq!(
        (at_ms, alarm.as_str()),
        (T0 + 3 * MINUTE, "BookingApiCanaryTimeoutsAlarm")
    );
}

#[test]
fn only_the_version_under_test_is_judged() {
    let failing_old_version = traffic("1", 4, 5, 40.0, |_, _| 5);
    let emf = format!("{failing_old_version}\n{}", traffic("2", 4, 5, 40.0, |_, _| 0));
    let replay = run(&generated_alarms(), &emf);
    assert_eq!(replay.decision, Decision::Promote, "{}", replay.text());
    assert!(
        replay
            .notes
            .iter()
            .any(|n| n.contains("240 invocations of version 2")),
        "only version 2's invocations are counted: {:?}",
        replay.notes
    );
}

#[test]
fn the_window_starts_when_the_version_under_test_is_first_seen() {
    // Version 1 serves alone for ten minutes; then version 2 arrives and fails from its second
    // minute: inside its own window, though ten minutes after the input's start.
    let old = traffic("1", 10, 5, 40.0, |_, _| 0);
    let new = traffic_from(T0 + 10 * MINUTE, "2", 4, 5, 40.0, |minute, batch| {
        u32::from(minute >= 1 && batch % 2 == 0)
    });
    let replay = run(&generated_alarms(), &format!("{old}\n{new}"));
    assert_eq!(replay.window_ms.0, T0 + 10 * MINUTE + 1_000, "{}", replay.text());
    let (at_ms, alarm) = rollback(&replay);
    assert_eq!(alarm, "BookingApiCanaryErrorsAlarm", "{}", replay.text());
    assert!(at_ms <= replay.window_ms.1, "{}", replay.text());
    assert!(
        replay
            .notes
            .iter()
            .any(|n| n.contains("before the canary window does")),
        "the input stops 4 minutes into a 5-minute window: {:?}",
        replay.notes
    );
}

#[test]
fn a_version_the_input_never_saw_is_an_error_not_a_promotion() {
    let error = try_replay(&generated_alarms(), &traffic("1", 4, 5, 40.0, |_, _| 0), "7").unwrap_err();
    assert_eq!(
        error.to_string(),
        "no metric of booking-api in the input carries version 7 (as `function_version` or `ExecutedVersion`); versions in it: 1"
    );
}

#[test]
fn another_services_version_is_not_the_version_under_test() {
    // booking-worker's version 2 and booking-api's version 1: booking-api has no version 2.
    let worker = traffic("2", 4, 5, 40.0, |_, _| 0).replace("booking-api", "booking-worker");
    let emf = format!("{worker}\n{}", traffic("1", 4, 5, 40.0, |_, _| 0));
    let error = refused(&generated_alarms(), &emf, "2");
    assert!(
        error.starts_with("no metric of booking-api in the input carries version 2"),
        "{error}"
    );
    assert!(error.ends_with("versions in it: 1"), "{error}");
}

#[test]
fn alarms_beyond_cloudwatchs_limits_or_too_long_to_replay_are_refused() {
    let emf = [
        checkout_doc(T0 + 1_000, 0, true),
        checkout_doc(T0 + 55_000, 1, true),
    ]
    .join("\n");
    let mut alarm = own_alarm(10);
    alarm["Alarms"][0]["PutMetricAlarm"]["EvaluationPeriods"] = json!(8641);
    alarm["Alarms"][0]["PutMetricAlarm"]["DatapointsToAlarm"] = json!(1);
    let error = refused(&alarm, &emf, "2");
    assert!(
        error.contains("EvaluationPeriods × Period is 86410 s: CloudWatch allows at most 86400 s"),
        "{error}"
    );
    // A legal alarm over 11 days of 10 s periods: 95,040 evaluations of 8,642 periods each.
    alarm["Alarms"][0]["PutMetricAlarm"]["EvaluationPeriods"] = json!(8640);
    let stray = checkout_doc(T0 + 11 * 86_400_000, 1, true);
    let error = refused(&alarm, &format!("{emf}\n{stray}"), "2");
    assert!(error.contains("replay a shorter input"), "{error}");
}

#[test]
fn stray_timestamps_are_skipped_or_refused_never_a_panic_or_all_the_memory() {
    let healthy = traffic("2", 4, 5, 40.0, |_, _| 0);
    // Year 10000: not a timestamp EMF can hold; skipped with the reason.
    let far = extension_doc(253_402_300_800_000, "2", &[40.0], 1);
    let replay = run(&generated_alarms(), &format!("{healthy}\n{far}"));
    assert_eq!(replay.decision, Decision::Promote, "{}", replay.text());
    assert!(
        replay
            .notes
            .iter()
            .any(|n| n.contains("skipped") && n.contains("not milliseconds since the epoch")),
        "{:?}",
        replay.notes
    );
    // Notes name the output and its line.
    assert!(
        replay
            .notes
            .iter()
            .any(|n| n.starts_with("output line 97: skipped")),
        "{:?}",
        replay.notes
    );
    // The year 9000: a timestamp, but a series to it would not fit in memory.
    let stray = extension_doc(221_845_392_000_000, "2", &[40.0], 1);
    let error = refused(&generated_alarms(), &format!("{healthy}\n{stray}"), "2");
    assert!(error.contains("is a timestamp far off?"), "{error}");
}

#[test]
fn a_failure_after_the_canary_window_does_not_roll_back() {
    // Minutes 5 and 6 fail: the window (5 minutes from the first datapoint) is over by then.
    let emf = traffic("2", 7, 5, 40.0, |minute, _| u32::from(minute >= 5));
    let replay = run(&generated_alarms(), &emf);
    assert_eq!(replay.decision, Decision::Promote, "{}", replay.text());
    let errors = replay
        .alarms
        .iter()
        .find(|a| a.id == "BookingApiCanaryErrorsAlarm")
        .unwrap();
    assert_eq!(
        errors.steps.last().unwrap().state().as_str(),
        "ALARM",
        "{}",
        replay.text()
    );
}

/// One canary alarm on a metric of `svc`'s, `period` seconds, 2 of 3, missing data `missing`.
fn own_alarm(period: u32) -> Value {
    json!({
        "Service": "svc",
        "Alarms": [{
            "LogicalId": "CheckoutFailures",
            "Role": "canary",
            "PutMetricAlarm": {
                "AlarmName": "${AWS::StackName}-checkout-failures",
                "Namespace": "Keel", "MetricName": "CheckoutFailed",
                "Dimensions": [{"Name": "service", "Value": "svc"}],
                "Statistic": "Sum", "Period": period,
                "EvaluationPeriods": 3, "DatapointsToAlarm": 2,
                "Threshold": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "TreatMissingData": "missing",
            },
        }],
    })
}

/// A `CheckoutFailed` document of `svc`, high resolution or not.
fn checkout_doc(at_ms: i64, failed: u32, high_resolution: bool) -> String {
    let mut metric = json!({"Name": "CheckoutFailed", "Unit": "Count"});
    if high_resolution {
        metric["StorageResolution"] = json!(1);
    }
    json!({
        "_aws": {"Timestamp": at_ms, "CloudWatchMetrics": [{
            "Namespace": "Keel", "Dimensions": [["service"]], "Metrics": [metric],
        }]},
        "service": "svc", "CheckoutFailed": failed,
    })
    .to_string()
}

#[test]
fn a_ten_second_high_resolution_alarm_fires_within_seconds() {
    // Quiet for 30 s, then a failure in each of two 10 s periods.
    let emf = [
        checkout_doc(T0 + 1_000, 0, true),
        checkout_doc(T0 + 31_000, 1, true),
        checkout_doc(T0 + 41_000, 1, true),
        checkout_doc(T0 + 55_000, 0, true),
    ]
    .join("\n");
    let replay = run(&own_alarm(10), &emf);
    let (at_ms, _) = rollback(&replay);
    assert_eq!(at_ms, T0 + 50_000, "{}", replay.text());
    assert_eq!(replay.alarms[0].series.period_s, 10);
    assert!(
        replay
            .notes
            .iter()
            .any(|n| n.contains("no metric of svc carries a version")),
        "{:?}",
        replay.notes
    );
    // The same counts at one-minute periods: one breaching minute is not 2 of 3.
    let replay = run(&own_alarm(60), &emf);
    assert_eq!(replay.decision, Decision::Promote, "{}", replay.text());
}

#[test]
fn a_standard_resolution_metric_lands_on_its_minute_in_ten_second_periods() {
    let emf = [
        checkout_doc(T0 + 31_000, 1, false),
        checkout_doc(T0 + 41_000, 1, false),
    ]
    .join("\n");
    let replay = run(&own_alarm(10), &emf);
    let points = &replay.alarms[0].series.points;
    let present: Vec<usize> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.map(|_| i))
        .collect();
    assert_eq!(present, [0], "{:?}", points);
    assert_eq!(points[0].unwrap().value, 2.0);
}

#[test]
fn charts_are_drawn_for_every_canary_alarm() {
    let emf = traffic("2", 4, 5, 40.0, |minute, _| u32::from(minute >= 1));
    let replay = run(&generated_alarms(), &emf);
    let charts = replay.charts();
    assert_eq!(charts.len(), 6);
    for (id, svg) in &charts {
        assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{id}");
        for token in xmlparser::Tokenizer::from(svg.as_str()) {
            token.unwrap_or_else(|e| panic!("{id}: {e}"));
        }
    }
    let (_, alarm) = rollback(&replay);
    let decided = &charts.iter().find(|(id, _)| *id == alarm).unwrap().1;
    assert!(
        decided.contains("ROLLBACK at"),
        "the decision is drawn on {alarm}'s chart"
    );
}

#[test]
fn input_without_metrics_or_with_a_broken_alarm_is_a_clear_error() {
    let error = try_replay(&generated_alarms(), "not EMF\n{\"level\":\"INFO\"}\n", "2").unwrap_err();
    assert_eq!(error.to_string(), "no EMF document in the input (2 lines read)");
    let mut broken = own_alarm(60);
    broken["Alarms"][0]["PutMetricAlarm"]["ComparisonOperator"] = json!("Sideways");
    let error = try_replay(&broken, &checkout_doc(T0, 1, false), "2").unwrap_err();
    assert!(
        error.to_string().starts_with("alarm CheckoutFailures: "),
        "{error}"
    );
}

/// `keel-infra canary-replay` on `emf`: its exit code, standard output and standard error.
fn cli(emf: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("canary-replay-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join(format!("{}.out", extra.join("_").replace(['/', '-'], "")));
    std::fs::write(&input, emf).unwrap();
    let alarms = concat!(env!("CARGO_MANIFEST_DIR"), "/../alarms/booking-api.json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel-infra"))
        .args(["canary-replay", "--alarms", alarms, "--version", "2"])
        .args(extra)
        .arg(&input)
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

#[test]
fn the_command_exits_0_to_promote_1_to_roll_back_2_when_it_cannot_run() {
    let (code, stdout, _) = cli(&traffic("2", 4, 5, 40.0, |_, _| 0), &[]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.lines().last().unwrap_or_default().starts_with("PROMOTE"),
        "{stdout}"
    );

    let failing = traffic("2", 4, 5, 40.0, |minute, batch| {
        u32::from(minute >= 1 && batch % 2 == 0)
    });
    let (code, stdout, stderr) = cli(&failing, &["--json", "-"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(json["decision"], "ROLLBACK");
    assert_eq!(json["rollback"]["alarm"], "BookingApiCanaryErrorsAlarm");
    assert!(
        stderr.contains("ROLLBACK at "),
        "the text goes to standard error: {stderr}"
    );

    let (code, _, stderr) = cli("no metrics here\n", &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no EMF document in the input"), "{stderr}");
    let (code, _, stderr) = cli("", &["--window-minutes", "0"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--window-minutes takes a number of minutes from 1 to 1440"),
        "{stderr}"
    );
}
