//! The proxy's own HTTP/1.1 client side, for endpoints spoken to in plain HTTP/1.1
//! (the default). A connection is a socket and one read buffer, nothing more: the
//! request is written and its response read by the task that serves the client's
//! connection, and the response body is read from the socket as the client's side
//! asks for it. No task per upstream connection, no channel between the two, no
//! buffer beyond the one read buffer, which an idle connection gives back.
//!
//! What it speaks (RFC 9112): the request head as `rewrite_request` made it, with
//! the client's body framed by its `Content-Length`, or chunked when its length is
//! not known; a response framed by `Transfer-Encoding: chunked`, `Content-Length`,
//! or the end of the connection, with none for `HEAD`, `204` and `304`; interim `1xx`
//! responses skipped. A connection is kept for another request only when both
//! sides said keep-alive and the body was read to its exact end. Upgrades do not
//! come here (they take a connection of their own, see the `upgrade` module).

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::{ClientBodyError, UpstreamBody};
use crate::forward::ForwardError;
use crate::spare;

/// The most a response head may take; a larger one fails the exchange.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields a response head may have.
pub(crate) const MAX_HEADERS: usize = 100;
/// What a read asks room for, at the least.
const READ_CHUNK: usize = 4 * 1024;
/// What a read of a long body asks room for, at the most.
const MAX_READ_CHUNK: usize = 64 * 1024;
/// The longest chunk-size line or trailer section accepted.
const MAX_LINE_BYTES: usize = 4 * 1024;
/// A body chunk up to this size is copied into the write with its framing (one
/// write); a larger one is written on its own.
const COALESCE_BYTES: usize = 8 * 1024;

/// An HTTP/1.1 connection to an endpoint.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

/// Why an exchange ended without a response.
#[derive(Debug)]
pub(crate) enum Failed {
    /// Nothing was written: the connection was found closed. The request comes back
    /// to be sent on another connection.
    NotSent(Box<Request<UpstreamBody>>),
    /// The request was (at least partly) sent, or cannot be.
    Error(ForwardError),
}

/// A response head, with what reads its body from the connection.
#[derive(Debug)]
pub(crate) struct Exchanged {
    pub(crate) head: Response<()>,
    pub(crate) body: Decoder,
    pub(crate) conn: Conn,
}

// === impl Conn ===

impl Conn {
    pub(crate) fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection can carry another request: the endpoint has not
    /// closed it, and has sent nothing unasked. A connection whose last read drained
    /// it and that has had no event since is taken as usable without a system call
    /// (`try_read` asks the reactor first). The reactor may not yet have seen a close
    /// that has just arrived: [`Conn::exchange`] sends again a request that can be.
    pub(crate) fn is_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Readies a connection whose last body was read to its end for the idle list:
    /// `false` if it cannot be kept (the endpoint sent more than it framed).
    pub(crate) fn idle(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        // An idle connection holds no buffer: hundreds of idle connections cost
        // 4 KiB less each. The next exchange takes this one or another from the
        // thread's store.
        spare::keep(&spare::UPSTREAM, std::mem::take(&mut self.buf));
        true
    }

