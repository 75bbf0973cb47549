//! Body wrappers: both directions stream frame by frame, never buffered whole
//! (only a body copied for the canary is kept, up to its limit).
//!
//! [`RequestBody`] enforces the body size limit and tags every failure of the
//! client's side with [`ClientBodyError`], so that when the upstream call fails
//! because of it, the failure is blamed on the client and not on the version.
//! [`UpstreamBody`] is what goes upstream: the client's body, the client's body
//! copied on its way through a [`Tap`] (for a copy of the request to the canary),
//! or such a copy.
//! [`ResponseBody`] either relays the upstream's body (counting an upstream that cuts
//! it off as an error of that version) or carries a short response made by the proxy.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

use crate::stats::{DropReason, ErrorKind, VersionStats};

/// The boxed error type bodies surface to hyper.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A failure on the client's side of a request body.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// The body grew past `limits.max_request_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Reading the body from the client failed (it hung up or sent bad framing).
    #[error("reading the request body from the client failed: {0}")]
    Read(#[source] BoxError),
}

pin_project! {
    /// The client's request body on its way upstream.
    #[derive(Debug)]
    pub struct RequestBody<B = ClientBody> {
        #[pin]
        inner: B,
        limit: Option<u64>,
        seen: u64,
    }
}

// === impl RequestBody ===

