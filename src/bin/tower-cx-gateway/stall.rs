//! A connection whose client stops reading: [`SendTimeout`] fails a write
//! that makes no progress for `send_timeout`, which closes the connection.
//!
//! A client that sends a request and never reads the answer fills its
//! receive window; every write of the response then waits. Without a bound
//! such a client holds a connection slot, and the upstream connection
//! behind it, for as long as it likes (`--max-connections` of them stop the
//! gateway from accepting anything).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pin_project! {
    /// `io` whose writes fail with [`io::ErrorKind::TimedOut`] once one has
    /// waited `timeout` without progress.
    pub struct SendTimeout<S> {
        #[pin]
        io: S,
        timeout: Duration,
        // armed only while a write waits (boxed: most writes never do)
        stalled: Option<Pin<Box<Sleep>>>,
    }
}

impl<S> SendTimeout<S> {
    pub fn new(io: S, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
        }
    }
}

/// `result` of a write; on `Pending`, the stall timer armed (or polled).
fn guard<T>(
    result: Poll<io::Result<T>>,
    stalled: &mut Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    if result.is_ready() {
        *stalled = None;
        return result;
    }
    let timer = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
    match timer.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {timeout:?}"),
        ))),
        Poll::Pending => Poll::Pending,
    }
}

impl<S: AsyncRead> AsyncRead for SendTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.io.poll_write(cx, buf);
        guard(result, this.stalled, *this.timeout, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.io.poll_write_vectored(cx, bufs);
        guard(result, this.stalled, *this.timeout, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let result = this.io.poll_flush(cx);
        guard(result, this.stalled, *this.timeout, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// Whether `error` ended a connection because its client stopped reading.
pub fn is_send_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    tower_cx::error::find::<io::Error>(error).is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_past_the_timeout_fails_and_progress_rearms_it() {
        // a pipe of 8 bytes that nobody reads
        let (near, mut far) = tokio::io::duplex(8);
        let mut io = SendTimeout::new(near, Duration::from_secs(5));
        io.write_all(b"12345678").await.unwrap();
        let started = tokio::time::Instant::now();
        let writing = tokio::spawn(async move {
            let result = io.write_all(b"more").await;
            (result, io)
        });
        // reading some 3 s in lets the write go on: the timer starts again
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut buf = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut far, &mut buf)
            .await
            .unwrap();
        let (result, _io) = writing.await.unwrap();
        result.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(3));

        let (near, _far) = tokio::io::duplex(8);
        let mut io = SendTimeout::new(near, Duration::from_secs(5));
        io.write_all(b"12345678").await.unwrap();
        let started = tokio::time::Instant::now();
        let error = io.write_all(b"more").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(is_send_timeout(&error));
    }
}