    /// Sends `req` and reads the response's head. `reused` says whether the
    /// connection carried requests before: a write that fails at once on it gives
    /// the request back ([`Failed::NotSent`]), and so does a close before any byte of
    /// an answer when the request can be sent again ([`can_resend`]): the endpoint
    /// closed the idle connection as the request went out, the race every keep-alive
    /// client meets. The request stays boxed, so the exchange's future, which every
    /// request allocates, holds a pointer to it rather than the request itself.
    pub(crate) async fn exchange(
        mut self,
        mut req: Box<Request<UpstreamBody>>,
        reused: bool,
    ) -> Result<Exchanged, Failed> {
        let framing = RequestFraming::of(req.headers(), req.body());
        let mut out = Vec::with_capacity(256);
        encode_head(&req, framing, &mut out);
        if let Err(e) = self.io.write_all(&out).await {
            tracing::debug!(error = %e, "writing to the upstream connection failed");
            return Err(if reused {
                Failed::NotSent(req)
            } else {
                Failed::Error(ForwardError::Reset)
            });
        }
        let head_only = req.method() == Method::HEAD;
        // A request that can be sent again is kept until its answer starts, in case
        // the connection closes before it does; nothing of it is left to write.
        let mut again = None;
        if reused && can_resend(&req) {
            again = Some(req);
        } else {
            spare::keep_map(std::mem::take(req.headers_mut()));
            let body = req.into_body();
            if !matches!(framing, RequestFraming::None) {
                // Boxed: a body is the rarer case, and its future would otherwise size
                // every exchange's.
                Box::pin(self.write_body(body, framing, out))
                    .await
                    .map_err(Failed::Error)?;
            }
        }
        loop {
            let read = self.read_head().await;
            if let Some(mut req) = again.take() {
                if read.is_err() && self.buf.is_empty() {
                    tracing::debug!("a reused upstream connection closed unanswered");
                    return Err(Failed::NotSent(req));
                }
                spare::keep_map(std::mem::take(req.headers_mut()));
            }
            let (head, noted) = read.map_err(Failed::Error)?;
            let status = head.status();
            if status.is_informational() {
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    tracing::debug!("an upstream switched protocols unasked");
                    return Err(Failed::Error(ForwardError::Reset));
                }
                continue;
            }
            let body = Decoder::of(&head, noted, head_only).map_err(|e| {
                tracing::debug!(error = e, "the upstream's response is framed wrongly");
                Failed::Error(ForwardError::Reset)
            })?;
            return Ok(Exchanged {
                head,
                body,
                conn: self,
            });
        }
    }

    async fn write_body(
        &mut self,
        body: UpstreamBody,
        framing: RequestFraming,
        mut out: Vec<u8>,
    ) -> Result<(), ForwardError> {
        let mut body = pin!(body);
        let chunked = matches!(framing, RequestFraming::Chunked);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| match e {
                ClientBodyError::TooLarge { .. } => ForwardError::BodyTooLarge,
                ClientBodyError::Read(_) => ForwardError::ClientAborted,
            })?;
            // Trailers of the client's body are not passed on.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            let written = if !chunked {
                self.io.write_all(&data).await
            } else if data.len() <= COALESCE_BYTES {
                out.clear();
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
                self.io.write_all(&out).await
            } else {
                let size = format!("{:x}\r\n", data.len());
                match self.io.write_all(size.as_bytes()).await {
                    Ok(()) => match self.io.write_all(&data).await {
                        Ok(()) => self.io.write_all(b"\r\n").await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            };
            written.map_err(|e| upstream_failed(&e))?;
        }
        if chunked {
            self.io
                .write_all(b"0\r\n\r\n")
                .await
                .map_err(|e| upstream_failed(&e))?;
        }
        Ok(())
    }

    /// Reads until a whole response head is in the buffer, and takes it.
    async fn read_head(&mut self) -> Result<(Response<()>, Noted), ForwardError> {
        loop {
            if !self.buf.is_empty() {
                match take_head(&mut self.buf) {
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(error = e, "the upstream's response head is malformed");
                        return Err(ForwardError::Reset);
                    }
                }
                if self.buf.len() >= MAX_HEAD_BYTES {
                    tracing::debug!("the upstream's response head is too large");
                    return Err(ForwardError::Reset);
                }
            }
            spare::room(&spare::UPSTREAM, &mut self.buf, READ_CHUNK);
            let n = poll_fn(|cx| poll_fill(&mut self.io, &mut self.buf, cx))
                .await
                .map_err(|e| upstream_failed(&e))?;
            if n == 0 {
                tracing::debug!("the upstream closed the connection before answering");
                return Err(ForwardError::Reset);
            }
        }
    }
}

fn upstream_failed(e: &io::Error) -> ForwardError {
    tracing::debug!(error = %e, "upstream exchange failed");
    ForwardError::Reset
}

/// Whether a request may be sent again on another connection when the one it went
/// out on closes unanswered: it has no body (nothing of it was consumed) and its
/// method is idempotent (RFC 9110, 9.2.2), so a second delivery is harmless.
fn can_resend<B: Body>(req: &Request<B>) -> bool {
    req.body().is_end_stream() && req.method().is_idempotent()
}

/// Reads what the socket has into `buf`'s spare room. Through `AsyncRead`, not
/// `try_read_buf`: a read that fills less than the room it was given marks the
/// socket drained, so the next read waits for the reactor instead of making a
/// `recv` that can only say "would block" (one system call per request fewer).
pub(crate) fn poll_fill<R: tokio::io::AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    pin!(io.read_buf(buf)).poll(cx)
}

// === the request ===

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestFraming {
    /// No body.
    None,
    /// By its length: the client's `Content-Length`, or one added for a body whose
    /// length is known.
    Length { add: Option<u64> },
    /// In chunks.
    Chunked,
}

