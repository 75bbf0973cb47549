//! A client's connection as the server loop holds it: plain TCP or TLS over TCP,
//! whole or split into a read side and a write side.
//!
//! The loop lends its read side to a request's body while it writes with the other,
//! so it works on halves; hyper's server, when it takes a connection over, gets the
//! two halves joined ([`Halves`]). A TCP stream splits into two owned halves for free; a TLS
//! stream is one rustls session that both directions use, so its halves share it
//! behind tokio's split (one allocation per connection, an uncontended lock per call).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::server::TlsStream;

/// A TLS session over TCP. Boxed: rustls' state is large, and a plain connection's
/// task should not be sized for it.
type Tls = Box<TlsStream<TcpStream>>;

/// A client connection, whole.
#[derive(Debug)]
pub(crate) enum ClientIo {
    Tcp(TcpStream),
    Tls(Tls),
}

/// The side of a client connection that reads.
#[derive(Debug)]
pub(crate) enum ClientRead {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<Tls>),
}

/// The side of a client connection that writes.
#[derive(Debug)]
pub(crate) enum ClientWrite {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Tls>),
}

/// A client connection's two sides, read and written as one stream.
pub(crate) type Halves = tokio::io::Join<ClientRead, ClientWrite>;

// === impl ClientIo ===

impl ClientIo {
    /// Its two sides.
    pub(crate) fn split(self) -> (ClientRead, ClientWrite) {
        match self {
            Self::Tcp(s) => {
                let (r, w) = s.into_split();
                (ClientRead::Tcp(r), ClientWrite::Tcp(w))
            }
            Self::Tls(s) => {
                let (r, w) = tokio::io::split(s);
                (ClientRead::Tls(r), ClientWrite::Tls(w))
            }
        }
    }

    /// Its two sides, joined into one stream.
    pub(crate) fn halves(self) -> Halves {
        let (r, w) = self.split();
        tokio::io::join(r, w)
    }
}

/// `$body` with `$s` bound to the stream of whichever kind `$this` holds.
macro_rules! either {
    ($this:expr, $s:ident => $body:expr) => {
        match $this {
            Self::Tcp($s) => $body,
            Self::Tls($s) => $body,
        }
    };
}

// === impl ClientRead ===

impl AsyncRead for ClientRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

// === impl ClientWrite ===

impl AsyncWrite for ClientWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        either!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        either!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        either!(self, s => s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}
