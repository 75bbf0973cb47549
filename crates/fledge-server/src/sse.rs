//! Live views: `GET /events` is a server-sent-events stream of `rollout` (a rollout
//! changed: its new view), `event` (a new history entry) and `status` (a snapshot of
//! every app, every two seconds, for live charts).
//!
//! One poller reads new events from the store (woken at once after this server's own
//! writes, and every half second for writes by other processes) and broadcasts them;
//! each subscriber gets its own copy of the broadcast.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::BroadcastStream;

use super::auth::Principal;
use super::error::ApiError;
use super::{Shared, status, view};
use crate::config::Role;

const POLL_EVERY: Duration = Duration::from_millis(500);
const STATUS_EVERY: Duration = Duration::from_secs(2);

pub use fledge_api::status::LiveMessage;

/// The SSE form of a message, as `role` may see it: the actions a rollout or an
/// app allows are the caller's own.
fn to_sse(message: &LiveMessage, role: Role) -> Event {
    let mut message = message.clone();
    match &mut message {
        LiveMessage::Rollout(rollout) if role < Role::Operator => {
            rollout.allowed_actions.clear();
        }
        LiveMessage::Status(s) => status::narrow(s, role),
        _ => {}
    }
    let event = Event::default().event(message.name()).data(message.data());
    match &message {
        LiveMessage::Event(e) => event.id(e.id.to_string()),
        _ => event,
    }
}

/// `GET /events`.
pub async fn stream(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    principal.require(Role::Viewer)?;
    let rx = shared.live.subscribe();
    // The first message is the current status, so a view can draw at once.
    let first = status::status_json(&shared)
        .await
        .map(LiveMessage::Status)
        .ok();
    let role = principal.role;
    let head = futures::stream::iter(first.map(|m| Ok(to_sse(&m, role))));
    let tail = BroadcastStream::new(rx).filter_map(move |m| async move {
        // A subscriber that fell behind skips what it missed; the next status
        // snapshot and rollout views bring it up to date.
        m.ok().map(|m| Ok(to_sse(&m, role)))
    });
    let mut stopping = shared.stopping.clone();
    let until_stop = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    Ok(Sse::new(head.chain(tail).take_until(until_stop)).keep_alive(KeepAlive::default()))
}

/// Broadcasts new store events, the rollouts they belong to, and periodic status.
pub async fn run_poller(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut after = latest_event_id(&shared).await;
    let mut status_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shared.wrote.notified() => {}
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if shared.live.receiver_count() == 0 {
            // Nobody listens: keep the cursor current without building messages.
            after = latest_after(&shared, after).await;
            continue;
        }
        match shared.store.recent_events(after, 500).await {
            Ok(events) => {
                let mut touched = BTreeSet::new();
                for e in &events {
                    after = after.max(e.id);
                    touched.insert(e.rollout_id.clone());
                    let _ = shared.live.send(LiveMessage::Event(view::event(e)));
                }
                let stables = view::Stables::read(&shared).await;
                for id in touched {
                    if let Ok(Some(r)) = shared.store.get_rollout(&id).await {
                        // Each subscriber's stream narrows the actions to its role.
                        let now = shared.clock.now();
                        let view = view::rollout(&r, None, Role::Admin, now, &stables);
                        let _ = shared.live.send(LiveMessage::Rollout(Box::new(view)));
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "live events: cannot read the store"),
        }
        if status_at.elapsed() >= STATUS_EVERY {
            status_at = tokio::time::Instant::now();
            if let Ok(status) = status::status_json(&shared).await {
                let _ = shared.live.send(LiveMessage::Status(status));
            }
        }
    }
}

async fn latest_event_id(shared: &Shared) -> i64 {
    latest_after(shared, 0).await
}

async fn latest_after(shared: &Shared, mut after: i64) -> i64 {
    // Bounded: at most 1000 pages of 500 at start-up.
    for _ in 0..1000 {
        match shared.store.recent_events(after, 500).await {
            Ok(events) if !events.is_empty() => {
                after = events.iter().map(|e| e.id).max().unwrap_or(after);
            }
            _ => break,
        }
    }
    after
}