impl RequestFraming {
    fn of(headers: &HeaderMap, body: &UpstreamBody) -> Self {
        // Most requests have no body: no field to look up (a `Content-Length: 0`
        // goes on as it came).
        if body.is_end_stream() {
            return RequestFraming::None;
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            // The client's side has checked it: the body is that long or fails.
            return RequestFraming::Length { add: None };
        }
        match body.size_hint().exact() {
            Some(n) => RequestFraming::Length { add: Some(n) },
            None => RequestFraming::Chunked,
        }
    }
}

/// Writes the request line and header fields, with the body's framing.
fn encode_head<B>(req: &Request<B>, framing: RequestFraming, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::Length { add: Some(n) } => {
            out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        RequestFraming::Length { add: None } | RequestFraming::None => {}
    }
    out.extend_from_slice(b"\r\n");
}

// === the response head ===

/// Takes a whole response head from the front of `buf`, if there is one, with what
/// it says of its framing. Header values are slices of the head's bytes, not copies.
fn take_head(buf: &mut BytesMut) -> Result<Option<(Response<()>, Noted)>, &'static str> {
    with_fields(|at| take_head_into(buf, at))
}

/// [`take_head`], noting in `at` where each name and value lies in `buf` (see
/// `FieldAt`). The parser's table is left uninitialised, as zeroing it was a
/// measurable part of a small exchange.
fn take_head_into(
    buf: &mut BytesMut,
    at: &mut Vec<FieldAt>,
) -> Result<Option<(Response<()>, Noted)>, &'static str> {
    let mut noted = Noted::default();
    let (len, code, minor) = {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut rsp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut rsp,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err("too many header fields"),
            Err(_) => return Err("not an HTTP/1.x response head"),
        };
        if len > MAX_HEAD_BYTES {
            return Err("the head is too large");
        }
        for h in rsp.headers.iter() {
            at.push(FieldAt::of(buf, h));
            noted.note(h.name, h.value);
        }
        (
            len,
            rsp.code.unwrap_or_default(),
            rsp.version.unwrap_or_default(),
        )
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| "an invalid status code")?;
    let map = header_map(&head, at, 0)?;
    let mut rsp = Response::new(());
    *rsp.status_mut() = status;
    *rsp.version_mut() = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *rsp.headers_mut() = map;
    Ok(Some((rsp, noted)))
}

/// The framing fields of a response head, noted while its fields are read, so that
/// its body's decoder looks none of them up in the header map.
#[derive(Debug, Default, Clone, Copy)]
struct Noted {
    /// Whether a `Connection` field is present.
    connection: bool,
    /// Whether a `Transfer-Encoding` field is present.
    transfer_encoding: bool,
    /// How many `Content-Length` fields there are (up to 255).
    lengths: u8,
    /// The first `Content-Length` field's value, when it is one number.
    length: Option<u64>,
}

impl Noted {
    fn note(&mut self, name: &str, value: &[u8]) {
        let name = name.as_bytes();
        match name.len() {
            10 if name.eq_ignore_ascii_case(b"connection") => self.connection = true,
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                if self.lengths == 0 {
                    self.length = parse_length(value);
                }
                self.lengths = self.lengths.saturating_add(1);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                self.transfer_encoding = true;
            }
            _ => {}
        }
    }
}

// === the response body ===

