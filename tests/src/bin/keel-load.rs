//! Load on the local booking API from a second process: throughput and latency of
//! `POST /bookings` and `GET /bookings/{id}`, each for a bounded time, through the API Gateway
//! stand-in of `keel-local --serve` (`scripts/load.sh` starts both).
//!
//! ```text
//! keel-load --url http://127.0.0.1:PORT [--seconds S] [--concurrency C]
//! ```
//!
//! Each phase runs `C` clients, each sending its next request as soon as the last is answered,
//! for `S` seconds (default 10 s, 4 clients). Every booking is of its own resource and key, so
//! that none conflicts: what is measured is the work of a booking, not refusals. Latency is
//! measured by the client, from sending the request to reading the whole answer; throughput and
//! percentiles count the answers with the expected status (201, 200), and the line says how many
//! others there were. It exits non-zero when a phase got no expected answer.

use std::time::{Duration, Instant};

use keel_tests::{wait_until, HarnessError};
use serde_json::{json, Value};

/// What the command line asked for.
struct Options {
    url: String,
    seconds: u64,
    concurrency: usize,
}

fn usage(reason: &str) -> HarnessError {
    HarnessError::Setup(format!(
        "{reason}\nusage: keel-load --url http://127.0.0.1:PORT [--seconds S] [--concurrency C]"
    ))
}

fn options() -> Result<Options, HarnessError> {
    let mut options = Options {
        url: String::new(),
        seconds: 10,
        concurrency: 4,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |what: &str| args.next().ok_or_else(|| usage(&format!("{arg} takes {what}")));
        match arg.as_str() {
            "--url" => options.url = value("a URL")?.trim_end_matches('/').to_owned(),
            "--seconds" => {
                options.seconds = value("a number")?
                    .parse()
                    .ok()
                    .filter(|s| (1..=600).contains(s))
                    .ok_or_else(|| usage("--seconds takes 1 to 600"))?;
            }
            "--concurrency" => {
                options.concurrency = value("a number")?
                    .parse()
                    .ok()
                    .filter(|c| (1..=64).contains(c))
                    .ok_or_else(|| usage("--concurrency takes 1 to 64"))?;
            }
            other => return Err(usage(&format!("unknown argument `{other}`"))),
        }
    }
    if options.url.is_empty() {
        return Err(usage("--url is required"));
    }
    Ok(options)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(35)))
        .build()
        .into()
}

/// One answered request: its status, how long it took, and the answer's `booking_id`.
struct Sample {
    status: u16,
    latency: Duration,
    booking_id: Option<String>,
}

/// Runs `concurrency` clients for `duration`, client `c` sending its `n`th request with
/// `send(agent, c, n)`.
fn phase(
    concurrency: usize,
    duration: Duration,
    send: impl Fn(&ureq::Agent, usize, usize) -> Result<(u16, String), ureq::Error> + Sync,
) -> (Vec<Sample>, usize, Duration) {
    let started = Instant::now();
    let deadline = started + duration;
    let results: Vec<(Vec<Sample>, usize)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..concurrency)
            .map(|client| {
                let send = &send;
                scope.spawn(move || {
                    let agent = agent();
                    let (mut samples, mut failed) = (Vec::new(), 0);
                    let mut n = 0;
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        match send(&agent, client, n) {
                            Ok((status, text)) => samples.push(Sample {
                                status,
                                latency: sent.elapsed(),
                                booking_id: serde_json::from_str::<Value>(&text)
                                    .ok()
                                    .and_then(|v| v["booking_id"].as_str().map(str::to_owned)),
                            }),
                            Err(_) => failed += 1,
                        }
                        n += 1;
                    }
                    (samples, failed)
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("a client thread panicked"))
            .collect()
    });
    let elapsed = started.elapsed();
    let failed = results.iter().map(|(_, f)| f).sum();
    let samples = results.into_iter().flat_map(|(s, _)| s).collect();
    (samples, failed, elapsed)
}

/// Prints a phase's line: throughput and latency over the answers with the `expected` status
/// (a fast refusal would flatter both), and how many others there were.
fn report(name: &str, samples: &[Sample], failed: usize, elapsed: Duration, expected: u16) {
    let mut latencies: Vec<Duration> = samples
        .iter()
        .filter(|s| s.status == expected)
        .map(|s| s.latency)
        .collect();
    latencies.sort();
    let unexpected = samples.len() - latencies.len();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{name:<22} {:>7} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}   {unexpected} not {expected}, {failed} unanswered",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0),
    );
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keel-load: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), HarnessError> {
    let options = options()?;
    let health = format!("{}/health", options.url);
    let waited = Duration::from_secs(300);
    if !wait_until(waited, || {
        agent().get(&health).call().is_ok_and(|r| r.status() == 200)
    }) {
        return Err(HarnessError::NotReady {
            name: options.url.clone(),
            waited,
            output: "GET /health never answered 200".into(),
        });
    }
    let duration = Duration::from_secs(options.seconds);
    let day = keel_tests::future_date(30);
    let run_id = std::process::id();
    let bookings = format!("{}/bookings", options.url);
    println!(
        "{} clients, {} s a phase, against {}",
        options.concurrency, options.seconds, options.url
    );
    println!(
        "{:<22} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "request", "answers", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );

    let (created, failed, elapsed) = phase(options.concurrency, duration, |agent, client, n| {
        let body = json!({
            "customer_id": format!("load-{run_id}-{client}"),
            "resource_id": format!("load-{run_id}-{client}-{n}"),
            "start": format!("{day}T10:00:00Z"), "end": format!("{day}T11:00:00Z"), "guests": 2
        });
        let mut answer = agent
            .post(&bookings)
            .header("content-type", "application/json")
            .header("idempotency-key", &format!("load-{run_id}-{client}-{n}"))
            .send(body.to_string())?;
        Ok((answer.status().as_u16(), answer.body_mut().read_to_string()?))
    });
    report("POST /bookings", &created, failed, elapsed, 201);

    let ids: Vec<&str> = created
        .iter()
        .filter(|s| s.status == 201)
        .filter_map(|s| s.booking_id.as_deref())
        .collect();
    if ids.is_empty() {
        return Err(HarnessError::Setup(
            "no booking was created: nothing to read".into(),
        ));
    }
    let (read, failed, elapsed) = phase(options.concurrency, duration, |agent, client, n| {
        let id = ids[(client * 7919 + n) % ids.len()];
        let mut answer = agent.get(&format!("{bookings}/{id}")).call()?;
        Ok((answer.status().as_u16(), answer.body_mut().read_to_string()?))
    });
    report("GET /bookings/{id}", &read, failed, elapsed, 200);
    if !read.iter().any(|s| s.status == 200) {
        return Err(HarnessError::Setup("no GET /bookings/{id} answered 200".into()));
    }
    Ok(())
}
