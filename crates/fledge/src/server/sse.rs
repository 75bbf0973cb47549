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
use serde_json::Value;
use tokio::sync::watch;
use tokio_stream::wrappers::BroadcastStream;

use super::auth::Principal;
use super::error::ApiError;
use super::{Shared, api, view};
use crate::config::Role;

const POLL_EVERY: Duration = Duration::from_millis(500);
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// One message of the live stream.
#[derive(Debug, Clone)]
pub enum LiveMessage {
    /// A rollout changed; its new view.
    Rollout(Value),
    /// A new history entry.
    Event(Value),
    /// A snapshot of every app (the body of `GET /status`).
    Status(Value),
}

impl LiveMessage {
    fn to_sse(&self) -> Event {
        let (name, data) = match self {
            LiveMessage::Rollout(v) => ("rollout", v),
            LiveMessage::Event(v) => ("event", v),
            LiveMessage::Status(v) => ("status", v),
        };
        let event = Event::default().event(name).data(data.to_string());
        match self {
            LiveMessage::Event(v) => match v.get("id").and_then(Value::as_i64) {
                Some(id) => event.id(id.to_string()),
                None => event,
            },
            _ => event,
        }
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
    let first = api::status_json(&shared)
        .await
        .map(LiveMessage::Status)
        .ok();
    let head = futures::stream::iter(first.map(|m| Ok(m.to_sse())));
    let tail = BroadcastStream::new(rx).filter_map(|m| async move {
        // A subscriber that fell behind skips what it missed; the next status
        // snapshot and rollout views bring it up to date.
        m.ok().map(|m| Ok(m.to_sse()))
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
                for id in touched {
                    if let Ok(Some(r)) = shared.store.get_rollout(&id).await {
                        let _ = shared
                            .live
                            .send(LiveMessage::Rollout(view::rollout(&r, None)));
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "live events: cannot read the store"),
        }
        if status_at.elapsed() >= STATUS_EVERY {
            status_at = tokio::time::Instant::now();
            if let Ok(status) = api::status_json(&shared).await {
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
