//! Cold starts of function binaries under the Lambda emulator, side by side in one run: for each
//! round and each binary, the time from spawning the process to the answer of its first
//! invocation (init, Runtime API registration, the first event, the handler, the answer), and
//! the binary's size. Rounds interleave the binaries, so that a noisy moment costs each alike.
//!
//! ```text
//! cold-start [--rounds N] name=path/to/binary[@METHOD /path] …
//! ```
//!
//! Every binary gets an API Gateway HTTP API request (payload 2.0): `POST /bookings` with a new
//! `Idempotency-Key` and resource each round, unless `@METHOD /path` names another route (sent
//! without a body or key). The
//! request also carries `"name"`, so that a greeting handler takes it too. A moto server with the
//! booking functions' resources runs throughout and every binary gets their variables, so that
//! booking-api answers as it does in the local stack. `scripts/cold-start.sh` builds the release
//! binaries and runs this.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keel_tests::{Emulator, HarnessError, Moto};
use serde_json::json;

/// One binary to start: its name in the report, its path, and the route of its first request
/// (named in the report when given).
struct Subject {
    name: String,
    path: PathBuf,
    method: String,
    route: String,
    label: String,
}

/// The first event `subject` gets in round `round`.
fn event(subject: &Subject, round: usize) -> String {
    let day = keel_tests::future_date(5);
    let booking = json!({
        "customer_id": "cust-cold", "resource_id": format!("cold-{}-{round}", subject.name), "guests": 2,
        "start": format!("{day}T10:00:00Z"), "end": format!("{day}T11:00:00Z")
    });
    let post = subject.method == "POST";
    let mut headers = json!({"content-type": "application/json"});
    if post {
        headers["idempotency-key"] = json!(format!("cold-start-{}-{round}", subject.name));
    }
    let body = post.then(|| booking.to_string());
    json!({
        "name": "Ada",
        "version": "2.0",
        "routeKey": format!("{} {}", subject.method, subject.route),
        "rawPath": subject.route,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {"http": {"method": subject.method, "path": subject.route}, "requestId": format!("cold-{round}")},
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}

fn usage(reason: &str) -> HarnessError {
    HarnessError::Setup(format!(
        "{reason}\nusage: cold-start [--rounds N] name=path/to/binary[@METHOD /path] …"
    ))
}

fn main() -> Result<(), HarnessError> {
    let mut rounds = 10;
    let mut binaries: Vec<Subject> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--rounds" {
            rounds = args
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| usage("--rounds takes a whole number above 0"))?;
        } else {
            let (name, rest) = arg
                .split_once('=')
                .ok_or_else(|| usage(&format!("`{arg}` is not name=path")))?;
            let (path, request, label) = match rest.split_once('@') {
                Some((path, request)) => (path, request, format!("{name} {request}")),
                None => (rest, "POST /bookings", name.to_owned()),
            };
            let (method, route) = request
                .split_once(' ')
                .ok_or_else(|| usage(&format!("`{request}` is not `METHOD /path`")))?;
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(usage(&format!("{} is not a file", path.display())));
            }
            binaries.push(Subject {
                name: name.to_owned(),
                path,
                method: method.to_owned(),
                route: route.to_owned(),
                label,
            });
        }
    }
    if binaries.is_empty() {
        return Err(usage("no binary given"));
    }

    let moto = Moto::start()?;
    let runtime = keel_tests::runtime()?;
    let mut env = moto.env();
    env.extend(runtime.block_on(moto.booking_stack())?.env());
    let emulator = Emulator::start()?;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); binaries.len()];
    for round in 0..rounds {
        for (subject, times) in binaries.iter().zip(&mut times) {
            let event = event(subject, round);
            let spawned = Instant::now();
            let mut function = emulator.start_function(&subject.path, &env)?;
            let answer = emulator.invoke(&event)?;
            times.push(spawned.elapsed());
            function.stop();
            let status = answer.body["statusCode"].as_u64().unwrap_or(200);
            if answer.status != 200 || status >= 400 {
                return Err(HarnessError::Setup(format!(
                    "{} answered {} ({status}): {}\n{}",
                    subject.name,
                    answer.status,
                    answer.body,
                    function.output()
                )));
            }
        }
    }

    println!("binary, first request               size (bytes)   spawn → first answer, {rounds} cold starts: median (min–max)");
    for (subject, times) in binaries.iter().zip(&mut times) {
        times.sort();
        let name = &subject.label;
        let size = std::fs::metadata(&subject.path).map_or(0, |m| m.len());
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        // With an even count, the mean of the two middle times.
        let median = (ms(&times[(times.len() - 1) / 2]) + ms(&times[times.len() / 2])) / 2.0;
        println!(
            "{name:<35} {size:>12}   {median:.1} ms ({:.1}–{:.1})",
            ms(&times[0]),
            ms(&times[times.len() - 1]),
        );
    }
    Ok(())
}