/// Reads a response body from its connection, by the response's framing.
#[derive(Debug)]
pub(crate) struct Decoder {
    framing: Framing,
    /// Whether both sides said keep-alive.
    keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    /// Chunked, at this point of it.
    Chunked(Chunk),
    /// Up to the end of the connection.
    Close,
    /// Read to its end.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Within a chunk, with this many bytes left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// What the buffer gave.
enum Decoded {
    Data(Bytes),
    End,
    More,
}

// === impl Decoder ===

impl Decoder {
    /// The body `head` announces (`head_only` for the answer to a `HEAD`), by the
    /// framing fields `noted` as it was read.
    fn of(head: &Response<()>, noted: Noted, head_only: bool) -> Result<Self, &'static str> {
        let headers = head.headers();
        let mut keep_alive = head.version() == Version::HTTP_11;
        if noted.connection {
            for token in list(headers, &header::CONNECTION) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive")
                    && head.version() == Version::HTTP_10
                {
                    keep_alive = true;
                }
            }
        }
        let status = head.status();
        let framing = if head_only
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Done
        } else if noted.transfer_encoding {
            let last = list(headers, &header::TRANSFER_ENCODING).last();
            if last.is_some_and(|c| c.eq_ignore_ascii_case("chunked")) {
                Framing::Chunked(Chunk::Size)
            } else {
                keep_alive = false;
                Framing::Close
            }
        } else if noted.lengths > 0 {
            match noted.length {
                Some(n) if noted.lengths == 1 => Framing::Length(n),
                _ => Framing::Length(content_length(headers)?),
            }
        } else {
            keep_alive = false;
            Framing::Close
        };
        let framing = match framing {
            Framing::Length(0) => Framing::Done,
            f => f,
        };
        Ok(Self {
            framing,
            keep_alive,
        })
    }

    /// Whether the body has been read to its end.
    pub(crate) fn is_end(&self) -> bool {
        self.framing == Framing::Done
    }

    /// Whether the connection may carry another request once the body is read.
    pub(crate) fn keeps_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether the response, as given to the client, has a `Content-Length` the
    /// proxy keeps (not with chunked framing, where the field is void).
    pub(crate) fn is_chunked(&self) -> bool {
        matches!(self.framing, Framing::Chunked(_))
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            Framing::Chunked(_) | Framing::Close => SizeHint::default(),
        }
    }

    /// The next frame of the body, read from `conn` as needed.
    pub(crate) fn poll_frame(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            match self.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::More) => {}
                Err(e) => {
                    return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, e))));
                }
            }
            let want = match self.framing {
                Framing::Length(n) => usize::try_from(n).unwrap_or(MAX_READ_CHUNK),
                _ => MAX_READ_CHUNK,
            };
            conn.buf.reserve(want.clamp(READ_CHUNK, MAX_READ_CHUNK));
            let n = std::task::ready!(poll_fill(&mut conn.io, &mut conn.buf, cx));
            match n {
                Ok(0) if self.framing == Framing::Close => {
                    self.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before the body's end",
                    ))));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }

    /// Takes what it can from `buf`.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, &'static str> {
        loop {
            match self.framing {
                Framing::Done => return Ok(Decoded::End),
                Framing::Close => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Framing::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let (data, left) = take_up_to(buf, left);
                    self.framing = if left == 0 {
                        Framing::Done
                    } else {
                        Framing::Length(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let (data, left) = take_up_to(buf, left);
                    self.framing = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Decoded::Data(data));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("a chunk does not end with CRLF");
                    }
                    buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::More);
                    };
                    let size = chunk_size(&line)?;
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::More);
                    };
                    // Trailer fields are not passed on; the empty line ends the body.
                    if line.is_empty() {
                        self.framing = Framing::Done;
                    }
                }
            }
        }
    }
}

/// Up to `left` bytes from the front of `buf` (which is not empty), and what is
/// left after them.
fn take_up_to(buf: &mut BytesMut, left: u64) -> (Bytes, u64) {
    let n = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
    (buf.split_to(n).freeze(), left - n as u64)
}

/// One CRLF-ended line from the front of `buf`, without its CRLF.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, &'static str> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_LINE_BYTES {
            return Err("a chunk line is too long");
        }
        return Ok(None);
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err("a chunk line does not end with CRLF");
    }
    let mut line = buf.split_to(lf + 1);
    line.truncate(lf - 1);
    Ok(Some(line))
}

/// The size of a chunk-size line (hex digits, then optional extensions).
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits..];
    if digits == 0 || digits > 15 {
        return Err("an invalid chunk size");
    }
    let after = rest.iter().find(|b| !matches!(b, b' ' | b'\t'));
    if !matches!(after, None | Some(b';')) {
        return Err("an invalid chunk size");
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| "an invalid chunk size")?;
    u64::from_str_radix(text, 16).map_err(|_| "an invalid chunk size")
}

thread_local! {
    /// Where each field of the head being taken lies: one list per thread, reused.
    /// An array with room for the most fields a head may have would be zeroed for
    /// every head (1.6 KiB, twice a request).
    static FIELDS: std::cell::RefCell<Vec<FieldAt>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `take` with the thread's list of field places, emptied.
pub(crate) fn with_fields<R>(take: impl FnOnce(&mut Vec<FieldAt>) -> R) -> R {
    FIELDS.with(|fields| {
        let mut fields = fields.borrow_mut();
        fields.clear();
        take(&mut fields)
    })
}

/// Where a header field's name and value lie in the buffer its head was parsed
/// from, as offsets (a head is far below 4 GiB): kept while the parser borrows the
/// buffer, turned into zero-copy values once the head is split off it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldAt {
    name: (u32, u32),
    value: (u32, u32),
}

