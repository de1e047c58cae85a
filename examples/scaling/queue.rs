//! The limiter's queue: enqueue, cancellation in three orders (and
//! tower's `ConcurrencyLimit` in the same harness), throughput through a
//! limit of 16.

use std::future::Future;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_cx::body::Body;
use tower_cx::priority::PriorityLimitLayer;

use super::{best, call, header, paused_runtime, per_item, row, upstream, us, SIZES};

/// Which waiters a cancellation run drops first.
#[derive(Clone, Copy)]
enum Order {
    OldestFirst,
    NewestFirst,
    Random,
    /// Random, the futures left where they were made (in arrival order):
    /// the harness's own reads are scattered too.
    Scattered,
}

impl Order {
    /// The arrival numbers of `n` waiters, in the order they are dropped.
    fn of(self, n: usize) -> Vec<usize> {
        match self {
            Order::OldestFirst => (0..n).collect(),
            Order::NewestFirst => (0..n).rev().collect(),
            Order::Random | Order::Scattered => shuffled(n, 19),
        }
    }
}

/// Drop `waiters` (in arrival order) in `order`; per waiter. The futures
/// are first laid out in the order they will be dropped, so that the
/// harness walks its own memory front to back whatever the order, and what
/// differs between orders is the limiter's work (and its memory).
fn drop_in<F>(waiters: Vec<F>, order: Order) -> f64 {
    let n = waiters.len();
    let mut waiters: Vec<Option<F>> = waiters.into_iter().map(Some).collect();
    if let Order::Scattered = order {
        let order = order.of(n);
        let start = Instant::now();
        for i in order {
            waiters[i] = None;
        }
        return per_item(start.elapsed(), n);
    }
    let mut ordered: Vec<F> = Order::of(order, n)
        .into_iter()
        .map(|i| waiters[i].take().expect("each waiter once"))
        .collect();
    let start = Instant::now();
    for waiter in ordered.drain(..) {
        drop(waiter);
    }
    per_item(start.elapsed(), n)
}

/// A request that allocates nothing, so that the queue tables time the
/// limiter rather than the allocator.
fn bare_request() -> Request<Body> {
    Request::new(Body::empty())
}

/// One permit, held; `n` waiters queued (timed: the enqueue); then every
/// waiter dropped in `order` (timed: the cancellation). Per waiter.
fn cancel_run(runtime: &tokio::runtime::Runtime, n: usize, order: Order) -> (f64, f64) {
    let _guard = runtime.enter();
    let layer = PriorityLimitLayer::new(1).max_queue(n);
    let handle = layer.handle();
    let mut service = layer.layer(upstream());
    // never polled: it keeps the only permit
    let busy = call(&mut service, bare_request());
    let start = Instant::now();
    let waiters: Vec<_> = (0..n).map(|_| call(&mut service, bare_request())).collect();
    let enqueue = per_item(start.elapsed(), n);
    assert_eq!(handle.status().queued, [0, n, 0]);
    let cancel = drop_in(waiters, order);
    assert_eq!(handle.status().queued, [0, 0, 0]);
    drop(busy);
    assert_eq!(handle.status().in_flight, 0);
    (enqueue, cancel)
}

/// The same through tower's `ConcurrencyLimit`: one clone holds the only
/// permit, `n` clones wait for it in `poll_ready` (tower's semaphore queue),
/// then are dropped in `order`.
fn tower_cancel_run(runtime: &tokio::runtime::Runtime, n: usize, order: Order) -> (f64, f64) {
    let _guard = runtime.enter();
    let mut busy = tower::limit::ConcurrencyLimit::new(upstream(), 1);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(busy.poll_ready(&mut cx).is_ready());
    let start = Instant::now();
    let waiters: Vec<_> = (0..n)
        .map(|_| {
            let mut waiter = busy.clone();
            assert!(waiter.poll_ready(&mut cx).is_pending());
            waiter
        })
        .collect();
    let enqueue = per_item(start.elapsed(), n);
    let cancel = drop_in(waiters, order);
    (enqueue, cancel)
}

/// What a queued request owns, as plain memory: its waiting state and its
/// mailbox.
type MemoryOnly = (Box<[u8; 352]>, std::sync::Arc<[u8; 48]>);

