//! TLS on a listener: the handshake under a deadline, a friendly refusal of plain
//! HTTP sent to a TLS port, and reading a connection's first bytes ahead so the
//! HTTP version can be told under a deadline too.
//!
//! The server builds the `rustls::ServerConfig` (certificate, ALPN); this module
//! only runs connections through it.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};

/// The first byte of every TLS record that starts a handshake.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The answer to a plain HTTP request on a TLS port.
const PLAIN_HTTP_REPLY: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain; charset=utf-8\r\n\
connection: close\r\n\
content-length: 50\r\n\
\r\n\
This port speaks HTTPS: send the request with TLS\n";

/// Why a connection did not get through its TLS handshake.
#[derive(Debug)]
pub enum HandshakeError {
    /// Nothing, or not a whole handshake, arrived before the deadline.
    TimedOut,
    /// The client closed the connection first.
    Closed,
    /// The client spoke plain HTTP; it was answered 400 and closed.
    PlainHttp,
    /// The handshake failed (no common protocol version or cipher, a bad record…).
    Failed(io::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut => f.write_str("no TLS handshake before the deadline"),
            Self::Closed => f.write_str("the client closed the connection before the handshake"),
            Self::PlainHttp => f.write_str("plain HTTP sent to a TLS port (answered 400)"),
            Self::Failed(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Runs the server side of a TLS handshake on `stream`, which must be done within
/// `limit`. A client that opens with a plain HTTP request line gets a 400 that says
/// to use HTTPS, rather than a TLS alert it cannot read.
pub async fn tls_handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    limit: Duration,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    let deadline = Instant::now() + limit;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Err(_) => return Err(HandshakeError::TimedOut),
        Ok(Err(e)) => return Err(HandshakeError::Failed(e)),
        Ok(Ok(0)) => return Err(HandshakeError::Closed),
        Ok(Ok(_)) => {}
    }
    if first[0] != TLS_HANDSHAKE_RECORD && first[0].is_ascii_uppercase() {
        refuse_plain_http(stream).await;
        return Err(HandshakeError::PlainHttp);
    }
    let config = acceptor.config().clone();
    let handshake = async move {
        // Reading the client's hello is cheap; answering it (key exchange and
        // signature, a few hundred microseconds of CPU) is not, and waits for the
        // worker's turn.
        let hello = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
        let turn = handshake_turn().await;
        let answered = hello.into_stream(config);
        let (tls, ()) = tokio::join!(answered, give_back(turn));
        tls
    };
    match tokio::time::timeout_at(deadline, handshake).await {
        Err(_) => Err(HandshakeError::TimedOut),
        Ok(Err(e)) => Err(HandshakeError::Failed(e)),
        Ok(Ok(tls)) => Ok(tls),
    }
}

thread_local! {
    /// This thread's handshake turns: one at a time.
    static TURNS: Arc<Semaphore> = Arc::new(Semaphore::new(1));
}

/// Waits for the right to answer one TLS client hello on this thread, held until
/// the permit is dropped.
///
/// When many clients connect at once (the clients restarted, a failover), every
/// hello is ready together; answered back to back they would hold the worker for
/// tens of milliseconds (256 hellos × ~0.4 ms) while requests on established
/// connections wait behind them. Taking turns, and giving a turn back only after
/// the tasks that were ready have run, a worker answers one hello and then serves
/// the requests that are ready before it answers the next, the way HAProxy runs
/// handshakes in a lower-priority class than request processing. An idle worker
/// still answers hellos back to back.
async fn handshake_turn() -> Option<OwnedSemaphorePermit> {
    let turns = TURNS.with(Arc::clone);
    // The semaphore is never closed; were it, the hello would be answered at once.
    turns.acquire_owned().await.ok()
}

/// Gives `turn` back once the tasks that are ready now have run: a yield is
/// deferred until the runtime has polled for I/O, so the next hello's task, woken
/// by the release, queues behind them.
async fn give_back(turn: Option<OwnedSemaphorePermit>) {
    tokio::task::yield_now().await;
    drop(turn);
}

/// Answers 400 and closes. The request is read (a little, briefly) before the
/// close so the kernel does not reset the connection over unread bytes and
/// discard the answer before the client sees it.
async fn refuse_plain_http(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(PLAIN_HTTP_REPLY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

/// The HTTP/2 connection preface.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `seen` (the first bytes of a connection) tells HTTP/1.1 from an h2
/// preface: either all of the preface, or something that is not a prefix of it.
pub(crate) fn version_known(seen: &[u8]) -> bool {
    seen.len() >= H2_PREFACE.len() || seen != &H2_PREFACE[..seen.len()]
}

/// Reads from `stream` until its HTTP version can be told, before `limit`; `None`
/// when the client sent too little in time or closed. The bytes read come back to
/// be replayed (see [`Replay`]): hyper-util's version sniffing has no deadline of
/// its own, so a server that serves both versions reads ahead with one.
pub async fn read_first_bytes<I: AsyncRead + Unpin>(
    stream: &mut I,
    limit: Duration,
) -> Option<Bytes> {
    let deadline = Instant::now() + limit;
    let mut head = BytesMut::with_capacity(H2_PREFACE.len());
    loop {
        let mut buf = [0u8; 24];
        let want = H2_PREFACE.len() - head.len();
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf[..want])).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return None,
        };
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if version_known(&head) {
            return Some(head.freeze());
        }
    }
}

