//! Heap allocations per request on the happy path: each layer alone, the
//! built-ins that do the same jobs, and the whole stacks, over the same
//! ready in-memory service `examples/profile_stack.rs` drives (polled
//! without an executor, single-threaded).
//!
//! ```sh
//! cargo run --release --example allocs
//! ```
//!
//! A counting global allocator wraps the system allocator: every `alloc`,
//! `alloc_zeroed` and `realloc` counts as one allocation of its (new) size.
//! Each service first serves 1,000 requests (one-time allocations: lazy
//! statics, the first correlation-id block, thread-locals), then 20,000
//! counted ones; the table divides by 20,000, so an allocation made once
//! every 64 requests shows as 0.02. "Held" is what the counted requests
//! allocated and did not free, per request (0 when nothing accumulates).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response};
use tower::{Layer, Service};
use tower_cx::audit::{AuditLayer, NoopSink};
use tower_cx::auth::BearerLayer;
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::RetryLayer;

#[path = "../benches/support/inmem.rs"]
mod inmem;

use inmem::{
    cached_token, canonical_stack, canonical_stack_with, now, peer_stack, read_audit, request,
    resilience_retry, runtime, upstream, PeerPolicy,
};

/// Counts allocations and bytes, then lets [`System`] do the work.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static FREED: AtomicU64 = AtomicU64::new(0);

fn count(bytes: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED.fetch_add(bytes as u64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, which is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FREED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` (every
        // allocation goes through this wrapper).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        FREED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s
        // contract on `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM_UP: u64 = 1_000;
const COUNTED: u64 = 20_000;

/// Per request: allocations, bytes allocated, bytes held afterwards.
struct Cost {
    allocations: f64,
    bytes: f64,
    held: f64,
}

fn measure<S>(mut service: S) -> Cost
where
    S: Service<Request<Body>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let mut send = |n: u64| {
        for _ in 0..n {
            now(std::future::poll_fn(|cx| service.poll_ready(cx))).expect("ready");
            black_box(now(service.call(request())).expect("a response"));
        }
    };
    send(WARM_UP);
    let read = || {
        (
            ALLOCATIONS.load(Ordering::Relaxed),
            ALLOCATED.load(Ordering::Relaxed),
            FREED.load(Ordering::Relaxed),
        )
    };
    let (count0, bytes0, freed0) = read();
    send(COUNTED);
    let (count1, bytes1, freed1) = read();
    let per = |v: u64| v as f64 / COUNTED as f64;
    Cost {
        allocations: per(count1 - count0),
        bytes: per(bytes1 - bytes0),
        held: (bytes1 - bytes0) as f64 / COUNTED as f64 - per(freed1 - freed0),
    }
}

fn main() {
    let runtime = runtime();
    let cache = cached_token();
    let _guard = runtime.enter();
    let rows: Vec<(&str, Cost)> = vec![
        ("bare mock service (the request built)", measure(upstream())),
        ("`RetryLayer`", measure(RetryLayer::new().layer(upstream()))),
        (
            "`AuditLayer`, no-op sink",
            measure(AuditLayer::new(NoopSink).layer(upstream())),
        ),
        (
            "`AuditLayer`, no-op sink, stats handle taken",
            measure(read_audit().layer(upstream())),
        ),
        (
            "`BearerLayer`, cached token, 401 replay on",
            measure(BearerLayer::new(cache.clone()).layer(upstream())),
        ),
        (
            "`BearerLayer`, replay off",
            measure(
                BearerLayer::new(cache.clone())
                    .replay_on_401(false)
                    .layer(upstream()),
            ),
        ),
        (
            "`CircuitBreakerLayer`",
            measure(CircuitBreakerLayer::new().layer(upstream())),
        ),
        (
            "`PriorityLimitLayer` (16)",
            measure(PriorityLimitLayer::new(16).layer(upstream())),
        ),
        (
            "tower `Retry` + `TpsBudget`",
            measure(tower::retry::Retry::new(PeerPolicy::new(), upstream())),
        ),
        (
            "tower-resilience `Retry` (token-bucket budget)",
            measure(resilience_retry()),
        ),
        (
            "tower `ConcurrencyLimit` (16)",
            measure(tower::limit::ConcurrencyLimitLayer::new(16).layer(upstream())),
        ),
        (
            "tower-http `AddAuthorization` (bearer)",
            measure(
                tower_http::auth::AddAuthorizationLayer::bearer("bench-token").layer(upstream()),
            ),
        ),
        (
            "tower-cx stack (audit, retry, breaker, limiter, bearer, timeout)",
            measure(canonical_stack(cache.clone(), true)),
        ),
        (
            "tower-cx stack, its stats handle taken",
            measure(canonical_stack_with(read_audit(), cache, true)),
        ),
        (
            "built-ins stack (retry + `TpsBudget`, `ConcurrencyLimit`, `AddAuthorization`, `Timeout`)",
            measure(peer_stack()),
        ),
    ];
    let bare = (rows[0].1.allocations, rows[0].1.bytes);
    println!(
        "Heap allocations per request, happy path ({COUNTED} requests after {WARM_UP} warm-up)\n"
    );
    println!("| service | allocations | bytes | added allocations | added bytes | held |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, cost) in &rows {
        println!(
            "| {name} | {:.2} | {:.0} | {:+.2} | {:+.0} | {:.0} |",
            cost.allocations,
            cost.bytes,
            cost.allocations - bare.0,
            cost.bytes - bare.1,
            cost.held,
        );
    }
}
