//! [`Record`]: counts each routed request against its arm's version and turns
//! forwarding failures into the responses the client sees.
//!
//! What counts (see `stats`): a request answered by the upstream, with an error if
//! its status is 5xx; a request the proxy had to answer 502 (connect failure,
//! reset) or 504 (timeout), always an error. What does not count: a client that hangs
//! up before the answer, or whose body breaks or exceeds the limit. Latency is the
//! time until the response headers are ready.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Response, StatusCode, header};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::body::ResponseBody;
use crate::forward::ForwardError;
use crate::split::Routed;
use crate::stats::{ErrorKind, VersionStats};

/// Counts requests per version and answers forwarding failures.
#[derive(Debug, Clone)]
pub(crate) struct Record<S> {
    inner: S,
}

// === impl Record ===

impl<S> Record<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, RB> tower::Service<Routed<B>> for Record<S>
where
    S: tower::Service<Routed<B>, Response = Response<RB>, Error = ForwardError>,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = Infallible;
    type Future = RecordFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Forward is always ready; a failing readiness would still have to be
        // answered per request, so it is reported when the request is called.
        let _ = std::task::ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, routed: Routed<B>) -> Self::Future {
        RecordFuture {
            stats: Some(routed.arm.stats.clone()),
            start: Instant::now(),
            inner: self.inner.call(routed),
        }
    }
}

pin_project! {
    /// Waits for the upstream's response headers and counts the outcome; dropped
    /// before that (the client left), it counts a client abort.
    #[derive(Debug)]
    pub(crate) struct RecordFuture<F> {
        #[pin]
        inner: F,
        stats: Option<Arc<VersionStats>>,
        start: Instant,
    }

    impl<F> PinnedDrop for RecordFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(stats) = this.project().stats.take() {
                stats.record_client_abort();
            }
        }
    }
}

impl<F, RB> Future for RecordFuture<F>
where
    F: Future<Output = Result<Response<RB>, ForwardError>>,
{
    type Output = Result<Response<ResponseBody<RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let Some(stats) = this.stats.take() else {
            // Polled after completion: nothing left to count.
            return Poll::Ready(Ok(local(StatusCode::INTERNAL_SERVER_ERROR, "")));
        };
        let elapsed = this.start.elapsed();
        let rsp = match result {
            Ok(rsp) => {
                if rsp.status().is_server_error() {
                    stats.record(elapsed, Some(ErrorKind::Upstream5xx));
                    // Already an error: a body cut off later is not a second one.
                    rsp.map(|b| ResponseBody::upstream(b, None))
                } else {
                    stats.record(elapsed, None);
                    rsp.map(|b| ResponseBody::upstream(b, Some(stats)))
                }
            }
            Err(e) => {
                let (status, text) = match e {
                    ForwardError::Connect => {
                        (StatusCode::BAD_GATEWAY, "fledge: upstream unavailable\n")
                    }
                    ForwardError::Tls => (
                        StatusCode::BAD_GATEWAY,
                        "fledge: upstream TLS handshake failed\n",
                    ),
                    ForwardError::Reset => (
                        StatusCode::BAD_GATEWAY,
                        "fledge: upstream connection failed\n",
                    ),
                    ForwardError::Timeout => {
                        (StatusCode::GATEWAY_TIMEOUT, "fledge: upstream timed out\n")
                    }
                    ForwardError::BodyTooLarge => (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "fledge: request body too large\n",
                    ),
                    ForwardError::ClientAborted => {
                        (StatusCode::BAD_REQUEST, "fledge: request body broken off\n")
                    }
                };
                match e.kind() {
                    Some(kind) => stats.record(elapsed, Some(kind)),
                    None => stats.record_client_abort(),
                }
                local(status, text)
            }
        };
        Poll::Ready(Ok(rsp))
    }
}

