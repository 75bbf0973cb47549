//! fledge's own HTTP/1.1 server side, for client connections over plain TCP and over
//! TLS (when ALPN did not choose HTTP/2).
//!
//! hyper's server keeps HTTP/2 (h2c and h2 by ALPN) and every request this loop does
//! not take. The loop serves the common case of an HTTP/1.1 connection with less
//! memory and work than hyper's general server:
//! - **Memory.** A connection holds its socket (and TLS session) and what its request
//!   needs. The read buffer is allocated when bytes arrive and given back when the
//!   connection is between requests (hyper keeps an 8 KiB read and an 8 KiB write
//!   buffer for the connection's life); a response's head is written from a buffer
//!   that lives as long as the write.
//! - **Work.** The connection's service stack is called in place (hyper's glue
//!   clones it for every request), a head is parsed without zeroing tables, and a
//!   small response goes out with its head in one `write` (over TLS, one record).
//!
//! **What it takes.** HTTP/1.1 requests without `Transfer-Encoding`, `Expect` or
//! `Upgrade`, other than CONNECT, whose body, if any, has one `Content-Length`. Any
//! other request (HTTP/1.0, a chunked upload, `Expect: 100-continue`, a WebSocket,
//! a malformed or oversized head) hands the rest of the connection, the bytes
//! already read included, to hyper's server, which answers it as it always has (400,
//! 431, 505, an upgrade…).
//!
//! **What it keeps.** The slow-loris guard (`timeouts.client_headers` to send a head,
//! counted from when the connection starts waiting for it, idle keep-alive included;
//! a partial head then gets a 408), the head-size limit (handed over to hyper for
//! its 431), keep-alive per RFC 9112 (`Connection: close` from either side ends the
//! connection after the response), pipelined requests, a client that hangs up while
//! its request is in flight (the request is dropped and counted as a client abort),
//! the drain on shutdown (idle connections close, busy ones after their response),
//! an orderly close (a TLS `close_notify`, then the end of the stream), and a `Date`
//! on every response (RFC 9110 asks it of a proxy that forwards one without).

use std::future::poll_fn;
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tower::Service;

use crate::body::ClientBody;
use crate::client_io::{ClientIo, ClientRead, ClientWrite, Halves};
use crate::h1::{
    FieldAt, MAX_HEADERS, content_length, header_map, parse_length, poll_fill, with_fields,
};
use crate::spare;
use crate::tls::Replay;

/// What the first read of a request head asks of the socket: most heads are
/// smaller (nginx's default header buffer is the same).
const FIRST_HEAD_READ: usize = 1024;
/// What a read asks of the socket at least after that.
const READ_CHUNK: usize = 4 * 1024;
/// The most a read of a request body asks for at once.
const MAX_BODY_READ: usize = 64 * 1024;
/// Response data up to this size is copied behind the head or chunk framing, so that
/// it leaves in one `write`; larger data is written from where it is.
const COALESCE_BYTES: usize = 16 * 1024;

/// The fields the proxy adds to a request on its way upstream (`X-Forwarded-For`,
/// `X-Forwarded-Proto`, `Forwarded`, and `Host` when the client sent none): its
/// header map is made with room for them.
const FORWARDING_FIELDS: usize = 4;

/// The settings the loop takes from the proxy's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// How long a client may take to send a request head.
    pub(crate) header_timeout: Duration,
    /// The largest request head; a larger one is hyper's to refuse.
    pub(crate) max_head_bytes: usize,
}

/// How a connection's time in the loop ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The connection is over.
    Closed,
    /// The rest of the connection is hyper's: the bytes already read, then the socket.
    HandedOver(Replay<Halves>),
}

