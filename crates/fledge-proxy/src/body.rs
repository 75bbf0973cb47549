//! Body wrappers: both directions stream frame by frame, never buffered whole.
//!
//! [`RequestBody`] enforces the body size limit and tags every failure of the
//! client's side with [`ClientBodyError`], so that when the upstream call fails
//! because of it, the failure is blamed on the client and not on the version.
//! [`ResponseBody`] either relays the upstream's body (counting an upstream that cuts
//! it off as an error of that version) or carries a short response made by the proxy.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::stats::{ErrorKind, VersionStats};

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
    pub struct RequestBody<B = hyper::body::Incoming> {
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
            data: Option<Bytes>,
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
            data: Some(Bytes::from_static(text.as_bytes())),
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
            ResponseBodyProj::Local { data } => {
                Poll::Ready(data.take().map(|d| Ok(Frame::data(d))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
            ResponseBody::Local { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body, .. } => body.size_hint(),
            ResponseBody::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
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
