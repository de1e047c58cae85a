//! The accept loop within the limits, and the graceful shutdown: on SIGTERM
//! or Ctrl-C the listener closes (new connections are refused), idle
//! connections close, and requests in flight finish within the grace
//! period (a response whose body is still streaming counts as in flight);
//! whatever is still running then is dropped and counted, and a request
//! still waiting for its response is recorded by the audit layer as
//! `cancelled`, and dead-lettered with the code `cancelled` under
//! `--dead-letter-file` (a response cut while streaming was already
//! recorded with its status, as the audit layer records at the head).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::limits::AcceptBackoff;
use super::protocol::{sniff, Rewind};
use super::proxy::{Gateway, ProxyBody};
use super::stall::{is_send_timeout, SendTimeout};

/// How a serve run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Requests still in flight when the grace period ran out, dropped.
    pub dropped: usize,
}

/// Requests being answered now, and how many ever started.
#[derive(Debug, Clone, Default)]
struct InFlight(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    now: AtomicUsize,
    started: AtomicU64,
}

/// One request in flight, until dropped.
struct Entered(Arc<Counts>);

impl InFlight {
    fn enter(&self) -> Entered {
        self.0.started.fetch_add(1, Ordering::SeqCst);
        self.0.now.fetch_add(1, Ordering::SeqCst);
        Entered(self.0.clone())
    }

    fn count(&self) -> usize {
        self.0.now.load(Ordering::SeqCst)
    }

    /// Resolves once a whole `period` (checked every `period`) passed with
    /// no request in flight and none started.
    async fn idle_for(&self, period: Duration) {
        let mut started = self.0.started.load(Ordering::SeqCst);
        loop {
            tokio::time::sleep(period).await;
            let now = self.0.started.load(Ordering::SeqCst);
            if self.count() == 0 && now == started {
                return;
            }
            started = now;
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

pin_project_lite::pin_project! {
    /// A response's body that keeps its request counted in flight until
    /// the body ends or is dropped: a response streams after its head, and
    /// the shutdown counts it until then.
    struct Counted {
        #[pin]
        body: ProxyBody,
        // the gateway's count and the connection's
        entered: Option<(Entered, Entered)>,
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = <ProxyBody as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        if frame.is_none() {
            this.entered.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Resolves on SIGTERM (Unix) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                return;
            }
            Err(e) => eprintln!("shutdown: cannot listen for SIGTERM ({e}); Ctrl-C only"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Drive `connection` to its end; once `close` resolves, `graceful` asks
/// it to finish the requests in flight, then close.
async fn until_closed<C>(
    mut connection: Pin<&mut C>,
    close: impl std::future::Future<Output = ()>,
    graceful: impl FnOnce(Pin<&mut C>),
) -> hyper::Result<()>
where
    C: std::future::Future<Output = hyper::Result<()>>,
{
    tokio::select! {
        served = connection.as_mut() => served,
        () = close => {
            graceful(connection.as_mut());
            connection.await
        }
    }
}

/// Accept and serve connections until SIGTERM or Ctrl-C, then shut down
/// gracefully within `grace`.
pub async fn serve(listener: TcpListener, gateway: Gateway, grace: Duration) -> Stopped {
    let limits = gateway.limits.clone();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(64 * 1024));
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        // a peer gone silent is found by a ping unanswered
        .keep_alive_interval(limits.header_timeout)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let mut backoff = AcceptBackoff::default();
    let (stopping, stop) = watch::channel(false);
    let in_flight = InFlight::default();
    let mut tasks = JoinSet::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        // Over the limit, wait here: new connections stay in the backlog.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    let pause = backoff.failed();
                    if pause.log {
                        eprintln!(
                            "accept: {e} ({} error(s) in a row); pausing accepts for {:?}",
                            pause.errors, pause.wait
                        );
                    }
                    tokio::time::sleep(pause.wait).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        if let Some(errors) = backoff.succeeded() {
            eprintln!("accept: accepting again after {errors} error(s)");
        }
        let gateway = gateway.clone();
        let http = http.clone();
        let h2 = h2.clone();
        let in_flight = in_flight.clone();
        let mut stop = stop.clone();
        let (send_timeout, header_timeout) = (limits.send_timeout, limits.header_timeout);
        tasks.spawn(async move {
            let mut stream = stream;
            // HTTP/2 with prior knowledge, or HTTP/1.1; a client that sends
            // nothing in time is closed, as hyper's header timer would
            let Ok(Ok((is_h2, prefix))) =
                tokio::time::timeout(header_timeout, sniff(&mut stream)).await
            else {
                drop(permit);
                return;
            };
            let streams = InFlight::default();
            let counted = streams.clone();
            let service = hyper::service::service_fn(move |request| {
                let gateway = gateway.clone();
                let entered = (in_flight.enter(), counted.enter());
                async move {
                    let response = gateway.handle(request, peer).await?;
                    // counted until the body has been sent, not only its head
                    let entered = Some(entered);
                    Ok::<_, Infallible>(response.map(|body| Counted { body, entered }))
                }
            });
            let io = TokioIo::new(SendTimeout::new(Rewind::new(prefix, stream), send_timeout));
            let stopped = async { drop(stop.wait_for(|stop| *stop).await) };
            let served = if is_h2 {
                // hyper's header timer is HTTP/1's: an HTTP/2 connection
                // idle that long is closed here
                let close = async {
                    tokio::select! {
                        () = stopped => {}
                        () = streams.idle_for(header_timeout) => {}
                    }
                };
                let connection = h2.serve_connection(io, service);
                tokio::pin!(connection);
                until_closed(connection, close, |c| c.graceful_shutdown()).await
            } else {
                let connection = http.serve_connection(io, service);
                tokio::pin!(connection);
                until_closed(connection, stopped, |c| c.graceful_shutdown()).await
            };
            match served {
                // a slow, malformed or vanished client: not worth a line each
                // (a flood of them would flood the log)
                Err(e)
                    if e.is_timeout()
                        || e.is_parse()
                        || e.is_parse_too_large()
                        || e.is_incomplete_message()
                        || e.is_closed()
                        || is_send_timeout(&e) => {}
                Err(e) => eprintln!("connection from {peer}: {e}"),
                Ok(()) => {}
            }
            drop(permit);
        });
    }

    // Stop accepting: closing the listener refuses new connections.
    drop(listener);
    let _ = stopping.send(true);
    println!(
        "shutting down: {} request(s) in flight, waiting up to {grace:?}",
        in_flight.count()
    );
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    let dropped = match drained {
        Ok(()) => 0,
        Err(_) => in_flight.count(),
    };
    if dropped > 0 {
        eprintln!(
            "shutdown: {dropped} request(s) still in flight after {grace:?}, dropped \
             (recorded as cancelled in the audit stream)"
        );
    }
    // Dropping a request's future records it as `cancelled` in the audit.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Stopped { dropped }
}
