//! Notifications: telling people what a rollout did (the spec's `notifications:`).
//!
//! Two kinds of [`Notifier`]: a generic JSON webhook (the [`Notice`] as it is) and a
//! Slack incoming webhook (`{"text": ..., "blocks": [...]}`, which Mattermost and
//! Rocket.Chat also accept). Delivery never holds a rollout up: the server hands each
//! notice to a [`Dispatcher`], whose background task sends it with bounded retries and
//! exponential backoff. The dispatcher's queue is bounded; when it is full the oldest
//! waiting notice is dropped, with a log line, so a dead chat endpoint can neither
//! block the controller nor grow memory without bound.
//!
//! Notification URLs carry their credentials (Slack's are secrets), so they are never
//! logged or put into errors: errors name the notification's kind and the URL's host.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fledge_spec::{Notification, NotificationKind, NotifyEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};

use crate::hooks::RolloutInfo;
use crate::router::Backoff;

/// What happened to a rollout, as announced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// The kind of event.
    pub event: NotifyEvent,
    /// The rollout it happened to.
    pub rollout: RolloutInfo,
    /// One line for people, e.g. `error_rate 2.1% > 0.5% (canary 21/1000, stable
    /// 3/4000)`.
    pub message: String,
    /// Who decided: `engine`, or the operator's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The decision's evidence as the engine records it (criterion, values, sample
    /// sizes, thresholds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Value>,
    /// When it happened (RFC 3339).
    pub at: String,
}

impl Notice {
    /// A title such as `shop v2 failed`.
    pub fn title(&self) -> String {
        let what = match self.event {
            NotifyEvent::Started => "started",
            NotifyEvent::StageStarted => "moved to a new stage",
            NotifyEvent::Paused => "paused",
            NotifyEvent::Resumed => "resumed",
            NotifyEvent::Succeeded => "promoted",
            NotifyEvent::Failed => "failed and was rolled back",
            NotifyEvent::Aborted => "aborted and rolled back",
            NotifyEvent::Retried => "retried",
        };
        format!("{} {} {what}", self.rollout.app, self.rollout.version)
    }
}

/// Why a notification could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The endpoint could not be reached.
    #[error("{kind} notification to {host} is unreachable: {reason}")]
    Unreachable {
        /// `webhook` or `slack`.
        kind: &'static str,
        /// The URL's host (the rest may be a secret).
        host: String,
        /// What failed.
        reason: String,
    },
    /// The endpoint answered with an error status.
    #[error("{kind} notification to {host} was refused: HTTP {status}")]
    Refused {
        /// `webhook` or `slack`.
        kind: &'static str,
        /// The URL's host.
        host: String,
        /// The status code.
        status: u16,
    },
}

/// Delivers one notice somewhere.
#[async_trait]
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// Sends `notice` once (the dispatcher retries).
    async fn send(&self, notice: &Notice) -> Result<(), NotifyError>;
}

/// POSTs notices to an HTTP endpoint, as JSON or as a Slack message.
#[derive(Clone)]
pub struct WebhookNotifier {
    kind: NotificationKind,
    url: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("kind", &self.kind)
            .field("host", &host_of(&self.url))
            .finish_non_exhaustive()
    }
}

// === impl WebhookNotifier ===

impl WebhookNotifier {
    /// A notifier for one of the spec's notifications, sending with `client`.
    pub fn new(notification: &Notification, client: reqwest::Client) -> Self {
        WebhookNotifier {
            kind: notification.kind,
            url: notification.url.clone(),
            client,
        }
    }