impl FieldAt {
    /// The place of `field`, parsed from `buf`.
    pub(crate) fn of(buf: &[u8], field: &httparse::Header<'_>) -> Self {
        let base = buf.as_ptr() as usize;
        let span = |s: &[u8]| {
            let start = (s.as_ptr() as usize - base) as u32;
            (start, start + s.len() as u32)
        };
        FieldAt {
            name: span(field.name.as_bytes()),
            value: span(field.value),
        }
    }
}

/// The fewest fields a header map is made for: `http` lays out 8 slots for them, as
/// it does for a map that starts empty. A map made for fewer starts smaller and is
/// laid out again as fields are added (three times on the way to four fields).
const MIN_FIELDS: usize = 6;

/// The header fields at `at` in `head` (the bytes they were parsed from, split off
/// whole), their values sharing `head`'s memory, in a map with room for `more`
/// fields besides them (the ones the proxy will add) without growing.
pub(crate) fn header_map(
    head: &Bytes,
    at: &[FieldAt],
    more: usize,
) -> Result<HeaderMap, &'static str> {
    let mut map = spare::header_map((at.len() + more).max(MIN_FIELDS));
    for field in at {
        let range = |(start, end): (u32, u32)| start as usize..end as usize;
        let name = HeaderName::from_bytes(&head[range(field.name)])
            .map_err(|_| "an invalid header name")?;
        let value = HeaderValue::from_maybe_shared(head.slice(range(field.value)))
            .map_err(|_| "an invalid header value")?;
        map.append(name, value);
    }
    Ok(map)
}