impl<B> RequestBody<B> {
    /// Wraps `inner`, failing once more than `limit` bytes have been read.
    pub fn new(inner: B, limit: Option<u64>) -> Self {
        Self {
            inner,
            limit,
            seen: 0,
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.project();
        match std::task::ready!(this.inner.poll_frame(cx)) {
            None => Poll::Ready(None),
            Some(Err(e)) => Poll::Ready(Some(Err(ClientBodyError::Read(e.into())))),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    if let Some(limit) = *this.limit
                        && *this.seen > limit
                    {
                        return Poll::Ready(Some(Err(ClientBodyError::TooLarge { limit })));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === ClientBody ===

pin_project! {
    /// A request body as the client's connection delivers it: read by hyper's
    /// server (TLS, HTTP/2, and whatever the own HTTP/1.1 loop hands over), read by
    /// that loop from a plain connection, or none.
    #[project = ClientBodyProj]
    #[derive(Debug)]
    pub enum ClientBody {
        /// Read by hyper's server.
        Hyper {
            #[pin]
            body: hyper::body::Incoming,
        },
        /// Read by fledge's own HTTP/1.1 server side.
        Plain {
            #[pin]
            body: crate::h1_server::PlainBody,
        },
        /// No body.
        Empty,
    }
}

impl From<hyper::body::Incoming> for ClientBody {
    fn from(body: hyper::body::Incoming) -> Self {
        ClientBody::Hyper { body }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ClientBodyProj::Hyper { body } => body.poll_frame(cx).map_err(Into::into),
            ClientBodyProj::Plain { body } => body.poll_frame(cx).map_err(Into::into),
            ClientBodyProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper { body } => body.is_end_stream(),
            ClientBody::Plain { body } => body.is_end_stream(),
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper { body } => body.size_hint(),
            ClientBody::Plain { body } => body.size_hint(),
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}

// === UpstreamBody ===

pin_project! {
    /// What the proxy sends upstream.
    #[project = UpstreamBodyProj]
    #[derive(Debug)]
    pub(crate) enum UpstreamBody<B = ClientBody> {
        /// The client's body.
        Client {
            #[pin]
            body: RequestBody<B>,
        },
        /// The client's body, copied through `tap` as it streams.
        Tapped {
            #[pin]
            body: RequestBody<B>,
            tap: Tap,
        },
        /// A copy of a client's body, whole.
        Copy {
            data: Full<Bytes>,
        },
    }
}

impl<B> UpstreamBody<B> {
    /// The client's body, as it comes.
    pub(crate) fn client(body: RequestBody<B>) -> Self {
        UpstreamBody::Client { body }
    }

    /// A copy of a body.
    pub(crate) fn copy(data: Bytes) -> Self {
        UpstreamBody::Copy {
            data: Full::new(data),
        }
    }

    /// The client's body copied through `tap`; a copy cannot be tapped.
    pub(crate) fn tapped(self, tap: Tap) -> Self {
        match self {
            UpstreamBody::Client { body } | UpstreamBody::Tapped { body, .. } => {
                UpstreamBody::Tapped { body, tap }
            }
            copy @ UpstreamBody::Copy { .. } => copy,
        }
    }
}

impl<B> Body for UpstreamBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.project() {
            UpstreamBodyProj::Client { body } => body.poll_frame(cx),
            UpstreamBodyProj::Tapped { mut body, tap } => {
                let frame = std::task::ready!(body.as_mut().poll_frame(cx));
                match &frame {
                    Some(Ok(f)) => {
                        if let Some(data) = f.data_ref() {
                            tap.push(data);
                        }
                        if body.is_end_stream() {
                            tap.finish(Ok(()));
                        }
                    }
                    None => tap.finish(Ok(())),
                    // The tap, dropped with the body, reports it incomplete.
                    Some(Err(_)) => {}
                }
                Poll::Ready(frame)
            }
            UpstreamBodyProj::Copy { data } => poll_whole(data, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client { body } | UpstreamBody::Tapped { body, .. } => {
                body.is_end_stream()
            }
            UpstreamBody::Copy { data } => data.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client { body } | UpstreamBody::Tapped { body, .. } => body.size_hint(),
            UpstreamBody::Copy { data } => data.size_hint(),
        }
    }
}

/// Polls a body held whole in memory, which cannot fail, as a body of error `E`.
fn poll_whole<E>(
    data: &mut Full<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, E>>> {
    Pin::new(data)
        .poll_frame(cx)
        .map_err(|never| match never {})
}

// === Tap ===

/// What a [`Tap`] hands over at the end of its body: the whole body, or why there is
/// none to copy.
pub(crate) type TapDone = Box<dyn FnOnce(Result<Bytes, DropReason>) + Send>;

/// Keeps the chunks of a body on its way upstream, up to a limit, and hands the
/// whole body to `done` once the body has ended. A body over the limit, or one
/// dropped before its end, is reported instead. The chunks are shared, not copied.
pub(crate) struct Tap {
    done: Option<TapDone>,
    chunks: Vec<Bytes>,
    len: u64,
    limit: u64,
}

// === impl Tap ===

impl Tap {
    /// A tap keeping at most `limit` bytes.
    pub(crate) fn new(limit: u64, done: TapDone) -> Self {
        Self {
            done: Some(done),
            chunks: Vec::new(),
            len: 0,
            limit,
        }
    }

    fn push(&mut self, data: &Bytes) {
        if self.done.is_none() {
            return;
        }
        self.len += data.len() as u64;
        if self.len > self.limit {
            self.finish(Err(DropReason::BodyTooLarge));
        } else {
            self.chunks.push(data.clone());
        }
    }

    /// Hands over the body (`Ok`) or the reason there is none, once.
    fn finish(&mut self, result: Result<(), DropReason>) {
        let Some(done) = self.done.take() else {
            return;
        };
        let chunks = std::mem::take(&mut self.chunks);
        done(result.map(|()| match <[Bytes; 1]>::try_from(chunks) {
            Ok([one]) => one,
            Err(chunks) => chunks.concat().into(),
        }));
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.finish(Err(DropReason::BodyIncomplete));
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("len", &self.len)
            .field("limit", &self.limit)
            .field("pending", &self.done.is_some())
            .finish()
    }
}

// === ResponseBody ===

pin_project! {
    /// The body the proxy sends back to the client.
    #[project = ResponseBodyProj]
    #[derive(Debug)]
    pub enum ResponseBody<B> {
        /// The upstream's body, relayed as it arrives.
        Upstream {
            #[pin]
            body: B,
            // Set while a failure of this body still has to be counted.
            stats: Option<Arc<VersionStats>>,
        },
        /// A short body made by the proxy (an error page).
        Local {
            data: Full<Bytes>,
        },
    }
}

// === impl ResponseBody ===

impl<B> ResponseBody<B> {
    /// The upstream's body; a failure while relaying it counts against `stats`.
    pub(crate) fn upstream(body: B, stats: Option<Arc<VersionStats>>) -> Self {
        ResponseBody::Upstream { body, stats }
    }

    /// A body made by the proxy.
    pub(crate) fn local(text: &'static str) -> Self {
        ResponseBody::Local {
            data: Full::new(Bytes::from_static(text.as_bytes())),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ResponseBodyProj::Upstream { body, stats } => {
                match std::task::ready!(body.poll_frame(cx)) {
                    Some(Err(e)) => {
                        if let Some(stats) = stats.take() {
                            stats.record_late_error(ErrorKind::Reset);
                        }
                        Poll::Ready(Some(Err(e.into())))
                    }
                    other => Poll::Ready(other.map(|r| r.map_err(Into::into))),
                }
            }
            ResponseBodyProj::Local { data } => poll_whole(data, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
            ResponseBody::Local { data } => data.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body, .. } => body.size_hint(),
            ResponseBody::Local { data } => data.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn chunks(n: usize, size: usize) -> impl Body<Data = Bytes, Error = BoxError> {
        let frames =
            (0..n).map(move |_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; size]))));
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn request_body_is_cut_off_past_the_limit() {
        let ok = RequestBody::new(chunks(4, 10), Some(40))
            .collect()
            .await
            .unwrap();
        assert_eq!(ok.to_bytes().len(), 40);
        let err = RequestBody::new(chunks(5, 10), Some(40))
            .collect()
            .await
            .unwrap_err();
        assert!(matches!(err, ClientBodyError::TooLarge { limit: 40 }));
    }

    /// A tap over `n` chunks of `size` bytes with `limit`, and what it handed over.
    fn tapped(
        n: usize,
        size: usize,
        limit: u64,
    ) -> (
        UpstreamBody<impl Body<Data = Bytes, Error = BoxError>>,
        std::sync::mpsc::Receiver<Result<Bytes, DropReason>>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        let tap = Tap::new(
            limit,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let body = UpstreamBody::client(RequestBody::new(chunks(n, size), None)).tapped(tap);
        (body, rx)
    }

    #[tokio::test]
    async fn a_tap_copies_the_whole_body_without_changing_it() {
        let (body, copied) = tapped(3, 10, 30);
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 30);
        assert_eq!(copied.try_recv().unwrap().unwrap(), vec![b'x'; 30]);
        assert!(copied.try_recv().is_err(), "handed over once");
    }

    #[tokio::test]
    async fn a_tap_reports_a_body_over_its_limit_or_not_read_to_its_end() {
        let (body, copied) = tapped(4, 10, 30);
        // The body itself still goes through whole.
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 40);
        assert_eq!(copied.try_recv().unwrap(), Err(DropReason::BodyTooLarge));

        let (mut body, copied) = tapped(4, 10, 100);
        let first = body.frame().await;
        assert!(first.is_some());
        assert!(copied.try_recv().is_err(), "nothing before the end");
        drop(body);
        assert_eq!(copied.try_recv().unwrap(), Err(DropReason::BodyIncomplete));
    }

    #[tokio::test]
    async fn a_copy_is_sent_with_its_exact_length() {
        let copy: UpstreamBody<http_body_util::Empty<Bytes>> =
            UpstreamBody::copy(Bytes::from_static(b"hello"));
        assert_eq!(copy.size_hint().exact(), Some(5));
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "hello");
        let empty: UpstreamBody<http_body_util::Empty<Bytes>> = UpstreamBody::copy(Bytes::new());
        assert!(empty.is_end_stream());
    }

    #[tokio::test]
    async fn upstream_body_failure_counts_once() {
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err::<Frame<Bytes>, BoxError>("reset".into()),
        ];
        let stats = Arc::new(VersionStats::default());
        let body = ResponseBody::upstream(
            StreamBody::new(futures::stream::iter(frames)),
            Some(stats.clone()),
        );
        assert!(body.collect().await.is_err());
        assert_eq!(stats.errors_of(ErrorKind::Reset), 1);
    }
}
