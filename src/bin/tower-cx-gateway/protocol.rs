//! Which HTTP version a caller's connection speaks: HTTP/2 when it opens
//! with the HTTP/2 preface (prior knowledge, as `curl --http2-prior-knowledge`
//! and gRPC clients send it over plain TCP), HTTP/1.1 otherwise.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What an HTTP/2 connection sends first (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads from `io` until its first bytes tell the version: whether it is
/// HTTP/2, and the bytes read (to be read again, see [`Rewind`]). At most
/// the preface's 24 bytes are read; an HTTP/1 request differs from it by
/// its second byte at the latest.
pub async fn sniff<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<(bool, Bytes)> {
    let mut read = [0u8; PREFACE.len()];
    let mut len = 0;
    loop {
        let n = io.read(&mut read[len..]).await?;
        len += n;
        let seen = &read[..len];
        if n == 0 || !PREFACE.starts_with(seen) {
            // HTTP/1 (or a connection closed early: HTTP/1's parser says so)
            return Ok((false, Bytes::copy_from_slice(seen)));
        }
        if len == PREFACE.len() {
            return Ok((true, Bytes::from_static(PREFACE)));
        }
    }
}

pin_project! {
    /// `io`, with `prefix` read again before it.
    pub struct Rewind<S> {
        prefix: Bytes,
        #[pin]
        io: S,
    }
}

impl<S> Rewind<S> {
    pub fn new(prefix: Bytes, io: S) -> Self {
        Self { prefix, io }
    }
}

impl<S: AsyncRead> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.io.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn sniffed(sent: &'static [u8]) -> (bool, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        // the bytes arrive one at a time: each read returns what there is
        let writer = tokio::spawn(async move {
            for byte in sent {
                client.write_all(&[*byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let (h2, prefix) = sniff(&mut server).await.unwrap();
        let _client = writer.await.unwrap();
        let mut rewound = Rewind::new(prefix, server);
        let mut all = vec![0u8; sent.len()];
        rewound.read_exact(&mut all).await.unwrap();
        (h2, all)
    }

    #[tokio::test]
    async fn the_preface_is_http2_and_anything_else_http1_and_no_byte_is_lost() {
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04";
        assert_eq!(sniffed(h2).await, (true, h2.to_vec()));
        for h1 in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"POST /x HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(sniffed(h1).await, (false, h1.to_vec()));
        }
    }
}