    fn kind_str(&self) -> &'static str {
        match self.kind {
            NotificationKind::Webhook => "webhook",
            NotificationKind::Slack => "slack",
        }
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn send(&self, notice: &Notice) -> Result<(), NotifyError> {
        let body = match self.kind {
            NotificationKind::Webhook => serde_json::to_value(notice).unwrap_or(Value::Null),
            NotificationKind::Slack => slack_message(notice),
        };
        let resp = self
            .client
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| NotifyError::Unreachable {
                kind: self.kind_str(),
                host: host_of(&self.url),
                reason: crate::metrics::error_chain(&e.without_url()),
            })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(NotifyError::Refused {
                kind: self.kind_str(),
                host: host_of(&self.url),
                status: resp.status().as_u16(),
            })
        }
    }
}

/// A Slack incoming-webhook message: `text` (the fallback for notifications) and
/// Block Kit `blocks` with the summary, the rollout's fields and the evidence.
pub fn slack_message(n: &Notice) -> Value {
    let icon = match n.event {
        NotifyEvent::Succeeded => ":white_check_mark:",
        NotifyEvent::Failed => ":x:",
        NotifyEvent::Aborted => ":octagonal_sign:",
        NotifyEvent::Paused => ":double_vertical_bar:",
        _ => ":arrow_forward:",
    };
    let title = n.title();
    let text = format!("{icon} {title}: {}", n.message);
    let stage = n
        .rollout
        .stage_index
        .map(|s| (s + 1).to_string())
        .unwrap_or_else(|| "-".to_owned());
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*App*\n{}", n.rollout.app)}),
        json!({"type": "mrkdwn", "text": format!("*Version*\n{} (stable {})", n.rollout.version, n.rollout.stable_version)}),
        json!({"type": "mrkdwn", "text": format!("*Phase*\n{}", n.rollout.phase)}),
        json!({"type": "mrkdwn", "text": format!("*Stage / canary*\n{stage} / {}%", n.rollout.canary_weight)}),
    ];
    if let Some(actor) = &n.actor {
        fields.push(json!({"type": "mrkdwn", "text": format!("*By*\n{actor}")}));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&title, 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&format!("{icon} {}", n.message), 3000)}}),
        json!({"type": "section", "fields": fields}),
    ];
    if let Some(evidence) = &n.evidence {
        let pretty = serde_json::to_string_pretty(evidence).unwrap_or_default();
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(&format!("*Evidence*\n```{pretty}```"), 3000)}
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": format!("rollout `{}` · {}", n.rollout.id, n.at)}]
    }));
    json!({"text": text, "blocks": blocks})
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max_chars.saturating_sub(4)).collect();
    if out.matches("```").count() % 2 == 1 {
        out.push_str("```");
    }
    out.push('…');
    out
}

/// The host of a URL, for errors and logs (the path and query may be secrets).
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "(invalid URL)".to_owned())
}

/// Whether `notification` subscribes to `event` (no list means every event).
pub fn wants(notification: &Notification, event: NotifyEvent) -> bool {
    notification.events.is_empty() || notification.events.contains(&event)
}

/// How the dispatcher queues and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatcherSettings {
    /// Notices waiting at most; beyond it the oldest is dropped.
    pub capacity: usize,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Retries per delivery.
    pub backoff: Backoff,
    /// Timeout of one HTTP delivery.
    pub timeout: Duration,
}

impl Default for DispatcherSettings {
    /// 256 waiting, 4 in flight, 5 attempts from 1 s doubling to 30 s, 10 s timeout.
    fn default() -> Self {
        DispatcherSettings {
            capacity: 256,
            concurrency: 4,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(30),
                attempts: 5,
            },
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct Job {
    notifier: Arc<dyn Notifier>,
    notice: Arc<Notice>,
}

#[derive(Debug, Default)]
struct Counters {
    dropped: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<VecDeque<Job>>,
    wake: Notify,
    idle: Notify,
    in_flight: AtomicU64,
    counters: Counters,
    settings: DispatcherSettings,
}

/// Delivery statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchStats {
    /// Notices dropped because the queue was full.
    pub dropped: u64,
    /// Deliveries that succeeded.
    pub delivered: u64,
    /// Deliveries that failed after every retry.
    pub failed: u64,
    /// Deliveries waiting or in flight.
    pub pending: u64,
}

/// Sends notices in the background. Cloning gives another handle to the same queue;
/// the background task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
    client: reqwest::Client,
    _task: Arc<TaskGuard>,
}