/// Serves HTTP/1.1 requests from `stream` with `svc` until the connection ends, the
/// drain begins between two requests, or a request comes that the loop does not
/// take (see the module's documentation).
pub(crate) async fn serve<S, B>(
    stream: ClientIo,
    svc: &mut S,
    settings: Settings,
    draining: &watch::Receiver<bool>,
) -> io::Result<Ended>
where
    S: Service<Request<ClientBody>, Response = Response<B>, Error = std::convert::Infallible>,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let (read, mut write) = stream.split();
    let mut read = Some(read);
    let mut buf = BytesMut::new();
    // The head timer and the drain's waiter live as long as the connection: moving
    // a registered timer's deadline later, and polling a waiter already registered,
    // take no lock, where a new timer and a new waiter for every request would take
    // two each.
    let mut head_timer = std::pin::pin!(tokio::time::sleep(settings.header_timeout));
    let mut drained = draining.clone();
    let mut drain = std::pin::pin!(async move {
        let _ = drained.wait_for(|d| *d).await;
    });
    loop {
        // --- a request head ---
        head_timer
            .as_mut()
            .reset(Instant::now() + settings.header_timeout);
        let head = loop {
            if !buf.is_empty() {
                match take_request(&mut buf) {
                    Taken::Head(head) => break head,
                    Taken::Partial if buf.len() < settings.max_head_bytes => {}
                    Taken::Partial | Taken::NotMine => {
                        let read = read
                            .take()
                            .expect("the loop holds the read half between requests");
                        let halves = tokio::io::join(read, write);
                        return Ok(Ended::HandedOver(Replay::new(buf.freeze(), halves)));
                    }
                }
            }
            let r = read
                .as_mut()
                .expect("the loop holds the read half between requests");
            let idle = buf.is_empty();
            // Whether to stop, and whether with a 408 (a partial head timed out).
            let stop = tokio::select! {
                n = read_some(r, &mut buf, if idle { FIRST_HEAD_READ } else { READ_CHUNK }) => {
                    if n? == 0 {
                        return Ok(Ended::Closed);
                    }
                    None
                }
                () = &mut head_timer => Some(!idle),
                () = &mut drain, if idle => Some(false),
            };
            if let Some(timeout_answer) = stop {
                if timeout_answer {
                    let _ = write.write_all(REQUEST_TIMEOUT).await;
                }
                close_politely(&mut write).await;
                return Ok(Ended::Closed);
            }
        };

        // --- the exchange ---
        let Head {
            parts,
            body_len,
            mut close,
        } = head;
        let head_request = parts.method == Method::HEAD;
        let (body, returned) = if body_len == 0 {
            (ClientBody::Empty, None)
        } else {
            let (tx, rx) = oneshot::channel();
            let state = BodyState {
                read: read
                    .take()
                    .expect("the loop holds the read half between requests"),
                buf: std::mem::take(&mut buf),
            };
            let body = PlainBody {
                state: Some(state),
                remaining: body_len,
                back: Some(tx),
            };
            (ClientBody::Plain { body }, Some(rx))
        };
        let _ = poll_fn(|cx| svc.poll_ready(cx)).await;
        let mut exchange = std::pin::pin!(svc.call(Request::from_parts(parts, body)));
        let rsp = match read.as_mut() {
            // Meanwhile a client that hangs up drops the request (a client abort).
            Some(r) => tokio::select! {
                rsp = &mut exchange => rsp,
                () = watch_for_hang_up(r, &mut buf, settings.max_head_bytes) => return Ok(Ended::Closed),
            },
            // The body reads the socket, and sees the client go.
            None => exchange.await,
        };
        let Ok(rsp) = rsp;
        close |= *draining.borrow();
        let (answered_close, written) = write_response(&mut write, rsp, head_request, close);
        close |= answered_close;
        let whole = written.await?;
        write.flush().await?;
        if !whole || close {
            close_politely(&mut write).await;
            return Ok(Ended::Closed);
        }

        // --- after it ---
        if let Some(mut rx) = returned {
            // A body read to its end has given the socket back; one left unread
            // leaves the connection at an unknown point of the stream.
            match rx.try_recv() {
                Ok(BodyState { read: r, buf: b }) => {
                    read = Some(r);
                    buf = b;
                }
                Err(_) => return Ok(Ended::Closed),
            }
        }
        if buf.is_empty() {
            // Between requests a connection holds no buffer: the next read takes
            // this one or another from the thread's store.
            spare::keep(&spare::CLIENT, std::mem::take(&mut buf));
        }
    }
}

