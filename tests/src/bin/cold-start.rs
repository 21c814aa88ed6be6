//! Cold starts of function binaries under the Lambda emulator, side by side in one run: for each
//! round and each binary, the time from spawning the process to the answer of its first
//! invocation (init, Runtime API registration, the first event, the handler, the answer), and
//! the binary's size. Rounds interleave the binaries, so that a noisy moment costs each alike.
//!
//! ```text
//! cold-start [--rounds N] name=path/to/binary …
//! ```
//!
//! Every binary gets the same event: an API Gateway HTTP API request (`POST /bookings` with an
//! `Idempotency-Key`) that also carries `"name"`, so that a greeting handler takes it too.
//! `scripts/cold-start.sh` builds the release binaries and runs this.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keel_tests::{Emulator, HarnessError};
use serde_json::json;

fn event() -> String {
    let booking = json!({
        "customer_id": "cust-7", "resource_id": "room-1", "guests": 2, "seats": 2,
        "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T11:00:00Z"
    });
    json!({
        "name": "Ada",
        "version": "2.0",
        "routeKey": "POST /bookings",
        "rawPath": "/bookings",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "idempotency-key": "cold-start-1"},
        "requestContext": {"http": {"method": "POST", "path": "/bookings"}},
        "body": booking.to_string(),
        "isBase64Encoded": false
    })
    .to_string()
}

fn usage(reason: &str) -> HarnessError {
    HarnessError::Setup(format!(
        "{reason}\nusage: cold-start [--rounds N] name=path/to/binary …"
    ))
}

fn main() -> Result<(), HarnessError> {
    let mut rounds = 10;
    let mut binaries: Vec<(String, PathBuf)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--rounds" {
            rounds = args
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| usage("--rounds takes a whole number above 0"))?;
        } else {
            let (name, path) = arg
                .split_once('=')
                .ok_or_else(|| usage(&format!("`{arg}` is not name=path")))?;
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(usage(&format!("{} is not a file", path.display())));
            }
            binaries.push((name.to_owned(), path));
        }
    }
    if binaries.is_empty() {
        return Err(usage("no binary given"));
    }

    let emulator = Emulator::start()?;
    let event = event();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); binaries.len()];
    for _ in 0..rounds {
        for ((name, path), times) in binaries.iter().zip(&mut times) {
            let spawned = Instant::now();
            let mut function = emulator.start_function(path, &[])?;
            let answer = emulator.invoke(&event)?;
            times.push(spawned.elapsed());
            function.stop();
            if answer.status != 200 {
                return Err(HarnessError::Setup(format!(
                    "{name} answered {}: {}\n{}",
                    answer.status,
                    answer.body,
                    function.output()
                )));
            }
        }
    }

    println!("binary            size (bytes)   spawn → first answer, {rounds} cold starts: median (min–max)");
    for ((name, path), times) in binaries.iter().zip(&mut times) {
        times.sort();
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{name:<17} {size:>12}   {:.1} ms ({:.1}–{:.1})",
            ms(&times[times.len() / 2]),
            ms(&times[0]),
            ms(&times[times.len() - 1]),
        );
    }
    Ok(())
}