#[derive(Debug)]
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// === impl Dispatcher ===

impl Dispatcher {
    /// Starts the background task (needs a tokio runtime).
    pub fn start(settings: DispatcherSettings) -> Result<Dispatcher, reqwest::Error> {
        let client = crate::tls::http_client(settings.timeout)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            idle: Notify::new(),
            in_flight: AtomicU64::new(0),
            counters: Counters::default(),
            settings: DispatcherSettings {
                capacity: settings.capacity.max(1),
                concurrency: settings.concurrency.max(1),
                ..settings
            },
        });
        let task = tokio::spawn(run(shared.clone()));
        Ok(Dispatcher {
            shared,
            client,
            _task: Arc::new(TaskGuard(task)),
        })
    }

    /// Queues `notice` for every one of `notifications` that subscribes to its
    /// event. Never blocks.
    pub fn notify(&self, notifications: &[Notification], notice: Notice) {
        let notice = Arc::new(notice);
        for n in notifications.iter().filter(|n| wants(n, notice.event)) {
            let notifier: Arc<dyn Notifier> =
                Arc::new(WebhookNotifier::new(n, self.client.clone()));
            self.enqueue(notifier, notice.clone());
        }
    }

    /// Queues one delivery. Never blocks: when the queue is full the oldest waiting
    /// delivery is dropped.
    pub fn enqueue(&self, notifier: Arc<dyn Notifier>, notice: Arc<Notice>) {
        let dropped = {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            let dropped = if q.len() >= self.shared.settings.capacity {
                q.pop_front()
            } else {
                None
            };
            q.push_back(Job { notifier, notice });
            dropped
        };
        if let Some(old) = dropped {
            self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                app = %old.notice.rollout.app,
                rollout = %old.notice.rollout.id,
                event = ?old.notice.event,
                capacity = self.shared.settings.capacity,
                "notification queue full: dropped the oldest notice"
            );
        }
        self.shared.wake.notify_one();
    }

    /// Delivery statistics so far.
    pub fn stats(&self) -> DispatchStats {
        let c = &self.shared.counters;
        let waiting = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len() as u64;
        DispatchStats {
            dropped: c.dropped.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            pending: waiting + self.shared.in_flight.load(Ordering::SeqCst),
        }
    }

    /// Waits until nothing is waiting or in flight, or `timeout` passes; returns
    /// whether everything was handled. For shutdown and tests.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.shared.idle.notified();
                if self.stats().pending == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// The background loop: takes jobs in order, at most `concurrency` in flight.
async fn run(shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(shared.settings.concurrency));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let job = loop {
            let wake = shared.wake.notified();
            let next = {
                let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                let job = q.pop_front();
                if job.is_some() {
                    // Counted while the queue is locked, so `pending` never dips to 0
                    // between leaving the queue and starting the delivery.
                    shared.in_flight.fetch_add(1, Ordering::SeqCst);
                }
                job
            };
            match next {
                Some(job) => break job,
                None => wake.await,
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            deliver(&shared, &job).await;
            drop(permit);
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            shared.idle.notify_waiters();
        });
    }
}

async fn deliver(shared: &Shared, job: &Job) {
    let backoff = shared.settings.backoff;
    let attempts = backoff.attempts.max(1);
    for attempt in 1..=attempts {
        match job.notifier.send(&job.notice).await {
            Ok(()) => {
                shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) if attempt == attempts => {
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(app = %job.notice.rollout.app, event = ?job.notice.event, attempts, error = %e, "notification not delivered");
            }
            Err(e) => {
                tracing::debug!(app = %job.notice.rollout.app, attempt, error = %e, "notification failed, retrying");
                tokio::time::sleep(backoff.delay(attempt)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests;