/// The memory alone, for reference: `n` waiters' worth of allocations (a
/// box the size of a queued request's waiting state, and a mailbox), made
/// in arrival order and freed in `order`, with no limiter at all. What
/// random order costs here is the floor for any queue whose waiters own
/// memory allocated as they arrive.
fn memory_cancel_run(_runtime: &tokio::runtime::Runtime, n: usize, order: Order) -> (f64, f64) {
    let start = Instant::now();
    let waiters: Vec<MemoryOnly> = (0..n)
        .map(|i| (Box::new([i as u8; 352]), std::sync::Arc::new([i as u8; 48])))
        .collect();
    let enqueue = per_item(start.elapsed(), n);
    (enqueue, drop_in(waiters, order))
}

/// `n` requests at once through a limit of 16 over an upstream that takes
/// 1 ms (paused clock): per request, wall time.
fn through_limit<S>(runtime: &tokio::runtime::Runtime, n: usize, service: S) -> f64
where
    S: Service<Request<Body>, Response = Response<()>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
{
    runtime.block_on(async move {
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            tasks.spawn(service.clone().oneshot(bare_request()));
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("no panic").expect("a response");
        }
        per_item(start.elapsed(), n)
    })
}

/// An upstream that answers after 1 ms.
fn slow_upstream() -> impl Service<
    Request<Body>,
    Response = Response<()>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<()>, BoxError>> + Send,
> + Clone
       + Send {
    service_fn(|_req: Request<Body>| async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok::<_, BoxError>(Response::new(()))
    })
}

/// Enqueue, then cancellation in three orders, with `run`; one table row.
fn cancel_row(
    runtime: &tokio::runtime::Runtime,
    runs: usize,
    n: usize,
    run: fn(&tokio::runtime::Runtime, usize, Order) -> (f64, f64),
) {
    let [enqueue, oldest, newest, random, scattered] = best(runs, || {
        let (e1, oldest) = run(runtime, n, Order::OldestFirst);
        let (e2, newest) = run(runtime, n, Order::NewestFirst);
        let (e3, random) = run(runtime, n, Order::Random);
        let (e4, scattered) = run(runtime, n, Order::Scattered);
        [
            e1.min(e2).min(e3).min(e4),
            oldest,
            newest,
            random,
            scattered,
        ]
    });
    let worst = newest.max(random) / oldest;
    row(
        n,
        &[
            us(enqueue),
            us(oldest),
            us(newest),
            us(random),
            format!("{worst:.2}"),
            us(scattered),
        ],
    );
}

/// The queue tables: ours, tower's for reference, throughput.
pub(crate) fn queue(runs: usize) {
    let columns = [
        "enqueue",
        "drop oldest-first",
        "drop newest-first",
        "drop random",
        "worst / oldest-first",
        "drop random, futures scattered",
    ];
    let runtime = paused_runtime();
    header(
        "The limiter's queue (`PriorityLimitLayer`): enqueue and cancellation",
        "One permit held, n waiters queued at one priority (requests that \
         allocate nothing), then every waiter's future dropped; per waiter. \
         The futures are laid out in the order they are dropped, so that the \
         orders differ only in the limiter's work and memory; the last column \
         leaves them in arrival order (the harness's reads are random too).",
        &columns,
    );
    for n in SIZES {
        cancel_row(&runtime, runs, n, cancel_run);
    }
    println!();
    header(
        "For reference: tower's `ConcurrencyLimit` (a semaphore's intrusive waiter list)",
        "The same harness: one clone holds the permit, n clones wait in \
         `poll_ready`, then are dropped.",
        &columns,
    );
    for n in SIZES {
        cancel_row(&runtime, runs, n, tower_cancel_run);
    }
    println!();
    header(
        "For reference: the memory alone (no limiter)",
        "The same harness over n allocations of a queued request's size (a \
         352-byte box and a 48-byte mailbox each), made in arrival order and \
         freed in each order: the allocator and the caches, nothing else.",
        &columns,
    );
    for n in SIZES {
        cancel_row(&runtime, runs, n, memory_cancel_run);
    }
    println!();
    header(
        "Throughput through a limit of 16",
        "n requests at once (one task each) through a limit of 16 over an \
         upstream that answers after 1 ms (paused clock); per request.",
        &["`PriorityLimitLayer`", "tower `ConcurrencyLimit`"],
    );
    for n in SIZES {
        let cells = best(runs, || {
            let ours = {
                let _guard = runtime.enter();
                let service = PriorityLimitLayer::new(16)
                    .max_queue(n)
                    .layer(slow_upstream());
                through_limit(&runtime, n, service)
            };
            let tower = through_limit(
                &runtime,
                n,
                tower::limit::ConcurrencyLimit::new(slow_upstream(), 16),
            );
            [ours, tower]
        });
        row(n, &cells.map(us));
    }
    println!();
}

/// A deterministic shuffle (SplitMix64 and Fisher-Yates): the same order
/// every run.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}