/// A short plain-text response made by the proxy.
pub(crate) fn local<B>(status: StatusCode, text: &'static str) -> Response<ResponseBody<B>> {
    let mut rsp = Response::new(ResponseBody::local(text));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Arm;
    use crate::table::Side;
    use http::Request;
    use tower::{Service, ServiceExt};
    use tower_test::mock;

    type Mock = mock::Mock<Routed<()>, Response<http_body_util::Empty<bytes::Bytes>>>;

    fn routed(arm: &Arc<Side>) -> Routed<()> {
        Routed {
            arm: arm.clone(),
            req: Request::new(()),
            mirror: None,
        }
    }

    async fn run(
        svc: &mut Record<MapErr>,
        arm: &Arc<Side>,
        handle: &mut mock::Handle<Routed<()>, Response<http_body_util::Empty<bytes::Bytes>>>,
        reply: Result<StatusCode, ForwardError>,
    ) -> StatusCode {
        let fut = svc.ready().await.unwrap().call(routed(arm));
        let respond = async {
            let (_req, send) = handle.next_request().await.unwrap();
            match reply {
                Ok(status) => {
                    let mut rsp = Response::new(http_body_util::Empty::new());
                    *rsp.status_mut() = status;
                    send.send_response(rsp);
                }
                Err(e) => send.send_error(Wrapped(e)),
            }
        };
        let (rsp, ()) = tokio::join!(fut, respond);
        rsp.unwrap().status()
    }

    /// tower-test's mock fails with a boxed error; this recovers the ForwardError.
    #[derive(Debug, Clone)]
    struct MapErr(Mock);
    #[derive(Debug)]
    struct Wrapped(ForwardError);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl std::error::Error for Wrapped {}

    impl Service<Routed<()>> for MapErr {
        type Response = Response<http_body_util::Empty<bytes::Bytes>>;
        type Error = ForwardError;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ForwardError>> + Send>>;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ForwardError>> {
            self.0.poll_ready(cx).map_err(|_| ForwardError::Reset)
        }
        fn call(&mut self, req: Routed<()>) -> Self::Future {
            let fut = self.0.call(req);
            Box::pin(async move {
                fut.await
                    .map_err(|e| e.downcast::<Wrapped>().map_or(ForwardError::Reset, |w| w.0))
            })
        }
    }

    #[tokio::test]
    async fn counts_outcomes_and_answers_failures() {
        let (mock, mut handle) = mock::pair();
        let mut svc = Record::new(MapErr(mock));
        let arm = Side::for_test(Arm::Canary, "127.0.0.1:1");

        assert_eq!(
            run(&mut svc, &arm, &mut handle, Ok(StatusCode::OK)).await,
            StatusCode::OK
        );
        assert_eq!(
            run(
                &mut svc,
                &arm,
                &mut handle,
                Ok(StatusCode::SERVICE_UNAVAILABLE)
            )
            .await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            run(&mut svc, &arm, &mut handle, Err(ForwardError::Connect)).await,
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            run(&mut svc, &arm, &mut handle, Err(ForwardError::Timeout)).await,
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            run(&mut svc, &arm, &mut handle, Err(ForwardError::BodyTooLarge)).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );

        let s = &arm.stats;
        let snap = s.snapshot();
        assert_eq!((snap.requests, snap.errors), (4, 3));
        assert_eq!(s.errors_of(ErrorKind::Upstream5xx), 1);
        assert_eq!(s.errors_of(ErrorKind::Connect), 1);
        assert_eq!(s.errors_of(ErrorKind::Timeout), 1);
        assert_eq!(s.client_aborts(), 1);
    }

    #[tokio::test]
    async fn a_client_that_leaves_is_not_an_error() {
        let (mock, mut handle) = mock::pair();
        let mut svc = Record::new(MapErr(mock));
        let arm = Side::for_test(Arm::Stable, "127.0.0.1:1");
        let fut = svc.ready().await.unwrap().call(routed(&arm));
        let mut fut = Box::pin(fut);
        assert!(futures::poll!(&mut fut).is_pending());
        let _pending = handle.next_request().await.unwrap();
        drop(fut);
        let snap = arm.stats.snapshot();
        assert_eq!((snap.requests, snap.errors), (0, 0));
        assert_eq!(arm.stats.client_aborts(), 1);
    }
}
