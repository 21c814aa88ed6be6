//! Configuration from `KEEL_*` variables: defaults, overrides, and clear errors for bad values.
//! The variables are set in a process of their own (this test binary, run again for this one
//! test), so that no other test of the binary reads the environment while it changes.

use keel_runtime::{ConfigError, Keel};

const VARIABLES: [&str; 13] = [
    "KEEL_SERVICE",
    "KEEL_NAMESPACE",
    "KEEL_LOG_LEVEL",
    "AWS_LAMBDA_LOG_LEVEL",
    "KEEL_LOG_SAMPLE_RATE",
    "KEEL_LOG_BUFFER_SIZE",
    "AWS_LAMBDA_LOG_FORMAT",
    "KEEL_LOG_WRITE",
    "KEEL_LOG_EVENT",
    "KEEL_FAULT_ERROR_RATE",
    "KEEL_FAULT_LATENCY_MS",
    "KEEL_FAULT_LATENCY_RATE",
    "KEEL_FAULT_VERSION",
];

fn from_env() -> Result<Keel, ConfigError> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(Keel::from_env("booking-api"))
}

fn invalid_variable(result: Result<Keel, ConfigError>) -> &'static str {
    match result {
        Err(ConfigError::InvalidVariable { variable, .. }) => variable,
        other => panic!("expected an invalid variable, got {other:?}"),
    }
}

/// Set in the process that runs [`variables_are_read_and_bad_values_named`] alone.
const ALONE: &str = "KEEL_CONFIG_TEST_ALONE";

#[test]
fn variables_are_read_and_bad_values_named() {
    if std::env::var_os(ALONE).is_none() {
        let exe = std::env::current_exe().expect("the test binary");
        let output = std::process::Command::new(exe)
            .args([
                "--exact",
                "config::variables_are_read_and_bad_values_named",
                "--nocapture",
            ])
            .env(ALONE, "1")
            .output()
            .expect("the test binary runs");
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && printed.contains("1 passed"),
            "the configuration test failed in its own process:\n{printed}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    for name in VARIABLES {
        std::env::remove_var(name);
    }
    assert!(from_env().is_ok(), "defaults need no variable");

    std::env::set_var("KEEL_SERVICE", "bookings");
    std::env::set_var("KEEL_LOG_LEVEL", "debug");
    std::env::set_var("KEEL_LOG_SAMPLE_RATE", "0.25");
    std::env::set_var("AWS_LAMBDA_LOG_FORMAT", "Text");
    std::env::set_var("KEEL_NAMESPACE", "Keel/Bookings");
    std::env::set_var("KEEL_FAULT_ERROR_RATE", "0.1");
    std::env::set_var("KEEL_FAULT_LATENCY_MS", "250");
    std::env::set_var("KEEL_FAULT_LATENCY_RATE", "0.5");
    std::env::set_var("KEEL_FAULT_VERSION", "7");
    let keel = from_env().expect("valid values");
    let debug = format!("{keel:?}");
    for expected in [
        "service: \"bookings\"",
        "level: Level(Debug)",
        "sample_rate: 0.25",
        "format: Text",
        "error_rate: 0.1",
        "latency: 250ms",
        "latency_rate: 0.5",
        "version: Some(\"7\")",
    ] {
        assert!(debug.contains(expected), "{expected} not in {debug}");
    }

    let bad = [
        ("KEEL_LOG_LEVEL", "LOUD"),
        ("KEEL_LOG_SAMPLE_RATE", "1.5"),
        ("KEEL_LOG_SAMPLE_RATE", "often"),
        ("KEEL_LOG_BUFFER_SIZE", "-1"),
        ("AWS_LAMBDA_LOG_FORMAT", "xml"),
        ("KEEL_LOG_WRITE", "batch"),
        ("KEEL_NAMESPACE", "AWS/Lambda"),
        ("KEEL_LOG_EVENT", "yes please"),
        ("KEEL_FAULT_ERROR_RATE", "1.5"),
        ("KEEL_FAULT_LATENCY_MS", "-200"),
        ("KEEL_FAULT_LATENCY_RATE", "2"),
        ("KEEL_FAULT_VERSION", "live"),
    ];
    for (name, value) in bad {
        let previous = std::env::var(name).ok();
        std::env::set_var(name, value);
        assert_eq!(invalid_variable(from_env()), name, "{name}={value}");
        let message = from_env().unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{name}=\"{value}\" is not valid: expected")),
            "{message}"
        );
        match previous {
            Some(previous) => std::env::set_var(name, previous),
            None => std::env::remove_var(name),
        }
    }

    // A replay time so long that `now + ttl` would overflow is refused, as is zero.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for ttl in ["18446744073709551615", "315360001", "0"] {
        std::env::set_var("KEEL_IDEMPOTENCY_TTL_SECONDS", ttl);
        let refused = runtime.block_on(keel_runtime::idempotency::Idempotency::from_env());
        match refused {
            Err(ConfigError::InvalidVariable { variable, .. }) => {
                assert_eq!(variable, "KEEL_IDEMPOTENCY_TTL_SECONDS", "{ttl}")
            }
            other => panic!("KEEL_IDEMPOTENCY_TTL_SECONDS={ttl}: {other:?}"),
        }
    }
    std::env::set_var("KEEL_IDEMPOTENCY_TTL_SECONDS", "315360000");
    assert!(runtime
        .block_on(keel_runtime::idempotency::Idempotency::from_env())
        .is_ok());
    std::env::remove_var("KEEL_IDEMPOTENCY_TTL_SECONDS");

    std::env::remove_var("KEEL_LOG_LEVEL");
    std::env::set_var("AWS_LAMBDA_LOG_LEVEL", "FATAL");
    assert!(format!("{:?}", from_env().unwrap()).contains("level: Level(Error)"));
}
