//! Copies of live requests for a dark canary ([`Route::mirror`](crate::Route)).
//!
//! `Split` may mark a request it sends to stable for copying: its method is one
//! the route allows, it is no upgrade, and a draw falls under the route's share.
//! The user's request never waits for its copy and never sees it fail:
//!
//! * the client's body streams to stable as usual and is copied on its way (a
//!   [`Tap`], up to the route's body limit); the copy leaves once the body has
//!   ended, on a task of its own;
//! * the canary's answer is read to its end and thrown away, and counted against
//!   the canary version in the canary role exactly as `Record` counts a request it
//!   served (a request; an error on a 5xx, a failed connection or a timeout; its
//!   latency to the response headers), so the judge reads copies and live
//!   requests alike;
//! * copies in flight are bounded per proxy (`Limits::max_mirror_in_flight`): a
//!   copy that finds every slot taken (the canary is slow or down) is dropped and
//!   counted, never queued behind the others. So are a body over the limit and a
//!   body not read to its end.
//!
//! Copies carry `fledge-mirror: 1`, so the canary can tell them from live requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::body::{Tap, UpstreamBody};
use crate::error::ProxyError;
use crate::route::MirrorPolicy;
use crate::split::percent;
use crate::stats::{DropReason, ErrorKind};
use crate::table::Side;

/// The header every copy carries.
pub(crate) const MIRROR_HEADER: HeaderName = HeaderName::from_static("fledge-mirror");

/// The slots for copies in flight that every route of one proxy shares, and how
/// long a copy may wait for its answer's headers.
#[derive(Debug)]
pub(crate) struct MirrorQueue {
    slots: Arc<Semaphore>,
    timeout: Duration,
}

// === impl MirrorQueue ===

impl MirrorQueue {
    /// `capacity` copies in flight at most, each given `timeout`.
    pub(crate) fn new(capacity: usize, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(capacity)),
            timeout,
        })
    }

    #[cfg(test)]
    pub(crate) fn for_test() -> Arc<Self> {
        Self::new(4, Duration::from_secs(1))
    }
}

/// A route's copies, compiled: where they go and which requests qualify.
#[derive(Debug)]
pub(crate) struct Mirror {
    /// The share of stable's requests copied, 0–100.
    percent: u8,
    methods: Vec<Method>,
    max_body: u64,
    /// The canary, whose counters the copies' outcomes go to.
    arm: Arc<Side>,
    queue: Arc<MirrorQueue>,
}

// === impl Mirror ===