/// The tokens of a comma-separated header field, across all its lines.
pub(crate) fn list<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A `Content-Length` value: digits only.
pub(crate) fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// The body's length: every `Content-Length` value must agree.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<u64, &'static str> {
    // Nearly always one field with one number.
    let mut fields = headers.get_all(header::CONTENT_LENGTH).iter();
    if let (Some(only), None) = (fields.next(), fields.next())
        && let Some(n) = parse_length(only.as_bytes())
    {
        return Ok(n);
    }
    let mut length = None;
    for token in list(headers, &header::CONTENT_LENGTH) {
        let n = parse_length(token.as_bytes()).ok_or("an invalid Content-Length")?;
        if length.is_some_and(|l| l != n) {
            return Err("Content-Length values that differ");
        }
        length = Some(n);
    }
    length.ok_or("an empty Content-Length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(text: &str, head_only: bool) -> Result<Decoder, &'static str> {
        let (rsp, noted) = take_head(&mut BytesMut::from(text)).unwrap().unwrap();
        Decoder::of(&rsp, noted, head_only)
    }

    /// Decodes `wire` (fed in pieces of `step` bytes) as the body `head` frames.
    fn decode(head_text: &str, wire: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut d = decoder(head_text, false).unwrap();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            while let Decoded::Data(data) = d.decode(&mut buf).unwrap() {
                out.extend_from_slice(&data);
            }
        }
        (out, d.is_end() && buf.is_empty())
    }

    #[test]
    fn content_length_takes_one_number_or_agreeing_repeats() {
        let of = |fields: &[&str]| {
            let mut headers = HeaderMap::new();
            for f in fields {
                headers.append(header::CONTENT_LENGTH, HeaderValue::from_str(f).unwrap());
            }
            content_length(&headers)
        };
        assert_eq!(of(&["42"]), Ok(42));
        assert_eq!(of(&["5, 5"]), Ok(5));
        assert_eq!(of(&["5", "5"]), Ok(5));
        assert_eq!(of(&["5", "6"]), Err("Content-Length values that differ"));
        assert_eq!(of(&["5, 6"]), Err("Content-Length values that differ"));
        assert_eq!(of(&["+5"]), Err("an invalid Content-Length"));
        assert_eq!(of(&[]), Err("an empty Content-Length"));
    }

    #[test]
    fn a_head_is_taken_whole_with_its_fields() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 201 Created\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3\r\n\r\nabc",
        );
        let rsp = take_head(&mut buf).unwrap().unwrap().0;
        assert_eq!(rsp.status(), 201);
        assert_eq!(rsp.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(&buf[..], b"abc");
        let mut part = BytesMut::from("HTTP/1.1 200 OK\r\nX-A:");
        assert!(take_head(&mut part).unwrap().is_none());
        assert!(take_head(&mut BytesMut::from("SSH-2.0\r\n\r\n")).is_err());
    }

    #[test]
    fn a_head_keeps_to_its_limits_of_fields_and_bytes() {
        let with = |fields: usize, value: &str| {
            let mut text = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..fields {
                text.push_str(&format!("x-{i}: {value}\r\n"));
            }
            text.push_str("\r\nrest");
            BytesMut::from(text.as_str())
        };
        let mut buf = with(MAX_HEADERS, "v");
        let rsp = take_head(&mut buf).unwrap().unwrap().0;
        assert_eq!(rsp.headers().len(), MAX_HEADERS);
        assert_eq!(rsp.headers()["x-99"], "v");
        assert_eq!(&buf[..], b"rest", "the body's first bytes stay");
        assert!(take_head(&mut with(MAX_HEADERS + 1, "v")).is_err());
        let long = "a".repeat(MAX_HEAD_BYTES / 10);
        let mut big = with(9, &long);
        assert_eq!(
            take_head(&mut big).unwrap().unwrap().0.headers()["x-8"],
            long.as_str()
        );
        assert!(take_head(&mut with(11, &long)).is_err(), "over 64 KiB");
    }

    #[test]
    fn bodies_are_framed_by_length_chunks_or_the_end_of_the_connection() {
        let (body, done) = decode("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"hello", 2);
        assert_eq!((body.as_slice(), done), (&b"hello"[..], true));

        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 3, wire.len()] {
            let (body, done) = decode(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                wire,
                step,
            );
            assert_eq!(
                (body.as_slice(), done),
                (&b"hello world"[..], true),
                "step {step}"
            );
        }

        let (body, done) = decode("HTTP/1.1 200 OK\r\n\r\n", b"to the end", 4);
        assert_eq!((body.as_slice(), done), (&b"to the end"[..], false));
    }

    #[test]
    fn keep_alive_follows_both_versions_and_the_framing() {
        let keeps = |text: &str| decoder(text, false).unwrap().keeps_alive();
        assert!(keeps("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keeps(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keeps("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keeps(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(
            !keeps("HTTP/1.1 200 OK\r\n\r\n"),
            "read to the end: not kept"
        );
        let none = decoder(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(none.is_end());
        let head_only = decoder("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).unwrap();
        assert!(head_only.is_end());
    }

    #[test]
    fn framing_fields_are_noted_in_any_case_and_repeats_checked() {
        let (_, noted) = take_head(&mut BytesMut::from(
            "HTTP/1.1 200 OK\r\nCONNECTION: close\r\ncontent-LENGTH: 7\r\nX: 1\r\n\r\n",
        ))
        .unwrap()
        .unwrap();
        assert!(noted.connection && !noted.transfer_encoding);
        assert_eq!((noted.lengths, noted.length), (1, Some(7)));
        let (body, done) = decode("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n", b"ok", 1);
        assert_eq!((body.as_slice(), done), (&b"ok"[..], true));
        let (body, done) = decode(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            b"ok",
            2,
        );
        assert_eq!((body.as_slice(), done), (&b"ok"[..], true));
        assert!(
            !decoder(
                "HTTP/1.1 200 OK\r\nTRANSFER-encoding: chunked\r\n\r\n",
                false
            )
            .unwrap()
            .is_end()
        );
    }

    #[test]
    fn bad_framing_is_refused() {
        let bad = |text: &str| decoder(text, false).is_err();
        assert!(bad(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
        ));
        assert!(bad("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"));
        let mut d = decoder(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(d.decode(&mut BytesMut::from("zz\r\n")).is_err());
        let mut d = decoder(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(
            d.decode(&mut BytesMut::from("2\r\nabXY"))
                .is_ok_and(|r| matches!(r, Decoded::Data(_)))
        );
        assert!(
            d.decode(&mut BytesMut::from("XY")).is_err(),
            "no CRLF after the data"
        );
    }

    #[test]
    fn the_request_head_carries_its_framing() {
        let req = Request::builder()
            .method("POST")
            .uri("/a?b=1")
            .header("host", "shop")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        encode_head(&req, RequestFraming::Chunked, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b=1 HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_head(&req, RequestFraming::Length { add: Some(4) }, &mut out);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("content-length: 4\r\n\r\n")
        );
    }
}