/// A 408 for a client too slow with its head.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Ends the connection's sending side (over TLS with a `close_notify` first), so
/// that the client sees an orderly end of the stream.
async fn close_politely(write: &mut ClientWrite) {
    let _ = write.shutdown().await;
}

/// Reads what the socket has into `buf`, at least `want` bytes of room. Through
/// `AsyncRead`: a read that fills less than its room marks the socket drained, so
/// the next one waits for the reactor instead of failing with "would block".
async fn read_some(read: &mut ClientRead, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
    spare::room(&spare::CLIENT, buf, want);
    read.read_buf(buf).await
}

/// Returns once the client has closed its side (or the socket failed). Bytes that
/// arrive meanwhile (a pipelined request) are kept in `buf`, up to `limit`. Read
/// through a small array: a request in flight holds no read buffer for this.
async fn watch_for_hang_up(read: &mut ClientRead, buf: &mut BytesMut, limit: usize) {
    let mut scratch = [0u8; 128];
    loop {
        if buf.len() >= limit {
            // The next request is in; the client's leaving will show when it is read.
            return std::future::pending().await;
        }
        match read.read(&mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&scratch[..n]),
        }
    }
}

/// Whether one `Connection` field's value has the token `close`.
fn says_close(value: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

// === the request head ===

/// A request head the loop takes.
#[derive(Debug)]
struct Head {
    parts: http::request::Parts,
    /// The body's length (0: none).
    body_len: u64,
    /// The client asked to close after this request.
    close: bool,
}

#[derive(Debug)]
enum Taken {
    Head(Head),
    /// Not all of the head is in yet.
    Partial,
    /// A request for hyper's server (the module's documentation says which).
    NotMine,
}

/// Takes a request head off the front of `buf` if it is whole and one the loop
/// serves; leaves `buf` as it was otherwise.
fn take_request(buf: &mut BytesMut) -> Taken {
    with_fields(|at| take_request_into(buf, at))
}

/// [`take_request`], with the places of the fields noted in `at`: as the client's
/// parser does, offsets while the parser borrows `buf`, values that share the
/// head's memory once it is split off.
fn take_request_into(buf: &mut BytesMut, at: &mut Vec<FieldAt>) -> Taken {
    let (len, method, target, body_len, close) = {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Taken::Partial,
            Err(_) => return Taken::NotMine,
        };
        let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
            return Taken::NotMine;
        };
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Taken::NotMine;
        };
        if method == Method::CONNECT || u32::try_from(len).is_err() {
            return Taken::NotMine;
        }
        let mut body_len = None;
        let mut close = false;
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"connection") {
                close |= says_close(h.value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                match (body_len, parse_length(h.value)) {
                    (None, Some(n)) => body_len = Some(n),
                    _ => return Taken::NotMine,
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"expect")
                || name.eq_ignore_ascii_case(b"upgrade")
            {
                return Taken::NotMine;
            }
            at.push(FieldAt::of(buf, h));
        }
        let start = path.as_ptr() as usize - buf.as_ptr() as usize;
        let target = start..start + path.len();
        (len, method, target, body_len.unwrap_or(0), close)
    };

    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target)).ok();
    match (uri, header_map(&head, at, FORWARDING_FIELDS)) {
        (Some(uri), Ok(headers)) => {
            let (mut parts, ()) = Request::new(()).into_parts();
            parts.method = method;
            parts.uri = uri;
            parts.version = Version::HTTP_11;
            parts.headers = headers;
            Taken::Head(Head {
                parts,
                body_len,
                close,
            })
        }
        _ => {
            // What hyper refuses in its own words: give the head back for it.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Taken::NotMine
        }
    }
}

// === the request body ===

/// What a request body borrows from its connection, and gives back.
#[derive(Debug)]
struct BodyState {
    read: ClientRead,
    buf: BytesMut,
}

/// A request body of known length, read from the client's connection.
///
/// It holds the connection's read side and the bytes already read; it hands them
/// back to the connection the moment its last byte is read, or when dropped before
/// that (the connection then cannot serve another request).
#[derive(Debug)]
pub struct PlainBody {
    state: Option<BodyState>,
    remaining: u64,
    back: Option<oneshot::Sender<BodyState>>,
}