impl Mirror {
    /// The copies `policy` asks for to `canary`; `None` when it asks for none.
    pub(crate) fn compile(
        policy: &MirrorPolicy,
        canary: &Arc<Side>,
        queue: &Arc<MirrorQueue>,
    ) -> Result<Option<Arc<Self>>, ProxyError> {
        if policy.percent == 0 {
            return Ok(None);
        }
        let methods = policy
            .methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.as_bytes()).map_err(|_| ProxyError::InvalidRoute {
                    field: "mirror.methods".into(),
                    reason: format!("{m:?} is not an HTTP method"),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Arc::new(Self {
            percent: policy.percent,
            methods,
            max_body: policy.max_body_bytes,
            arm: canary.clone(),
            queue: queue.clone(),
        })))
    }

    /// The share of stable's requests copied, 0–100.
    pub(crate) fn percent(&self) -> u8 {
        self.percent
    }

    /// Whether to copy `req`, which goes to stable, given a uniform `draw`: its
    /// method is allowed, it asks for no upgrade, and the draw is under the share.
    pub(crate) fn wants<B>(&self, req: &Request<B>, draw: u64) -> bool {
        self.methods.contains(req.method())
            && !req.headers().contains_key(header::UPGRADE)
            && percent(draw) < self.percent
    }

    /// Sets up the copy of `req` (already rewritten for its upstream) and gives
    /// back the request to send on: a body-less request is copied at once, one
    /// with a body once the body has streamed through a tap.
    pub(crate) fn copy(self: &Arc<Self>, req: Request<UpstreamBody>) -> Request<UpstreamBody> {
        let mut head = Request::new(());
        *head.method_mut() = req.method().clone();
        *head.uri_mut() = req.uri().clone();
        *head.version_mut() = req.version();
        *head.headers_mut() = req.headers().clone();
        head.headers_mut()
            .insert(MIRROR_HEADER, HeaderValue::from_static("1"));
        if req.body().is_end_stream() {
            self.clone().send(head, Ok(Bytes::new()));
            return req;
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            self.arm
                .stats
                .record_mirror_dropped(DropReason::BodyTooLarge);
            return req;
        }
        let mirror = self.clone();
        let tap = Tap::new(self.max_body, Box::new(move |body| mirror.send(head, body)));
        req.map(|body| body.tapped(tap))
    }

    /// Sends the copy `head` with `body` on a task of its own, if a slot is free;
    /// counts it dropped otherwise (or when there is no body to send).
    fn send(self: Arc<Self>, head: Request<()>, body: Result<Bytes, DropReason>) {
        let stats = &self.arm.stats;
        let body = match body {
            Ok(body) => body,
            Err(reason) => return stats.record_mirror_dropped(reason),
        };
        let Ok(permit) = self.queue.slots.clone().try_acquire_owned() else {
            return stats.record_mirror_dropped(DropReason::QueueFull);
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return stats.record_mirror_dropped(DropReason::QueueFull);
        };
        stats.record_mirrored();
        let req = head.map(|()| UpstreamBody::copy(body));
        runtime.spawn(self.exchange(req, permit));
    }

    /// Sends one copy and counts its outcome as the canary's; holds its slot until
    /// the answer has been read to its end.
    async fn exchange(self: Arc<Self>, req: Request<UpstreamBody>, _slot: OwnedSemaphorePermit) {
        let pool = self.arm.next_endpoint().clone();
        let start = Instant::now();
        let send = pool.dispatch(req);
        let stats = &self.arm.stats;
        let rsp = match tokio::time::timeout(self.queue.timeout, send).await {
            Ok(Ok(rsp)) => rsp,
            Ok(Err(e)) => {
                if let Some(kind) = e.kind() {
                    stats.record(start.elapsed(), Some(kind));
                }
                return;
            }
            Err(_) => return stats.record(start.elapsed(), Some(ErrorKind::Timeout)),
        };
        let error = rsp
            .status()
            .is_server_error()
            .then_some(ErrorKind::Upstream5xx);
        stats.record(start.elapsed(), error);
        // Read to the end, so the connection goes back to the pool; a body cut off
        // by the canary is its failure, as it would be for a live request.
        let mut body = rsp.into_body();
        let drain = async {
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok::<_, crate::body::BoxError>(())
        };
        let drained = tokio::time::timeout(self.queue.timeout, drain).await;
        if error.is_none() && !matches!(drained, Ok(Ok(()))) {
            stats.record_late_error(ErrorKind::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Arm;

    fn mirror(percent: u8, methods: &[&str], max_body: u64) -> Arc<Mirror> {
        let policy = MirrorPolicy {
            percent,
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            max_body_bytes: max_body,
        };
        let arm = Side::for_test(Arm::Canary, "127.0.0.1:1");
        Mirror::compile(&policy, &arm, &MirrorQueue::for_test())
            .unwrap()
            .unwrap()
    }

    fn request(method: &str) -> Request<()> {
        Request::builder().method(method).body(()).unwrap()
    }

    #[test]
    fn only_allowed_methods_and_no_upgrades_under_the_share() {
        let m = mirror(100, &["GET", "PUT"], 10);
        assert!(m.wants(&request("GET"), u64::MAX));
        assert!(m.wants(&request("PUT"), 0));
        assert!(!m.wants(&request("POST"), 0));
        let ws = Request::builder()
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(!m.wants(&ws, 0));
        let half = mirror(50, &["GET"], 10);
        assert!(half.wants(&request("GET"), 0));
        assert!(!half.wants(&request("GET"), u64::MAX));
        let policy = MirrorPolicy {
            percent: 0,
            methods: vec!["GET".into()],
            max_body_bytes: 0,
        };
        let arm = Side::for_test(Arm::Canary, "127.0.0.1:1");
        assert!(
            Mirror::compile(&policy, &arm, &MirrorQueue::for_test())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_declared_body_over_the_limit_is_not_copied() {
        let m = mirror(100, &["PUT"], 10);
        let req = Request::builder()
            .method("PUT")
            .header("content-length", "11")
            .body(UpstreamBody::copy(Bytes::from_static(b"01234567890")))
            .unwrap();
        let out = m.copy(req);
        assert!(matches!(out.body(), UpstreamBody::Copy { .. }));
        assert_eq!(m.arm.stats.mirror_dropped(DropReason::BodyTooLarge), 1);
        assert_eq!(m.arm.stats.mirrored(), 0);
    }

    #[test]
    fn a_copy_without_a_free_slot_is_dropped() {
        let m = mirror(100, &["GET"], 10);
        let taken = m.queue.slots.clone().try_acquire_many_owned(4).unwrap();
        m.clone().send(request("GET"), Ok(Bytes::new()));
        assert_eq!(m.arm.stats.mirror_dropped(DropReason::QueueFull), 1);
        drop(taken);
    }
}