pin_project_lite::pin_project! {
    /// A stream whose first bytes were read ahead: they are read again first, then
    /// the rest of the stream. Writes go straight through.
    #[derive(Debug)]
    pub struct Replay<I> {
        head: Bytes,
        #[pin]
        inner: I,
    }
}

// === impl Replay ===

impl<I> Replay<I> {
    /// `inner`, whose first bytes `head` were already read from it.
    pub fn new(head: Bytes, inner: I) -> Self {
        Self { head, inner }
    }
}

impl<I: AsyncRead> AsyncRead for Replay<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.head.is_empty() {
            return this.inner.poll_read(cx, buf);
        }
        let n = this.head.len().min(buf.remaining());
        buf.put_slice(&this.head[..n]);
        this.head.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite> AsyncWrite for Replay<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_known_from_the_first_differing_byte() {
        assert!(!version_known(b""));
        assert!(!version_known(b"PRI * HT"));
        assert!(version_known(b"G"));
        assert!(version_known(b"PRX"));
        assert!(version_known(H2_PREFACE));
    }

    #[tokio::test]
    async fn a_turn_goes_back_only_after_the_ready_tasks_ran() {
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let first = handshake_turn().await;
        assert!(first.is_some());
        let hello = tokio::spawn({
            let order = order.clone();
            async move {
                let _turn = handshake_turn().await;
                order.lock().unwrap().push("second hello");
            }
        });
        let request = tokio::spawn({
            let order = order.clone();
            async move { order.lock().unwrap().push("request") }
        });
        give_back(first).await;
        hello.await.unwrap();
        request.await.unwrap();
        // Spawned first, the hello still waited for the request that was ready.
        assert_eq!(*order.lock().unwrap(), ["request", "second hello"]);
    }

    #[tokio::test]
    async fn replayed_bytes_come_before_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"world").await.unwrap();
        drop(client);
        let mut replay = Replay::new(Bytes::from_static(b"hello "), server);
        let mut out = String::new();
        replay.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn first_bytes_stop_once_the_version_is_known() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let head = read_first_bytes(&mut server, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(&head[..], b"GET / HTTP/1.1\r\n");

        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        tokio::time::pause();
        // A partial preface and then silence: given up at the deadline.
        assert!(
            read_first_bytes(&mut server, Duration::from_secs(5))
                .await
                .is_none()
        );
    }
}
