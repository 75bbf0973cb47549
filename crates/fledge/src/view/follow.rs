//! Following a rollout until it ends: `get --watch` and `apply --wait`.
//!
//! The live view follows the server-sent events of `GET /events` and refetches the
//! rollout whenever something happens (and every tick, for the stage's progress bar
//! and in case the stream is unavailable), then redraws in place on a terminal or
//! prints a new block when something changed on a pipe.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use fledge_api::rollout::Rollout;
use fledge_api::status::LiveMessage;
use futures::StreamExt;

use super::output::OutputFormat;
use super::render;
use fledge_api::client::{ApiClient, ClientError};
use tokio::time::Instant;

/// Where the live view goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Standard output (`get --watch`).
    Stdout,
    /// Standard error, so that stdout stays clean for `-o json` (`apply --wait`).
    Stderr,
}

/// Redraws a block of text in place on a terminal, or prints it again when it
/// changed on a pipe.
#[derive(Debug)]
pub struct LiveView {
    target: Target,
    tty: bool,
    lines_drawn: usize,
    last: String,
}

// === impl LiveView ===

impl LiveView {
    /// A live view on `target`.
    pub fn new(target: Target) -> Self {
        let tty = match target {
            Target::Stdout => std::io::stdout().is_terminal(),
            Target::Stderr => std::io::stderr().is_terminal(),
        };
        Self {
            target,
            tty,
            lines_drawn: 0,
            last: String::new(),
        }
    }

    /// Whether the view redraws in place.
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// Shows `text`. On a pipe, `key` decides whether anything changed that is worth
    /// a new block (so a ticking progress bar does not flood a CI log).
    pub fn show(&mut self, text: &str, key: &str) {
        let mut buf = String::new();
        if self.tty {
            if text == self.last {
                return;
            }
            if self.lines_drawn > 0 {
                // Up to the first line of the previous block, and clear to the end.
                buf.push_str(&format!("\x1b[{}F\x1b[J", self.lines_drawn));
            }
            buf.push_str(text);
            self.lines_drawn = text.lines().count();
            self.last = text.to_string();
        } else {
            if key == self.last {
                return;
            }
            buf.push_str(text);
            buf.push('\n');
            self.last = key.to_string();
        }
        let _ = match self.target {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf.as_bytes()).and_then(|_| out.flush())
            }
            Target::Stderr => {
                let mut out = std::io::stderr().lock();
                out.write_all(buf.as_bytes()).and_then(|_| out.flush())
            }
        };
    }
}

/// What, on a pipe, makes a new block worth printing: the state and each criterion's
/// status, not the ticking values.
pub fn change_key(r: &Rollout) -> String {
    let mut key = format!(
        "{}|{}|{}",
        r.phase.as_str(),
        render::stage_label(r),
        render::weight_label(r)
    );
    if let Some(a) = &r.analysis {
        for c in &a.criteria {
            key.push('|');
            key.push_str(&c.status.to_string());
        }
    }
    key
}

/// How a follow ended, with the rollout as the follow saw it (the API's view, or
/// a CanaryRollout's).
#[derive(Debug)]
pub enum Followed<R = Rollout> {
    /// The rollout reached the condition (or ended); its state then.
    Reached(R),
    /// The deadline passed first; the last state seen, if any was.
    TimedOut(Option<R>),
}

/// Follows a rollout until it ends, showing the live view (table format only), and
/// returns its final state. Transient errors are retried without end.
pub async fn follow(
    client: &ApiClient,
    id: &str,
    format: OutputFormat,
    target: Target,
) -> anyhow::Result<Rollout> {
    match follow_until(client, id, format, target, &Rollout::is_terminal, None).await? {
        Followed::Reached(rollout) => Ok(rollout),
        Followed::TimedOut(_) => unreachable!("a follow without a deadline never times out"),
    }
}

/// Follows a rollout until `reached` holds for it or it ends, or `deadline` passes,
/// showing the live view (table format only).
///
/// A failure that may pass (server down or restarting, 5xx, 429) is retried with
/// backoff until the deadline: one dropped poll must not end a CI wait. Any other
/// error ends the follow.
pub async fn follow_until(
    client: &ApiClient,
    id: &str,
    format: OutputFormat,
    target: Target,
    reached: &dyn Fn(&Rollout) -> bool,
    deadline: Option<Instant>,
) -> Result<Followed, ClientError> {
    let mut view = LiveView::new(target);
    let show = format == OutputFormat::Table;
    // The event stream only says "something changed"; the rollout itself is always
    // refetched (its stage clock is the server's), and a missing stream just means
    // polling.
    let mut events = within(deadline, client.live())
        .await
        .and_then(Result::ok)
        .map(Box::pin);
    let mut tick = tokio::time::interval(Duration::from_millis(if view.is_tty() {
        500
    } else {
        1000
    }));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        let Some(rollout) = fetch(client, id, deadline).await? else {
            return Ok(Followed::TimedOut(last));
        };
        if show {
            view.show(&render::live(&rollout), &change_key(&rollout));
        }
        if reached(&rollout) || rollout.is_terminal() {
            return Ok(Followed::Reached(rollout));
        }
        last = Some(rollout);
        // Wait for a change of a rollout (or its history), or the next tick; the
        // periodic `status` snapshots are not changes of a rollout.
        let next_change = async {
            loop {
                let Some(stream) = events.as_mut() else {
                    tick.tick().await;
                    break;
                };
                tokio::select! {
                    next = stream.next() => match next {
                        Some(Ok(LiveMessage::Status(_))) => continue,
                        Some(Ok(_)) => break,
                        // Stream ended or broke: carry on polling.
                        _ => {
                            events = None;
                            break;
                        }
                    },
                    _ = tick.tick() => break,
                }
            }
        };
        if within(deadline, next_change).await.is_none() {
            return Ok(Followed::TimedOut(last));
        }
    }
}

/// The first and the longest pause between two tries of a failing fetch.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));

/// `GET /rollouts/{id}`, retrying transient failures with exponential backoff;
/// `None` when the deadline passes first.
pub async fn fetch(
    client: &ApiClient,
    id: &str,
    deadline: Option<Instant>,
) -> Result<Option<Rollout>, ClientError> {
    let mut pause = BACKOFF.0;
    loop {
        let err = match within(deadline, client.rollout(id)).await {
            None => return Ok(None),
            Some(Ok(rollout)) => return Ok(Some(rollout)),
            Some(Err(err)) if err.is_transient() => err,
            Some(Err(err)) => return Err(err),
        };
        if deadline.is_some_and(|d| Instant::now() + pause >= d) {
            // No try left before the deadline: that is a timeout, not this error.
            eprintln!("fledge: {err}");
            return Ok(None);
        }
        eprintln!(
            "fledge: {err}; retrying in {}",
            humantime::format_duration(pause)
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(BACKOFF.1);
    }
}

/// Runs `fut` to its end, or until `deadline` passes (`None`).
pub async fn within<F: Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, fut).await.ok(),
        None => Some(fut.await),
    }
}
