//! Heap allocations Keel adds to a warm invocation, counted with a counting global allocator.
//! The bound guards against regressions on the hot path; the exact figures are printed
//! (`cargo test -p keel-runtime --test it allocations -- --nocapture`). Only the allocations of
//! the thread that asks are counted, so the other tests of this binary may run beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use crate::common::{event, keel};
use keel_runtime::{service_fn, BoxError, LambdaEvent};
use serde_json::{json, Value};
use tower::{Service, ServiceExt};
use tracing_subscriber::layer::SubscriberExt;

struct Counting;

thread_local! {
    /// Allocations made by this thread so far (a constant initializer: reading it never
    /// allocates).
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // During a thread's teardown the counter may be gone: that allocation is not counted.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

/// This thread's allocations so far.
fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations Keel may add to an invocation that logs two lines and records five metrics.
const BUDGET: usize = 64;

async fn handler(event: LambdaEvent<Value>) -> Result<u64, BoxError> {
    let seats = event.payload["seats"].as_u64().unwrap_or(1);
    tracing::info!(seats, "booking received");
    metrics::counter!("BookingsReceived").increment(1);
    metrics::counter!("Seats").increment(seats);
    metrics::counter!("ByResource", "resource" => "room").increment(1);
    metrics::gauge!("Extras").set(2.0);
    metrics::histogram!("PriceCents").record(1250.0);
    tracing::info!(seats, "booking priced");
    Ok(seats)
}

#[test]
fn a_warm_invocation_stays_within_its_allocation_budget() {
    let (keel, lines) = keel();
    let subscriber = tracing_subscriber::registry().with(keel.log_layer());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let payload = json!({"seats": 2, "resource_id": "room-1"});

    let counted = |run: &mut dyn FnMut()| {
        run(); // warm: cold start, first registrations
        let before = allocations();
        run();
        allocations() - before
    };

    let mut bare = service_fn(handler);
    let bare_allocations = metrics::with_local_recorder(&metrics::NoopRecorder, || {
        counted(&mut || {
            let event = event("r", payload.clone());
            let typed: Value = serde_json::from_str(event.payload.get()).unwrap();
            runtime
                .block_on(bare.call(LambdaEvent::new(typed, event.context)))
                .unwrap();
        })
    });

    let mut wrapped = keel.service(service_fn(handler));
    let keel_allocations = tracing::subscriber::with_default(subscriber, || {
        counted(&mut || {
            let event = event("r", payload.clone());
            runtime.block_on(async { wrapped.ready().await.unwrap().call(event).await.unwrap() });
            lines.clear();
        })
    });

    let added = keel_allocations.saturating_sub(bare_allocations);
    println!("allocations per warm invocation: bare {bare_allocations}, with Keel {keel_allocations}, added {added}");
    assert!(
        added <= BUDGET,
        "Keel added {added} allocations (budget {BUDGET})"
    );
}