// === impl PlainBody ===

impl PlainBody {
    fn give_back(&mut self) {
        if let (Some(state), Some(back)) = (self.state.take(), self.back.take()) {
            let _ = back.send(state);
        }
    }
}

impl Drop for PlainBody {
    fn drop(&mut self) {
        if self.remaining > 0 {
            // Unread: the connection must not read on from an unknown point.
            self.back = None;
        }
        self.give_back();
    }
}

impl Body for PlainBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            this.give_back();
            return Poll::Ready(None);
        }
        let Some(state) = this.state.as_mut() else {
            return Poll::Ready(None);
        };
        if state.buf.is_empty() {
            let want = usize::try_from(this.remaining)
                .unwrap_or(usize::MAX)
                .clamp(READ_CHUNK, MAX_BODY_READ);
            state.buf.reserve(want);
            match std::task::ready!(poll_fill(&mut state.read, &mut state.buf, cx)) {
                Ok(0) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection before the body's end",
                    ))));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
        let n = usize::try_from(this.remaining)
            .unwrap_or(usize::MAX)
            .min(state.buf.len());
        let data = state.buf.split_to(n).freeze();
        this.remaining -= n as u64;
        if this.remaining == 0 {
            this.give_back();
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

// === the response ===

/// How a response's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Writes `rsp` to the client; when the connection is to `close` after it, the head
/// says `Connection: close`. Gives whether the response itself said so, and the
/// write, which ends in `Ok(false)` when the body broke off (the connection must
/// then close, as the client cannot know where the response ended).
///
/// The head is encoded before the future is made: the future holds the body and
/// the bytes to send, not the response's parts besides them (it lives in every
/// connection's task, and was over 1.1 KiB when it kept both).
fn write_response<'w, B>(
    write: &'w mut ClientWrite,
    rsp: Response<B>,
    head_request: bool,
    close: bool,
) -> (bool, impl Future<Output = io::Result<bool>> + 'w)
where
    B: Body<Data = Bytes> + 'w,
    B::Error: std::fmt::Display,
{
    let (parts, body) = rsp.into_parts();
    let mut out = Vec::with_capacity(256);
    let head = encode_head(&parts, &body, head_request, close, &mut out);
    spare::keep_map(parts.headers);
    (head.close, write_encoded(write, out, head.framing, body))
}

/// Sends `out` (an encoded head) and then `body` framed as `framing`.
async fn write_encoded<B>(
    write: &mut ClientWrite,
    mut out: Vec<u8>,
    framing: Framing,
    body: B,
) -> io::Result<bool>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    if framing == Framing::None {
        write.write_all(&out).await?;
        return Ok(true);
    }
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut body = std::pin::pin!(body);
    loop {
        // Take what the body has at once: a small response is in with its head.
        let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    write.write_all(&out).await?;
                    out.clear();
                }
                // What is written reaches the client while the body waits.
                write.flush().await?;
                poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "the response body broke off");
                if !out.is_empty() {
                    write.write_all(&out).await?;
                }
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    if framing == Framing::Chunked {
                        let _ = write!(out, "{:x}\r\n", data.len());
                    } else {
                        let n = data.len() as u64;
                        if n > left {
                            tracing::debug!("the response body is longer than its Content-Length");
                            write.write_all(&out).await?;
                            return Ok(false);
                        }
                        left -= n;
                    }
                    if data.len() <= COALESCE_BYTES {
                        out.put_slice(&data);
                    } else {
                        write.write_all(&out).await?;
                        out.clear();
                        write.write_all(&data).await?;
                    }
                    if framing == Framing::Chunked {
                        out.put_slice(b"\r\n");
                    }
                    if out.len() > COALESCE_BYTES {
                        write.write_all(&out).await?;
                        out.clear();
                    }
                }
                Err(frame) => {
                    if let (Framing::Chunked, Ok(trailers)) = (framing, frame.into_trailers()) {
                        out.put_slice(b"0\r\n");
                        write_fields(&trailers, &mut out);
                        out.put_slice(b"\r\n");
                        write.write_all(&out).await?;
                        return Ok(true);
                    }
                }
            },
        }
    }
    let whole = match framing {
        Framing::Chunked => {
            out.put_slice(b"0\r\n\r\n");
            true
        }
        _ => left == 0,
    };
    if !out.is_empty() {
        write.write_all(&out).await?;
    }
    Ok(whole)
}

