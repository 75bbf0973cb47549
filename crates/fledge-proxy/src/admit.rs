//! [`Admit`]: the outermost service. Refuses what the proxy will not forward before
//! any routing or counting happens, and puts the size limit on the request body.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use pin_project_lite::pin_project;

use crate::body::{RequestBody, ResponseBody};
use crate::record::local;

tokio::task_local! {
    /// The handover flag of the proxy whose client connection this task serves.
    static CLOSING: Arc<AtomicBool>;
}

/// Serves `conn`, one client connection, with its proxy's handover flag `closing`
/// where [`Admit`] reads it. hyper answers an HTTP/1 request inside its connection's
/// task, so the connection holds the flag once and each response reads it there,
/// instead of every request taking its own clone of it.
pub(crate) fn with_handover_flag<F: Future>(
    closing: Arc<AtomicBool>,
    conn: F,
) -> impl Future<Output = F::Output> {
    CLOSING.scope(closing, conn)
}

/// Whether the proxy serving this task's connection has begun handing its clients
/// over; `false` outside [`with_handover_flag`].
fn handover_started() -> bool {
    CLOSING
        .try_with(|c| c.load(Ordering::Relaxed))
        .unwrap_or(false)
}

/// Rejects CONNECT and bodies declared larger than the limit; wraps the body so a
/// chunked body that grows past the limit is cut off. While the proxy is handing its
/// clients over to another process (the flag [`with_handover_flag`] gives the
/// connection), every HTTP/1 response says `Connection: close`, so a keep-alive
/// client moves over between two requests instead of having an idle connection
/// closed under a request it is sending.
#[derive(Debug, Clone)]
pub(crate) struct Admit<S> {
    inner: S,
    max_body: Option<u64>,
}

// === impl Admit ===

impl<S> Admit<S> {
    pub(crate) fn new(max_body: Option<u64>, inner: S) -> Self {
        Self { inner, max_body }
    }
}

impl<S, B, RB> tower::Service<Request<B>> for Admit<S>
where
    S: tower::Service<
            Request<RequestBody<B>>,
            Response = Response<ResponseBody<RB>>,
            Error = Infallible,
        >,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = Infallible;
    type Future = AdmitFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.method() == Method::CONNECT {
            return AdmitFuture::Refused {
                rsp: Some(local(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "fledge: CONNECT is not proxied\n",
                )),
            };
        }
        if let Some(limit) = self.max_body {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                return AdmitFuture::Refused {
                    rsp: Some(local(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "fledge: request body too large\n",
                    )),
                };
            }
        }
        let max_body = self.max_body;
        AdmitFuture::Inner {
            http1: req.version() < Version::HTTP_2,
            fut: self.inner.call(req.map(|b| RequestBody::new(b, max_body))),
        }
    }
}

pin_project! {
    /// The inner call, or a refusal ready at once.
    #[project = AdmitProj]
    #[derive(Debug)]
    pub(crate) enum AdmitFuture<F, RB> {
        Inner { #[pin] fut: F, http1: bool },
        Refused { rsp: Option<Response<ResponseBody<RB>>> },
    }
}

impl<F, RB> Future for AdmitFuture<F, RB>
where
    F: Future<Output = Result<Response<ResponseBody<RB>>, Infallible>>,
{
    type Output = Result<Response<ResponseBody<RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmitProj::Inner { fut, http1 } => match fut.poll(cx) {
                Poll::Ready(Ok(mut rsp)) => {
                    // A 101's connection is the tunnel's: it is not closed here.
                    if *http1
                        && rsp.status() != StatusCode::SWITCHING_PROTOCOLS
                        && handover_started()
                    {
                        rsp.headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    Poll::Ready(Ok(rsp))
                }
                other => other,
            },
            AdmitProj::Refused { rsp } => Poll::Ready(Ok(rsp
                .take()
                .unwrap_or_else(|| local(StatusCode::INTERNAL_SERVER_ERROR, "")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use tower::{Service, ServiceExt};

    type Inner = tower::util::ServiceFn<
        fn(
            Request<RequestBody<Empty<bytes::Bytes>>>,
        )
            -> std::future::Ready<Result<Response<ResponseBody<Empty<bytes::Bytes>>>, Infallible>>,
    >;

    fn ok(
        _: Request<RequestBody<Empty<bytes::Bytes>>>,
    ) -> std::future::Ready<Result<Response<ResponseBody<Empty<bytes::Bytes>>>, Infallible>> {
        std::future::ready(Ok(Response::new(ResponseBody::upstream(
            Empty::new(),
            None,
        ))))
    }

    fn admit() -> Admit<Inner> {
        Admit::new(Some(100), tower::service_fn(ok as _))
    }

    async fn status(req: Request<Empty<bytes::Bytes>>) -> StatusCode {
        admit()
            .ready()
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn refuses_connect_and_declared_oversized_bodies() {
        let connect = Request::builder()
            .method(Method::CONNECT)
            .uri("example.com:443")
            .body(Empty::new())
            .unwrap();
        assert_eq!(status(connect).await, StatusCode::METHOD_NOT_ALLOWED);
        // The limit is 100 bytes.
        for (length, expected) in [
            ("101", StatusCode::PAYLOAD_TOO_LARGE),
            ("100", StatusCode::OK),
        ] {
            let post = Request::builder()
                .method(Method::POST)
                .header("content-length", length)
                .body(Empty::new())
                .unwrap();
            assert_eq!(status(post).await, expected, "content-length {length}");
        }
    }

    fn switching(
        _: Request<RequestBody<Empty<bytes::Bytes>>>,
    ) -> std::future::Ready<Result<Response<ResponseBody<Empty<bytes::Bytes>>>, Infallible>> {
        let mut rsp = Response::new(ResponseBody::upstream(Empty::new(), None));
        *rsp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        std::future::ready(Ok(rsp))
    }

    /// The `Connection` header of `admit`'s answer to an HTTP `version` request, on
    /// a connection whose proxy starts its handover (or not, per `handover`) while
    /// the request is in flight.
    async fn connection_header(
        mut admit: Admit<Inner>,
        version: Version,
        handover: bool,
    ) -> Option<HeaderValue> {
        let flag = Arc::new(AtomicBool::new(false));
        let start = flag.clone();
        with_handover_flag(flag, async move {
            let req = Request::builder()
                .version(version)
                .body(Empty::new())
                .unwrap();
            let rsp = admit.ready().await.unwrap().call(req);
            start.store(handover, Ordering::Relaxed);
            rsp.await
                .unwrap()
                .headers()
                .get(header::CONNECTION)
                .cloned()
        })
        .await
    }

    #[tokio::test]
    async fn after_a_handover_starts_http1_responses_close_their_connection() {
        let close = Some(HeaderValue::from_static("close"));
        for version in [Version::HTTP_10, Version::HTTP_11] {
            assert_eq!(connection_header(admit(), version, true).await, close);
            assert_eq!(connection_header(admit(), version, false).await, None);
        }
        // HTTP/2 has no `Connection`; an upgrade's connection is the tunnel's.
        assert_eq!(
            connection_header(admit(), Version::HTTP_2, true).await,
            None
        );
        let upgrade = Admit::new(None, tower::service_fn(switching as _));
        assert_eq!(
            connection_header(upgrade, Version::HTTP_11, true).await,
            None
        );
    }
}