/// Writes the status line and header fields of a response, with the framing and
/// `Date` fields it needs and `Connection: close` if the connection is to `close`
/// and the response does not say so already.
fn encode_head<B: Body>(
    parts: &http::response::Parts,
    body: &B,
    head_request: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> EncodedHead {
    let status = parts.status;
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    let fields = write_fields(&parts.headers, out);
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = match (fields.lengths, fields.length) {
        (0, _) => None,
        (1, Some(n)) => Some(n),
        // A list, or several fields: they must agree.
        _ => content_length(&parts.headers).ok(),
    };
    let framing = if no_body {
        Framing::None
    } else if let Some(n) = declared {
        Framing::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        let _ = write!(out, "content-length: {n}\r\n");
        Framing::Length(n)
    } else {
        out.put_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    if !fields.date {
        out.put_slice(b"date: ");
        DATE.with_borrow_mut(|d| out.put_slice(d.now()));
        out.put_slice(b"\r\n");
    }
    if close && !fields.close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    EncodedHead {
        framing: match framing {
            Framing::Length(0) => Framing::None,
            other => other,
        },
        close: fields.close,
    }
}

/// A response head as [`encode_head`] wrote it.
struct EncodedHead {
    /// How its body is framed.
    framing: Framing,
    /// Whether the response said `Connection: close`.
    close: bool,
}

/// What [`write_fields`] saw of the fields the rest of a response head depends on
/// (its framing, `Date`, `Connection: close`), noted as they go by instead of
/// looked up by hash afterwards.
#[derive(Default)]
struct Fields {
    /// A `Date` field is among them.
    date: bool,
    /// A `Connection` field has the token `close`.
    close: bool,
    /// How many `Content-Length` fields there are.
    lengths: u32,
    /// The last `Content-Length` field's value, when it is a plain number.
    length: Option<u64>,
}

fn write_fields(headers: &HeaderMap, out: &mut Vec<u8>) -> Fields {
    let mut fields = Fields::default();
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            fields.lengths += 1;
            fields.length = parse_length(value.as_bytes());
        } else if name == header::DATE {
            fields.date = true;
        } else if name == header::CONNECTION {
            fields.close |= says_close(value.as_bytes());
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    fields
}

thread_local! {
    /// Each worker's `Date` value, formatted once a second.
    static DATE: std::cell::RefCell<CachedDate> = const {
        std::cell::RefCell::new(CachedDate { second: u64::MAX, text: [0; 29] })
    };
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) and the second it names.
#[derive(Debug)]
struct CachedDate {
    second: u64,
    text: [u8; 29],
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == self.text.len() {
                self.text.copy_from_slice(text.as_bytes());
                self.second = second;
            }
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{HeaderName, HeaderValue};
    use http_body_util::{BodyExt, Full, StreamBody};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

    const SETTINGS: Settings = Settings {
        header_timeout: Duration::from_secs(5),
        max_head_bytes: 8 * 1024,
    };

    /// Answers `METHOD /path: <body read>`; `/stream` answers in two chunks with a
    /// trailer, `/unread` without reading the body, `/slow` after 30 s, `/bye` with
    /// fields of its own: a listed `Content-Length`, a `Date` and `Connection: close`.
    async fn answer(req: Request<ClientBody>) -> Result<Response<TestBody>, Infallible> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        if path == "/bye" {
            let mut rsp = Response::new(Full::new(Bytes::from_static(b"bye")).boxed_unsync());
            for (name, value) in [
                ("content-length", "3, 3"),
                ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("connection", "keep-alive, close"),
            ] {
                rsp.headers_mut()
                    .insert(name, HeaderValue::from_static(value));
            }
            return Ok(rsp);
        }
        if path == "/stream" {
            let frames = vec![
                Ok(Frame::data(Bytes::from_static(b"one,"))),
                Ok(Frame::data(Bytes::from_static(b"two"))),
                Ok(Frame::trailers(HeaderMap::from_iter([(
                    HeaderName::from_static("x-sum"),
                    HeaderValue::from_static("2"),
                )]))),
            ];
            return Ok(Response::new(
                StreamBody::new(futures::stream::iter(frames)).boxed_unsync(),
            ));
        }
        if path == "/slow" {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        let read = if path == "/unread" {
            "-".to_owned()
        } else {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let text = format!("{} {}: {read}", parts.method, path);
        Ok(Response::new(Full::new(Bytes::from(text)).boxed_unsync()))
    }

    /// A listener whose first connection `serve` serves; returns its address, how
    /// the loop ended, and the drain's sender.
    async fn start() -> (
        std::net::SocketAddr,
        tokio::task::JoinHandle<io::Result<Ended>>,
        watch::Sender<bool>,
    ) {
        start_with(SETTINGS).await
    }

    async fn start_with(
        settings: Settings,
    ) -> (
        std::net::SocketAddr,
        tokio::task::JoinHandle<io::Result<Ended>>,
        watch::Sender<bool>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (drain, draining) = watch::channel(false);
        let ended = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut svc = tower::service_fn(answer);
            serve(ClientIo::Tcp(stream), &mut svc, settings, &draining).await
        });
        (addr, ended, drain)
    }

    /// A client connection to `addr` that has sent `bytes`.
    async fn sent(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s
    }

    async fn read_to_end(s: &mut (impl AsyncRead + Unpin)) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .expect("the connection closes")
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The response heads and bodies in `wire`, without the `date` lines.
    fn without_dates(wire: &str) -> String {
        wire.split("\r\n")
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_on_one_connection() {
        let (addr, ended, _drain) = start().await;
        let mut s = sent(
            addr,
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
              HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        let wire = read_to_end(&mut s).await;
        assert_eq!(wire.matches("\r\ndate: ").count(), 4, "{wire}");
        assert_eq!(
            without_dates(&wire),
            "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nGET /a: \
             HTTP/1.1 200 OK\r\ncontent-length: 14\r\n\r\nPOST /b: hello\
             HTTP/1.1 200 OK\r\n\r\n\
             HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
             4\r\none,\r\n3\r\ntwo\r\n0\r\nx-sum: 2\r\n\r\n"
        );
        assert!(matches!(ended.await.unwrap(), Ok(Ended::Closed)));
    }

    #[tokio::test]
    async fn a_response_that_says_close_ends_the_connection_with_its_own_fields() {
        let (addr, ended, _drain) = start().await;
        let mut s = sent(
            addr,
            b"GET /bye HTTP/1.1\r\nHost: x\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        // Its fields as they were, none added, and nothing after it: the pipelined
        // request is not answered.
        assert_eq!(
            read_to_end(&mut s).await,
            "HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\
             date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             connection: keep-alive, close\r\n\r\nbye"
        );
        assert!(matches!(ended.await.unwrap(), Ok(Ended::Closed)));
    }

    #[tokio::test]
    async fn a_body_arriving_in_pieces_is_read_whole_and_the_connection_goes_on() {
        let (addr, _ended, _drain) = start().await;
        let mut s = sent(addr, b"PUT /p HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(b"456789GET /q HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let wire = without_dates(&read_to_end(&mut s).await);
        assert!(wire.contains("PUT /p: 0123456789"), "{wire}");
        assert!(wire.ends_with("GET /q: "), "{wire}");
    }

    #[tokio::test]
    async fn an_unread_body_closes_the_connection_after_the_response() {
        let (addr, ended, _drain) = start().await;
        let mut s = sent(
            addr,
            b"POST /unread HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        )
        .await;
        let wire = without_dates(&read_to_end(&mut s).await);
        assert_eq!(
            wire,
            "HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\nPOST /unread: -"
        );
        assert!(matches!(ended.await.unwrap(), Ok(Ended::Closed)));
    }

    #[tokio::test]
    async fn requests_the_loop_does_not_take_are_handed_over_with_their_bytes() {
        for request in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\n\r\n",
            b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad header\r\n\r\n",
        ] {
            let (addr, ended, _drain) = start().await;
            let mut s = sent(addr, b"GET /first HTTP/1.1\r\n\r\n").await;
            s.write_all(request).await.unwrap();
            let Ok(Ended::HandedOver(mut io)) = ended.await.unwrap() else {
                panic!("{:?} was not handed over", String::from_utf8_lossy(request));
            };
            let mut rest = vec![0u8; request.len()];
            io.read_exact(&mut rest).await.unwrap();
            assert_eq!(rest, request);
            let mut first = vec![0u8; 256];
            let n = s.read(&mut first).await.unwrap();
            assert!(
                first[..n].ends_with(b"GET /first: "),
                "the request before {:?} was answered: {:?}",
                String::from_utf8_lossy(request),
                String::from_utf8_lossy(&first[..n])
            );
        }
    }

    #[tokio::test]
    async fn an_oversized_head_is_handed_over_for_refusal() {
        let (addr, ended, _drain) = start().await;
        let head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "v".repeat(9 * 1024));
        let _s = sent(addr, head.as_bytes()).await;
        assert!(matches!(ended.await.unwrap(), Ok(Ended::HandedOver(_))));
    }

    #[tokio::test]
    async fn a_slow_head_gets_a_408_and_an_idle_connection_is_closed() {
        let quick = Settings {
            header_timeout: Duration::from_millis(200),
            ..SETTINGS
        };
        let (addr, ended, _drain) = start_with(quick).await;
        let mut s = sent(addr, b"GET / HT").await;
        let wire = read_to_end(&mut s).await;
        assert!(
            wire.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{wire}"
        );
        assert!(matches!(ended.await.unwrap(), Ok(Ended::Closed)));

        let (addr, ended, _drain) = start_with(quick).await;
        let mut s = sent(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        let mut first = [0u8; 256];
        let _ = s.read(&mut first).await.unwrap();
        // Idle past the header timeout: closed without a word.
        let wire = read_to_end(&mut s).await;
        assert_eq!(wire, "");
        assert!(matches!(ended.await.unwrap(), Ok(Ended::Closed)));
    }

    #[tokio::test]
    async fn the_drain_closes_an_idle_connection_and_a_busy_one_after_its_response() {
        let (addr, ended, drain) = start().await;
        let mut s = sent(addr, b"GET /a HTTP/1.1\r\n\r\n").await;
        let mut first = [0u8; 256];
        let _ = s.read(&mut first).await.unwrap();
        drain.send_replace(true);
        assert_eq!(read_to_end(&mut s).await, "");
        assert!(matches!(ended.await.unwrap(), Ok(Ended::Closed)));

        let (addr, _ended, drain) = start().await;
        let mut s = sent(addr, b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nh").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        drain.send_replace(true);
        s.write_all(b"i").await.unwrap();
        let wire = without_dates(&read_to_end(&mut s).await);
        assert_eq!(
            wire,
            "HTTP/1.1 200 OK\r\ncontent-length: 11\r\nconnection: close\r\n\r\nPOST /b: hi"
        );
    }

    #[tokio::test]
    async fn a_client_hanging_up_drops_its_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let ended = tokio::spawn({
            let dropped = dropped.clone();
            async move {
                let (stream, _) = listener.accept().await.unwrap();
                let (_drain, draining) = watch::channel(false);
                let mut svc = tower::service_fn(move |req: Request<ClientBody>| {
                    struct Count(Arc<AtomicUsize>);
                    impl Drop for Count {
                        fn drop(&mut self) {
                            self.0.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    let guard = Count(dropped.clone());
                    async move {
                        let rsp = answer(req).await;
                        std::mem::forget(guard);
                        rsp
                    }
                });
                serve(ClientIo::Tcp(stream), &mut svc, SETTINGS, &draining).await
            }
        });
        let s = sent(addr, b"GET /slow HTTP/1.1\r\n\r\n").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(s);
        let end = tokio::time::timeout(Duration::from_secs(5), ended).await;
        assert!(matches!(end.unwrap().unwrap(), Ok(Ended::Closed)));
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "the request was dropped");
    }

    /// A TLS listener with a certificate of a fresh private CA, whose first
    /// connection `serve` serves after its handshake; returns its address, how the
    /// loop ended, and a client's connection to it that trusts the CA.
    async fn start_tls() -> (
        tokio::task::JoinHandle<io::Result<Ended>>,
        impl AsyncRead + AsyncWrite + Unpin,
    ) {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

        let dir = fledge_providers::testing::process::temp_dir("h1-tls").unwrap();
        let pki = fledge_providers::testing::pki::TestPki::new(dir.path());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_file_iter(&pki.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&pki.key).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let ended = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let tls = acceptor.accept(stream).await.unwrap();
            let (_drain, draining) = watch::channel(false);
            let mut svc = tower::service_fn(answer);
            let io = ClientIo::Tls(Box::new(tls));
            serve(io, &mut svc, SETTINGS, &draining).await
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .unwrap();
        drop(dir);
        (ended, conn)
    }

    /// Writes `bytes` and flushes them (over TLS, out of the session's buffer).
    async fn send(s: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) {
        s.write_all(bytes).await.unwrap();
        s.flush().await.unwrap();
    }

    #[tokio::test]
    async fn over_tls_requests_and_bodies_are_served_and_the_close_is_orderly() {
        let (ended, mut s) = start_tls().await;
        let first =
            "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPUT /p HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123";
        send(&mut s, first.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(
            &mut s,
            b"456789GET /stream HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        // A TLS client reads to its end only after the server's close_notify.
        let wire = without_dates(&read_to_end(&mut s).await);
        assert_eq!(
            wire,
            "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nGET /a: \
             HTTP/1.1 200 OK\r\ncontent-length: 18\r\n\r\nPUT /p: 0123456789\
             HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
             4\r\none,\r\n3\r\ntwo\r\n0\r\nx-sum: 2\r\n\r\n"
        );
        assert!(matches!(ended.await.unwrap(), Ok(Ended::Closed)));
    }

    #[tokio::test]
    async fn over_tls_a_request_the_loop_does_not_take_is_handed_over_with_the_session() {
        let (ended, mut s) = start_tls().await;
        send(&mut s, b"GET /first HTTP/1.1\r\n\r\nGET / HTTP/1.0\r\n\r\n").await;
        let Ok(Ended::HandedOver(mut io)) = ended.await.unwrap() else {
            panic!("HTTP/1.0 was not handed over");
        };
        let mut rest = vec![0u8; b"GET / HTTP/1.0\r\n\r\n".len()];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, b"GET / HTTP/1.0\r\n\r\n");
        // The session goes on whole: what the new owner writes reaches the client.
        send(&mut io, b"over").await;
        let mut got = Vec::new();
        while !got.ends_with(b"over") {
            let mut chunk = [0u8; 256];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        let got = without_dates(&String::from_utf8(got).unwrap());
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nGET /first: over"
        );
    }

    #[test]
    fn heads_are_taken_whole_and_only_when_served_here() {
        let mut buf = BytesMut::from(
            &b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\nrest"[..],
        );
        let Taken::Head(head) = take_request(&mut buf) else {
            panic!("not taken");
        };
        assert_eq!(head.parts.uri, "/a?b=c");
        assert_eq!(head.parts.headers["host"], "x");
        assert!(head.close);
        assert_eq!(head.body_len, 0);
        assert_eq!(&buf[..], b"rest");

        let mut part = BytesMut::from(&b"GET / HTTP/1.1\r\nHost:"[..]);
        assert!(matches!(take_request(&mut part), Taken::Partial));
        let mut bad_length = BytesMut::from(&b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"[..]);
        assert!(matches!(take_request(&mut bad_length), Taken::NotMine));
        assert_eq!(
            bad_length.len(),
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n".len(),
            "left as it was"
        );
        assert_eq!(parse_length(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_length(b"18446744073709551616"), None);
        assert_eq!(parse_length(b""), None);
    }
}
